"""Requests to workers and their replies, matched by id: ask several workers at once, wait for all within one
deadline, combine. Promise: an id is never reused in one supervisor (applies draw from the same counter); a worker
that cannot be sent to is left out; one that does not answer in time is a TimeoutError naming it, one that answers
with an error a RuntimeError; a reply nobody waits for any more is dropped."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

from .. import protocol as p


class Replies:
    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._waiting: dict[int, tuple[threading.Event, list]] = {}

    def next_id(self) -> int:
        return next(self._ids)

    def ask(self, procs: list, op: str, account: str | None, timeout: float) -> list[tuple[Any, Any]]:
        """Send ``op`` to each of ``procs`` (WorkerProc) and return ``(proc, result)`` for every reply."""
        waits = []
        for proc in procs:
            rid, ev, box = self.next_id(), threading.Event(), []
            with self._lock:
                self._waiting[rid] = (ev, box)
            if proc.send(p.Request(rid, op, account)):
                waits.append((proc, rid, ev, box))
            else:
                with self._lock:
                    self._waiting.pop(rid, None)
        deadline = time.monotonic() + timeout
        results = []
        for proc, rid, ev, box in waits:
            ev.wait(max(0.0, deadline - time.monotonic()))
            with self._lock:
                self._waiting.pop(rid, None)
            if box and box[0].ok:
                results.append((proc, box[0].result))
            elif box:
                raise RuntimeError(f"worker {proc.id}: {box[0].error}")
            else:
                raise TimeoutError(f"worker {proc.id} did not answer {op}")
        return results

    def on_reply(self, msg: p.Reply) -> None:
        with self._lock:
            waiter = self._waiting.get(msg.id)
        if waiter is not None:
            waiter[1].append(msg)
            waiter[0].set()
