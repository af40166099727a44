"""How worker processes come to be: forked by the zygote (default: the workers share the pages of one interpreter
and pjsua2) or each exec'd afresh (``SIPFLEET_AGENT_WORKER_START=exec``). Either way the supervisor gets a PID,
a connected socket to the worker and, later, its return code (negative: the signal that ended it).

Promise: :meth:`ZygoteLauncher.launch` restarts a dead zygote first (workers it forked before keep running and
are still watched through their sockets and PIDs); nothing here imports pjsua2; every process is ended by PID.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time

LOG = logging.getLogger("sipfleet_agent.supervisor")
#: the return code of a worker that ended while no zygote was there to see how
UNKNOWN = -1000


class Handle:
    """A launched worker: its PID and (once known) its return code."""

    def __init__(self, pid: int, popen: subprocess.Popen | None = None):
        self.pid = pid
        self.popen = popen
        self.returncode: int | None = None
        self._gone_since = 0.0
        self._done = threading.Event()

    def set_returncode(self, code: int) -> None:
        self.returncode = code
        self._done.set()

    def poll(self) -> int | None:
        if self.popen is not None:
            return self.popen.poll()
        if self.returncode is None and self._orphan_ended():
            # reaped: the zygote's report is on its way; none comes if that zygote died meanwhile
            now = time.monotonic()
            self._gone_since = self._gone_since or now
            if now - self._gone_since > 2.0:
                self.set_returncode(UNKNOWN)
        return self.returncode

    def _orphan_ended(self) -> bool:
        """Gone, or a zombie. A worker whose zygote died is re-parented, in a container to PID 1, the supervisor:
        then it is reaped here, with its real status."""
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.set_returncode(-os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))
                return False
        except ChildProcessError:
            pass
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
        except (OSError, IndexError):
            return True

    def wait(self, timeout: float) -> int | None:
        if self.popen is not None:
            try:
                return self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                return None
        deadline = time.monotonic() + timeout
        while self.poll() is None and time.monotonic() < deadline:
            self._done.wait(0.05)
        return self.returncode


class ExecLauncher:
    def launch(self, wid: int, log_level: str) -> tuple[Handle, socket.socket]:
        mine, theirs = socket.socketpair()
        try:
            cmd = [sys.executable, "-m", "sipfleet_agent.worker.main", "--fd", str(theirs.fileno()),
                   "--log-level", log_level]
            popen = subprocess.Popen(cmd, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, close_fds=True)
        finally:
            theirs.close()
        return Handle(popen.pid, popen), mine

    def stop(self) -> None:
        return None


class ZygoteLauncher:
    def __init__(self, log_level: str = "INFO", timeout_s: float = 30.0):
        self.log_level = log_level
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._popen: subprocess.Popen | None = None
        self._ctl: socket.socket | None = None
        self._handles: dict[int, Handle] = {}
        self._spawned: dict[int, list] = {}
        self._ids = 0

    def _ensure(self) -> socket.socket:
        if self._popen is not None and self._popen.poll() is None and self._ctl is not None:
            return self._ctl
        if self._popen is not None:
            LOG.warning("zygote (pid %s) ended with %s: starting a new one", self._popen.pid, self._popen.poll())
        mine, theirs = socket.socketpair()
        try:
            self._popen = subprocess.Popen(
                [sys.executable, "-m", "sipfleet_agent.worker.zygote", "--fd", str(theirs.fileno()),
                 "--log-level", self.log_level], pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, close_fds=True)
        finally:
            theirs.close()
        self._ctl = mine
        threading.Thread(target=self._read, args=(mine,), name="zygote-reader", daemon=True).start()
        return mine

    def _read(self, ctl: socket.socket) -> None:
        with ctl.makefile("r", encoding="utf-8") as rd:
            for line in rd:
                doc = json.loads(line)
                if "spawned" in doc:
                    box = self._spawned.get(doc["spawned"])
                    if box is not None:
                        box.append(doc["pid"])
                        box[0].set()
                elif "exited" in doc:
                    h = self._handles.pop(doc["exited"], None)
                    if h is not None:
                        h.set_returncode(int(doc["returncode"]))

    def launch(self, wid: int, log_level: str) -> tuple[Handle, socket.socket]:
        with self._lock:
            ctl = self._ensure()
            self._ids += 1
            rid = self._ids
            box: list = [threading.Event()]
            self._spawned[rid] = box
            mine, theirs = socket.socketpair()
            try:
                socket.send_fds(ctl, [json.dumps({"spawn": rid, "worker": wid, "logLevel": log_level}).encode()],
                                [theirs.fileno()])
            finally:
                theirs.close()
            ok = box[0].wait(self.timeout_s)
            self._spawned.pop(rid, None)
            if not ok:
                mine.close()
                raise RuntimeError(f"zygote did not fork worker {wid} within {self.timeout_s:.0f} s")
            h = Handle(box[1])
            self._handles[h.pid] = h
            return h, mine

    def stop(self) -> None:
        with self._lock:
            if self._ctl is not None:
                self._ctl.close()  # end of input: the zygote exits
                self._ctl = None
            if self._popen is not None:
                try:
                    self._popen.wait(5)
                except subprocess.TimeoutExpired:
                    self._popen.kill()
                    self._popen.wait(5)


def default_launcher(log_level: str = "INFO"):  # noqa: ANN201
    if os.environ.get("SIPFLEET_AGENT_WORKER_START", "zygote") == "exec":
        return ExecLauncher()
    return ZygoteLauncher(log_level)
