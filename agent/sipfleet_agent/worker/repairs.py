"""Carrying out repairs and re-registrations on the worker's event loop (the decisions are :mod:`.repair`'s).

Promise: one repair per account at a time (a token that arrives meanwhile is retried shortly, a repair without one
is dropped); a repair re-creates the account and ends ``repaired`` with its first REGISTER via the configured
route, or ``failed`` after ``REPAIR_TIMEOUT_S``; the token is acknowledged in status either way. A re-register is
``setRegistration(False)`` then ``(True)``; self-heal repairs a drifted account at most every few seconds.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pjsua2 as pj

from sipfleet.api.models import RepairRecord

from ..logs import log
from ..status import now_iso
from . import repair
from .eventloop import TaskGen, Wait

LOG = logging.getLogger("sipfleet_agent")


class Repairs:
    def __init__(self, agent: Any):
        self.agent = agent

    def start(self, rt: Any, trigger: str, token: str | None) -> None:
        a = self.agent
        if rt.busy or rt.repair is not None:
            if token:
                a.call_later(0.2, self.start, rt, trigger, token)
            return
        rec = repair.start(trigger, token, rt.status.route.in_sync, rt.status.route.last_drift_at, now_iso())
        rt.repair, rt.repair_t0 = rec, time.monotonic()
        rt.status.add_repair(rec)
        a.metrics.repairs.labels(trigger=trigger).inc()
        log(LOG, logging.INFO, "repair started", account=rt.name, trigger=trigger, token=token,
            drift_seen_at=rec.drift_seen_at)
        a.mark(rt)
        a.spawn(self._task(rt, rec))

    def _task(self, rt: Any, rec: RepairRecord) -> TaskGen:
        yield from self.agent.recreate(rt)
        yield Wait(repair.REPAIR_TIMEOUT_S, lambda: rt.repair is not rec)
        if rt.repair is rec:
            self.finish(rt, ok=False)

    def finish(self, rt: Any, ok: bool) -> None:
        rec = rt.repair
        if rec is None:
            return
        done, elapsed = repair.finish(rec, ok, started_mono=rt.repair_t0 or time.monotonic(),
                                      drift_mono=rt.repair_drift_t0, now_mono=time.monotonic(), now=now_iso())
        rt.repair = None
        rt.status.add_repair(done)
        if done.token:
            rt.status.set_agent(repair_token_ack=done.token)
            if done.token in rt.pending_tokens:
                rt.pending_tokens.remove(done.token)
        m = self.agent.metrics
        if ok:
            m.repair_latency.observe(elapsed / 1000.0)
            if rec.drift_seen_at:
                m.drift_repaired.inc()
        log(LOG, logging.INFO if ok else logging.ERROR, "repair " + done.result, account=rt.name,
            trigger=rec.trigger, token=rec.token, duration_ms=done.duration_ms, repair_ms=round(elapsed, 3))
        self.agent.mark(rt)

    def on_register(self, rt: Any, in_sync: bool | None) -> None:
        """A new REGISTER of ``rt`` was measured."""
        if in_sync and rt.repair is not None:
            self.finish(rt, ok=True)  # the re-created account's first REGISTER via the configured route
        elif not in_sync and (rt.res.spec.self_heal or self.agent.self_heal) and rt.repair is None and not rt.busy:
            # Repair from the event loop, not from inside pjsua's send path.
            self.agent.call_later(rt.heal.delay(time.monotonic()), self._self_heal, rt)

    def _self_heal(self, rt: Any) -> None:
        if rt.removed or rt.status.route.in_sync is not False or rt.repair is not None:
            return
        self.start(rt, "self-heal", None)

    def reregister(self, rt: Any, token: str | None) -> None:
        if rt.busy:
            self.agent.call_later(0.2, self.reregister, rt, token)
            return
        self.agent.spawn(self._reregister_task(rt, token))

    def _reregister_task(self, rt: Any, token: str | None) -> TaskGen:
        a = self.agent
        rt.busy = True
        try:
            acc = rt.acc
            if acc is not None:
                log(LOG, logging.INFO, "re-register: setRegistration(False) then (True)", account=rt.name, token=token)
                try:
                    acc.setRegistration(False)
                    acc = None
                    yield Wait(a.settings.unregister_timeout_seconds,
                               lambda: rt.status.registration.state in ("Unregistered", "Failed"))
                    if rt.acc is not None:
                        rt.acc.setRegistration(True)
                except pj.Error as e:
                    LOG.warning("re-register failed: %s", e.info())
            if token:
                rt.status.set_agent(reregister_token_ack=token)
                a.mark(rt)
        finally:
            rt.busy = False
