"""Failover of an agent's accounts with fallback routes (``spec.fallbackRoutes``): which route each group is on
(:mod:`.failoverplan`), the OPTIONS probes of the primary (:mod:`.routeprobe`, a thread per probe in flight, one per
group at a time), what the workers are given, and what status, events and metrics say.

Promise: an account without fallback routes is never touched (:meth:`effective` returns it as it is,
:meth:`annotate` adds nothing). For one with them, :meth:`effective` is the account as its worker must run it: the
route meant to be active as *the* route. The runtime plans workers from that, so a failover moves the group's
accounts to workers of the active route (prevent mode: their global outbound proxy is that route), and those workers
measure the wire against it: a failover is not drift, a Service-Route drift while failed over still is. Every
status document of such an account carries ``route.active`` (index, route, reason, since); a move posts one event
per account (Warning ``FailedOver``, Normal ``FailedBack``). Methods that change a group return the keys of its
accounts; the caller replans.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any, Callable, Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from sipfleet.api.keys import EVENT_FAILED_BACK, EVENT_FAILED_OVER

from .. import protocol as p
from ..config import ResolvedAccount
from ..logs import log
from ..status import now_iso
from . import failoverplan as fp
from . import routeprobe

LOG = logging.getLogger("sipfleet_agent.supervisor")
FAILOVERS = "sipfleet_agent_failovers"
ON_FALLBACK = "sipfleet_agent_accounts_on_fallback"
PROBES = "sipfleet_agent_primary_probes"


class Failover:
    def __init__(self, edge: Any, local_address: str, *, registry: Any = None,
                 clock: Callable[[], float] = time.monotonic, prober: Callable[..., int | None] = routeprobe.probe):
        self.edge = edge
        self.local_address = local_address
        self.clock = clock
        self.prober = prober
        self._lock = threading.Lock()
        self.groups: dict[tuple, fp.Group] = {}
        self.states: dict[tuple, fp.State] = {}
        self.since: dict[tuple, str] = {}  # group -> when its active route became active (RFC 3339)
        self.members: dict[tuple, tuple] = {}  # account key -> group key
        self.probe_with: dict[tuple, ResolvedAccount] = {}  # group -> an account whose registrar and TLS it probes with
        self._results: list[tuple[tuple, int | None]] = []
        self.moved = {fp.OVER: 0, fp.BACK: 0}
        self.probes = {"answered": 0, "unanswered": 0}
        if registry is not None:
            registry.register(self)

    def configure(self, accounts: Iterable[ResolvedAccount]) -> None:
        """The accounts the agent hosts now: groups that are gone are forgotten, new ones start on the primary."""
        groups: dict[tuple, fp.Group] = {}
        members: dict[tuple, tuple] = {}
        probe_with: dict[tuple, ResolvedAccount] = {}
        for a in accounts:
            if not a.spec.fallback_routes:
                continue
            g = a.worker_key()
            members[a.key] = g
            probe_with.setdefault(g, a)
            groups.setdefault(g, fp.Group(
                routes=(tuple(a.spec.route),) + tuple(tuple(r) for r in a.spec.fallback_routes),
                interval=float(a.spec.failover.probe_interval_seconds), return_after=a.spec.failover.return_after_probes))
        with self._lock:
            self.groups, self.members, self.probe_with = groups, members, probe_with
            self.states = {g: self.states.get(g, fp.State()) for g in groups}
            self.since = {g: s for g, s in self.since.items() if g in groups}

    def effective(self, a: ResolvedAccount) -> ResolvedAccount:
        """``a`` as its worker runs it: with the active route as its route (no fallback routes: the worker has none
        to choose from)."""
        with self._lock:
            g = self.members.get(a.key)
            st = self.states.get(g) if g is not None else None
            if st is None or st.active == 0:
                return a
            route = list(self.groups[g].routes[st.active])
        return dataclasses.replace(a, spec=a.spec.model_copy(update={"route": route, "fallback_routes": []}))

    def annotate(self, key: tuple, doc: dict) -> dict:
        """``doc`` with ``route.active`` for an account with fallback routes (its route part needs a mode already)."""
        with self._lock:
            g = self.members.get(key)
            if g is None or not isinstance(doc.get("route"), dict):
                return doc
            st = self.states[g]
            active = {"index": st.active, "route": list(self.groups[g].routes[st.active]), "reason": st.reason,
                      "message": st.message or None, "since": self.since.get(g), "failovers": st.failovers}
        return {**doc, "route": {**doc["route"], "active": {k: v for k, v in active.items() if v is not None}}}

    def on_path_failed(self, msg: p.PathFailed) -> list[tuple]:
        """A worker says a route's first hop failed; the keys of the accounts that now move (none: no change)."""
        with self._lock:
            g = self.members.get((msg.namespace, msg.name))
            if g is None:
                return []
            ch = fp.on_path_failure(self.groups[g], self.states[g], route=tuple(msg.route), cause=msg.cause,
                                    detail=msg.detail, now=self.clock())
            return self._changed(g, ch)

    def tick(self) -> list[tuple]:
        """Start the probes that are due, take the results that came in; the keys of the accounts that move."""
        now = self.clock()
        moving: list[tuple] = []
        with self._lock:
            results, self._results = self._results, []
            for g, code in results:
                if g not in self.groups:
                    continue
                self.probes["answered" if code is not None else "unanswered"] += 1
                moving += self._changed(g, fp.on_probe(self.groups[g], self.states[g], answered=code is not None,
                                                       now=now))
            due = [g for g, st in self.states.items() if fp.probe_due(st, now)]
            for g in due:
                self.states[g] = fp.probe_started(self.states[g])
                threading.Thread(target=self._probe, args=(g, self.groups[g], self.probe_with[g]), daemon=True,
                                 name="failover-probe").start()
        return moving

    def _probe(self, g: tuple, group: fp.Group, a: ResolvedAccount) -> None:
        try:
            code = self.prober(route=list(group.routes[0]), registrar=a.spec.registrar, transport=a.spec.transport,
                               local_address=self.local_address, timeout=fp.probe_timeout(group), tls=a.tls)
        except Exception as e:  # noqa: BLE001 - an unresolvable name, no route: no answer
            LOG.debug("failover probe not sent: %s", e)
            code = None
        with self._lock:
            self._results.append((g, code))

    def _changed(self, g: tuple, ch: fp.Change) -> list[tuple]:
        """Record ``ch`` (lock held); events and a log line for a move; the keys of the group's accounts if it moved."""
        self.states[g] = ch.state
        if ch.event is None:
            return []
        self.since[g] = now_iso()
        keys = sorted((k for k, grp in self.members.items() if grp == g), key=lambda k: (k[0] or "", k[1]))
        self.moved[ch.event] += len(keys)
        over = ch.event == fp.OVER
        route = ", ".join(self.groups[g].routes[ch.state.active])
        message = (f"{ch.state.message}; registering through " +
                   (f"fallback route {ch.state.active} ({route})" if over else f"the primary route ({route})"))
        log(LOG, logging.WARNING if over else logging.INFO, "failed over" if over else "failed back",
            route=list(self.groups[g].routes[ch.state.active]), index=ch.state.active, reason=ch.state.reason,
            accounts=[k[1] for k in keys])
        for k in keys:
            self.edge.event(k, k[1], "Warning" if over else "Normal", EVENT_FAILED_OVER if over else EVENT_FAILED_BACK,
                            message[:1024])
        return keys

    def collect(self):  # noqa: ANN201 - prometheus_client collector protocol
        with self._lock:
            moved, probes = dict(self.moved), dict(self.probes)
            on_fallback = sum(1 for g in self.members.values() if self.states[g].active > 0)
        c = CounterMetricFamily(FAILOVERS, "Accounts moved off their active route (over) or back to the primary "
                                "(back) by failover (spec.fallbackRoutes)", labels=["direction"])
        for d in (fp.OVER, fp.BACK):
            c.add_metric([d], moved[d])
        g = GaugeMetricFamily(ON_FALLBACK, "Accounts registering through a fallback route, not their primary")
        g.add_metric([], on_fallback)
        pr = CounterMetricFamily(PROBES, "OPTIONS probes of a primary route while its accounts are failed over, by "
                                 "whether the first hop answered", labels=["result"])
        for r in ("answered", "unanswered"):
            pr.add_metric([r], probes[r])
        return [c, g, pr]
