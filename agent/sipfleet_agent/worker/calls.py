"""Incoming calls of one worker: the registry that keeps every :class:`~sipfleet_agent.worker.pjbind.Call` alive
until DISCONNECTED (a Call collected earlier hangs up with 603), the answer policy and the per-worker call limit.

Promise: a call beyond ``max_calls`` (or while stopping, or for an account being deleted) gets 486; ``reject``
answers with its code, ``ring`` rings, ``answer`` answers after ``answerDelayMs``; a disconnected Call is deleted
on the next loop turn (:meth:`CallRegistry.sweep`), never inside its own callback; every Call is gone before
``libDestroy`` (:meth:`clear`).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import pjsua2 as pj

from .pjbind import Call

LOG = logging.getLogger("sipfleet_agent")


class CallRegistry:
    def __init__(self, *, max_calls: int, metrics: Any, call_later: Callable, stopping: Callable[[], bool],
                 changed: Callable[[], None]):
        self.max_calls = max_calls
        self.metrics = metrics
        self.call_later = call_later
        self.stopping = stopping
        self.changed = changed
        self.calls: dict[int, Call] = {}
        self._graveyard: list[Call] = []

    def __len__(self) -> int:
        return len(self.calls)

    def on_incoming(self, acc: Any, prm: "pj.OnIncomingCallParam") -> None:
        rt = acc.rt
        call = Call(self, acc, prm.callId, rt)
        self.calls[prm.callId] = call
        self.changed()
        op = pj.CallOpParam()
        if len(self.calls) > self.max_calls or rt is None or self.stopping():
            op.statusCode = 486
            call.result = "busy"
            call.hangup(op)
            return
        policy = rt.res.spec.incoming_calls
        if policy.policy == "reject":
            op.statusCode = policy.reject_code
            call.result = "rejected"
            call.hangup(op)
            return
        op.statusCode = 180
        call.answer(op)
        if policy.policy == "answer":
            if policy.answer_delay_ms <= 0:
                self._answer(prm.callId, call)
            else:
                self.call_later(policy.answer_delay_ms / 1000.0, self._answer, prm.callId, call)

    def _answer(self, call_id: int, call: Call) -> None:
        if self.calls.get(call_id) is not call:
            return
        op = pj.CallOpParam()
        op.statusCode = 200
        try:
            call.answer(op)
            call.result = "answered"
            call.answered_at = time.monotonic()
        except pj.Error as e:
            LOG.warning("answer failed: %s", e.info())

    def on_disconnected(self, call: Call, last_code: int) -> None:
        if self.calls.get(call.pj_id) is call:
            del self.calls[call.pj_id]
        result = "cancelled" if call.result == "ringing" else call.result
        self.metrics.calls.labels(result=result).inc()
        self._graveyard.append(call)
        self.changed()

    def on_rejected(self, code: int) -> None:
        self.metrics.calls.labels(result="busy" if code == 486 else f"rejected-{code}").inc()

    def hangup_of(self, rt: Any) -> None:
        for call in list(self.calls.values()):
            if call.rt is rt:
                try:
                    op = pj.CallOpParam()
                    op.statusCode = 503
                    call.hangup(op)
                except pj.Error:
                    pass
        call = None  # noqa: F841 - do not keep the loop variable's Call alive

    def sweep(self) -> None:
        if self._graveyard:
            self._graveyard.clear()

    def clear(self) -> None:
        self.calls.clear()
        self._graveyard.clear()
