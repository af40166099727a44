"""The zygote: imports pjsua2 and the worker once, then forks every worker on the supervisor's request, so that
the workers share the interpreter's and the libraries' pages (copy-on-write) instead of each loading its own.

Promise: on ``{"spawn": ID, "logLevel": L}`` with one file descriptor attached (SCM_RIGHTS: the worker's end of
its socket to the supervisor) it forks a child that runs :func:`sipfleet_agent.worker.main.serve` on that socket
and answers ``{"spawned": ID, "pid": PID}``; every child that ends is reported as ``{"exited": PID, "returncode":
N}`` (negative: the signal). End of input (the supervisor is gone) ends the zygote; its workers notice on their
own sockets. No file is created anywhere (read-only root filesystems).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import socket
import sys
import threading
import time

from .. import logs
from . import main as worker_main


def _reap(ctl: socket.socket, lock: threading.Lock) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            time.sleep(0.05)
            continue
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        with lock:
            try:
                ctl.sendall(json.dumps({"exited": pid, "returncode": code}).encode() + b"\n")
            except OSError:
                return


def _child(fd: int, log_level: str) -> int:
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    logs.setup(log_level)
    return worker_main.serve(os.dup(fd), fd)


def run(ctl_fd: int) -> int:
    ctl = socket.socket(fileno=ctl_fd)
    lock = threading.Lock()
    gc.collect()
    gc.freeze()  # what was imported stays in shared pages: the collector never touches it in the children
    threading.Thread(target=_reap, args=(ctl, lock), name="reaper", daemon=True).start()
    while True:
        try:
            data, fds, _flags, _addr = socket.recv_fds(ctl, 4096, 1)
        except OSError:
            return 0
        if not data:
            return 0
        req = json.loads(data)
        if not fds:
            continue
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                ctl.close()
                code = _child(fds[0], req.get("logLevel", "INFO"))
            finally:
                os._exit(code)
        os.close(fds[0])
        with lock:
            ctl.sendall(json.dumps({"spawned": req["spawn"], "pid": pid}).encode() + b"\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="sipfleet-agent-zygote")
    ap.add_argument("--fd", type=int, required=True)
    ap.add_argument("--log-level", default="INFO")
    args = ap.parse_args(argv)
    os.dup2(2, 1)  # pjlib prints to fd 1: never onto anything but stderr
    sys.stdout = sys.stderr
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logs.setup(args.log_level)
    return run(args.fd)


if __name__ == "__main__":
    sys.exit(main())
