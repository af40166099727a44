"""The zygote launcher with real worker processes (pjsua2 Endpoints on 127.0.0.1, no lab): workers are forked by
one zygote, share its pages, report how they ended (signal or exit code), and a dead zygote is replaced by the next
launch while the workers it forked keep running."""

from __future__ import annotations

import os
import signal
import threading
import time

from sipfleet.api.models import AgentSettings
from sipfleet_agent import protocol as p
from sipfleet_agent.supervisor.launch import ZygoteLauncher
from sipfleet_agent.supervisor.workerproc import WorkerProc, describe_exit


def _start(launcher: ZygoteLauncher, wid: int) -> tuple[WorkerProc, threading.Event]:
    hello = threading.Event()

    def on_message(proc, msg):  # noqa: ANN001
        if isinstance(msg, p.Hello):
            hello.set()

    init = p.Init(worker=wid, agent="z", pod=None, settings=AgentSettings(http_port=0).model_dump(mode="json"))
    w = WorkerProc(wid, init, on_message, launcher=launcher)
    w.start()
    return w, hello


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _subreaper(on: bool) -> None:
    """Like PID 1 of a container: orphans are re-parented to this process (PR_SET_CHILD_SUBREAPER)."""
    import ctypes

    assert ctypes.CDLL(None, use_errno=True).prctl(36, 1 if on else 0, 0, 0, 0) == 0


def test_workers_are_forked_by_one_zygote_and_their_ends_are_reported():
    _subreaper(True)
    launcher = ZygoteLauncher()
    workers = []
    try:
        a, ha = _start(launcher, 0)
        b, hb = _start(launcher, 1)
        workers += [a, b]
        assert ha.wait(30) and hb.wait(30)
        zygote = launcher._popen.pid
        assert _ppid(a.pid) == zygote and _ppid(b.pid) == zygote and a.pid != b.pid
        a.kill(signal.SIGKILL)
        assert a.wait(10) == -9
        assert describe_exit(a.poll()) == "killed by signal 9 (SIGKILL)"
        assert b.poll() is None, "the other worker ended too"
        b.send(p.Stop(3))
        assert b.wait(30) == 3
        # the zygote dies: the next launch starts a new one; a worker of the old one keeps running meanwhile
        c, hc = _start(launcher, 2)
        workers.append(c)
        assert hc.wait(30)
        os.kill(zygote, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while launcher._popen.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        d, hd = _start(launcher, 3)
        workers.append(d)
        assert hd.wait(30)
        assert launcher._popen.pid != zygote and _ppid(d.pid) == launcher._popen.pid
        assert c.poll() is None and os.path.exists(f"/proc/{c.pid}"), "a worker died with its zygote"
        assert _ppid(c.pid) == os.getpid()  # the orphan is ours now, as it would be the supervisor's in a pod
        c.send(p.Stop(4))
        assert c.wait(30) == 4, "the orphan's real status, reaped by its new parent"
    finally:
        for w in workers:
            w.kill(signal.SIGKILL)
        launcher.stop()
        _subreaper(False)
