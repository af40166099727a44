"""One worker child process as the supervisor sees it: its pipes, PID, heartbeat and how it ended; and the
:class:`Slot`, a worker id with the accounts it should host and its current process.

Promise: :meth:`WorkerProc.start` has a launcher (:mod:`.launch`) start the worker with one socket to it and
nothing else of the supervisor's state; every message the worker writes reaches ``on_message`` (from a reader
thread) with this object; :meth:`send` never raises for a dead worker; :meth:`kill` signals by PID only.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from typing import Any, Callable

from .. import protocol as p
from .backoff import RestartState
from .launch import UNKNOWN, ExecLauncher, Handle
from .plan import WorkerSlot

LOG = logging.getLogger("sipfleet_agent.supervisor")


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "still running"
    if returncode == UNKNOWN:
        return "ended (exit status unknown: the zygote that forked it had ended)"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by signal {-returncode} ({name})"
    return f"exited with code {returncode}"


class WorkerProc:
    def __init__(self, wid: int, init: p.Init, on_message: Callable[["WorkerProc", p.Message], None],
                 clock: Callable[[], float] = time.monotonic, log_level: str = "INFO", launcher: Any = None):
        self.id = wid
        self.init = init
        self.on_message = on_message
        self.clock = clock
        self.log_level = log_level
        self.launcher = launcher or ExecLauncher()
        self.proc: Handle | None = None
        self.started_at = 0.0
        self.last_heartbeat = 0.0
        self.hello: p.Hello | None = None
        self.metrics: list = []
        self.retiring = False  # told to stop: its exit is not a failure
        self.rejected: p.Rejected | None = None  # its last word before it ended itself (set by the reader thread)
        self.last_answer: tuple | None = None  # (account key, clock) of its last breadcrumb (p.Answer)
        self._out = None
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> None:
        self.proc, sock = self.launcher.launch(self.id, self.log_level)
        self.started_at = self.last_heartbeat = self.clock()
        self._sock = sock
        self._out = sock.makefile("w", encoding="utf-8", buffering=1)
        self._reader = threading.Thread(target=self._read, args=(sock.makefile("r", encoding="utf-8"),),
                                        name=f"worker-{self.id}-reader", daemon=True)
        self._reader.start()
        self.send(self.init)

    def _read(self, rd) -> None:  # noqa: ANN001
        with rd:
            for line in rd:
                try:
                    msg = p.decode(line)
                except p.ProtocolError as e:
                    LOG.error("worker %s: bad message: %s", self.id, e)
                    continue
                if isinstance(msg, p.Heartbeat):
                    self.last_heartbeat = self.clock()
                    if msg.metrics:  # most beats carry none (worker.main.METRICS_EVERY)
                        self.metrics = msg.metrics
                elif isinstance(msg, p.Rejected):
                    self.rejected = msg
                elif isinstance(msg, p.Answer):
                    self.last_answer = ((msg.namespace, msg.name), self.clock())
                elif isinstance(msg, p.Hello):
                    self.hello = msg
                    self.last_heartbeat = self.clock()
                try:
                    self.on_message(self, msg)
                except Exception:  # noqa: BLE001
                    LOG.exception("worker %s: handling %s failed", self.id, type(msg).__name__)

    def send(self, msg: p.Message) -> bool:
        line = p.encode(msg)
        with self._lock:
            if self._out is None:
                return False
            try:
                self._out.write(line)
                self._out.flush()
                return True
            except (BrokenPipeError, OSError, ValueError):
                self._close_out()
                return False

    def _close_out(self) -> None:
        out, self._out = self._out, None
        if out is not None:
            try:
                out.close()
                self._sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def close_input(self) -> None:
        with self._lock:
            self._close_out()

    def poll(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def wait(self, timeout: float) -> int | None:
        return self.proc.wait(timeout) if self.proc is not None else None

    def join_reader(self, timeout: float = 2.0) -> None:
        if self._reader is not None:
            self._reader.join(timeout)


class Slot:
    """One worker id: the accounts it should host and its current process (None while backing off)."""

    def __init__(self, slot: WorkerSlot):
        self.plan = slot
        self.proc: WorkerProc | None = None
        self.restart = RestartState()
        self.restart_at: float | None = None
        self.sent: tuple | None = None  # what the last Apply carried
        self.apply_id = 0
        self.applied_id = -1
        self.sip_port = 0  # the last worker's, for its successor
