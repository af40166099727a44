"""The supervisor's REGISTER pacing: workers say what they want to send (:class:`~sipfleet_agent.protocol.Want`) and
how it ended (:class:`~sipfleet_agent.protocol.Answered`); a thread of its own lets each go
(:class:`~sipfleet_agent.protocol.Go`) when :mod:`.paceplan` says so. One pacing per agent, so one probe per agent
and registrar while the registrar does not answer.

Promise: only accounts with a ``register_rate`` are paced; the thread sleeps until the plan's next time or the next
message; ``send`` is called outside the lock; a lane going down or up is logged once, with what waits.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Iterable

from prometheus_client.core import Metric

from sipfleet.api.budget import registrar_key

from .. import protocol as p
from ..config import ResolvedAccount
from ..logs import log
from .paceplan import PacePlan

LOG = logging.getLogger("sipfleet_agent.supervisor")
RATE = "sipfleet_agent_register_budget_rate"
WAITING = "sipfleet_agent_register_budget_waiting"
UNANSWERED = "sipfleet_agent_registrar_unanswered"


class Pacing:
    def __init__(self, probe_s: float, send: Callable[[tuple], None], clock: Callable[[], float] = time.monotonic,
                 registry: Any = None):
        self.plan = PacePlan(probe_s)
        self.send = send
        self.clock = clock
        self._cv = threading.Condition()
        self._stopped = False
        self._down: set[str] = set()
        self._thread = threading.Thread(target=self._run, name="pacing", daemon=True)
        self._thread.start()
        if registry is not None:
            registry.register(self)

    def configure(self, accounts: Iterable[ResolvedAccount]) -> None:
        paced = {a.key: (registrar_key(a.spec.registrar), a.spec.register_rate) for a in accounts
                 if a.spec.register_rate is not None}
        with self._cv:
            released = self.plan.configure(paced)
            self._cv.notify()
        for key in released:  # no longer paced: it must not wait for a Go that never comes
            self.send(key)

    def on_message(self, msg: p.Message) -> None:
        key = (msg.namespace, msg.name)  # type: ignore[union-attr]
        with self._cv:
            unpaced = isinstance(msg, p.Want) and not self.plan.paced(key)
            if isinstance(msg, p.Want) and not unpaced:
                self.plan.want(key, self.clock(), msg.requests)
            elif isinstance(msg, p.Answered):
                self.plan.answered(key, msg.code, self.clock(), msg.retry_after, msg.requests)
            self._cv.notify()
        if unpaced:  # e.g. its rate was just taken away: it must not wait
            self.send(key)

    def forget(self, keys: Iterable[tuple]) -> None:
        with self._cv:
            self.plan.forget(keys)

    def snapshot(self) -> dict:
        with self._cv:
            return self.plan.snapshot()

    def collect(self):  # noqa: ANN201 - prometheus_client collector protocol
        snap = self.snapshot()
        fams = [Metric(RATE, "REGISTER requests per second this agent may send to the registrar (its accounts' "
                       "shares of the operator's budget)", "gauge"),
                Metric(WAITING, "Accounts whose REGISTER waits for the budget or for the agent's probe", "gauge"),
                Metric(UNANSWERED, "1 while the registrar does not answer: the agent's accounts wait behind one "
                       "probe REGISTER per registrarProbeSeconds", "gauge")]
        for lane, s in sorted(snap.items()):
            for fam, value in zip(fams, (s["rate"], s["waiting"], 1.0 if s["down"] else 0.0)):
                fam.add_sample(fam.name, {"registrar": lane}, float(value))
        return fams

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                if self._stopped:
                    return
                now = self.clock()
                due = self.plan.due(now)
                self._note_lanes()
                nxt = self.plan.next_at(now)
                if not due:
                    self._cv.wait(None if nxt is None else max(0.001, nxt - now))
                    continue
            for key in due:
                try:
                    self.send(key)
                except Exception:  # noqa: BLE001 - a worker gone: its Answered never comes, the plan stops waiting
                    LOG.exception("pacing: could not let %s go", key[1])

    def _note_lanes(self) -> None:
        snap = self.plan.snapshot()
        down = {n for n, s in snap.items() if s["down"]}
        for lane in sorted(down - self._down):
            log(LOG, logging.WARNING, "registrar not answering: one probe REGISTER per interval, the rest wait",
                registrar=lane, probe_s=self.plan.probe_s, waiting=snap[lane]["waiting"])
        for lane in sorted((self._down - down) & set(snap)):
            log(LOG, logging.INFO, "registrar answering again: the waiting accounts follow at the budget's rate",
                registrar=lane, rate=snap[lane]["rate"], waiting=snap[lane]["waiting"])
        self._down = down
