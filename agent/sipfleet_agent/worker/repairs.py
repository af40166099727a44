"""Carrying out repairs, re-registrations and self-heal on the worker's event loop (the decisions are :mod:`.repair`'s).

Promise: one repair per account at a time (a token that arrives meanwhile is retried shortly); a repair re-creates
the account and ends ``repaired`` with its first REGISTER via the configured route, or ``failed`` after
``REPAIR_TIMEOUT_S``; the token is acknowledged in status either way.

A re-register (a user's ``reregisterToken``, the ``sipfleet.io/reregister`` annotation) is an un-REGISTER and a
REGISTER from a *new* registration client: the account is re-created. It never calls ``setRegistration(False)``
then ``(True)`` on the same account: with per-account proxies and a stored Service-Route that sends every
REGISTER after it to the Service-Route's edge (PJSIP issue 4066, shared/docs/sip-facts.md). That path is kept
only as :meth:`Repairs.drift`, a debug hook (``--debug-hooks``) that tests and benchmarks use to make a route
drift for real on the wire.

Self-heal (``selfHeal``, on by default) acts on the first drifted REGISTER of every path: at once when the account
is idle (on the next turn of the event loop, not inside pjsua's send path), and the moment the running task ends
when a re-create, re-register or the drift hook is in progress (:meth:`after_busy`). :class:`.repair.SelfHealGate`
backs off an account that keeps drifting.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pjsua2 as pj

from sipfleet.api.keys import TRIGGER_SELF_HEAL
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
            elif trigger == TRIGGER_SELF_HEAL:
                rt.heal_pending = True  # after_busy starts it
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
        if ok and rec.trigger == TRIGGER_SELF_HEAL:
            rt.status.set_route(self_heal_count=rt.status.route.self_heal_count + 1)
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
        self.after_busy(rt)

    # ---------------------------------------------------------------- self-heal

    def self_heal_on(self, rt: Any) -> bool:
        return bool(rt.res.spec.self_heal or self.agent.self_heal)

    def on_register(self, rt: Any, in_sync: bool | None) -> None:
        """A new REGISTER of ``rt`` was measured (called from pjsua's send path: never re-create from here)."""
        if in_sync and rt.repair is not None:
            self.finish(rt, ok=True)  # the re-created account's first REGISTER via the configured route
        elif in_sync is False and self.self_heal_on(rt):
            if rt.busy or rt.repair is not None:
                rt.heal_pending = True  # the running task ends with after_busy
            else:
                self._schedule_heal(rt)

    def after_busy(self, rt: Any) -> None:
        """A task that kept ``rt`` busy ended: a drift it saw meanwhile is healed now."""
        if rt.heal_pending and not rt.busy and rt.repair is None:
            rt.heal_pending = False
            if not rt.removed and rt.status.route.in_sync is False and self.self_heal_on(rt):
                self._schedule_heal(rt)

    def _schedule_heal(self, rt: Any) -> None:
        if rt.heal_timer is not None and not rt.heal_timer.cancelled:
            return  # one is on its way
        delay = rt.heal.delay(time.monotonic())
        if delay > 0:
            self.agent.metrics.self_heal_deferred.inc()
            log(LOG, logging.WARNING, "self-heal backing off: the route keeps drifting", account=rt.name,
                delay_s=round(delay, 3))
        rt.heal_timer = self.agent.call_later(delay, self._self_heal, rt)

    def _self_heal(self, rt: Any) -> None:
        rt.heal_timer = None
        if rt.removed or rt.status.route.in_sync is not False or not self.self_heal_on(rt):
            return
        self.start(rt, TRIGGER_SELF_HEAL, None)

    # ---------------------------------------------------------------- re-register and the drift hook

    def reregister(self, rt: Any, token: str | None) -> None:
        if rt.busy or rt.repair is not None:
            self.agent.call_later(0.2, self.reregister, rt, token)
            return
        self.agent.spawn(self._reregister_task(rt, token))

    def _reregister_task(self, rt: Any, token: str | None) -> TaskGen:
        log(LOG, logging.INFO, "re-register: un-REGISTER, then REGISTER from a new registration client",
            account=rt.name, token=token)
        yield from self.agent.recreate(rt)
        if token:
            rt.status.set_agent(reregister_token_ack=token)
            self.agent.mark(rt)

    def drift(self, rt: Any) -> None:
        """Debug hook: make the account drift the way pjsua 2.15.1 really does (PJSIP issue 4066)."""
        if rt.busy or rt.repair is not None:
            self.agent.call_later(0.2, self.drift, rt)
            return
        self.agent.spawn(self._drift_task(rt))

    def _drift_task(self, rt: Any) -> TaskGen:
        a = self.agent
        rt.busy = True
        try:
            acc = rt.acc
            if acc is not None:
                log(LOG, logging.WARNING, "debug hook: setRegistration(False) then (True) on the same account "
                    "(the route drifts in routeMode account)", account=rt.name)
                try:
                    acc.setRegistration(False)
                    acc = None
                    yield Wait(a.settings.unregister_timeout_seconds,
                               lambda: rt.status.registration.state in ("Unregistered", "Failed"))
                    if rt.acc is not None:
                        rt.acc.setRegistration(True)
                except pj.Error as e:
                    LOG.warning("drift hook failed: %s", e.info())
        finally:
            rt.busy = False
            self.after_busy(rt)
