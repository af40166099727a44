"""The operator's own background task: the ladder's wake-ups and the periodic sweeps.

It promises:

* an account is refreshed when its ladder asked to be woken (wakeups.py: a repair timeout, a pod-start grace,
  a back-off), not by a scan of every account every second; as a safety net, every ``SLOW_SECONDS`` the accounts
  that need the ladder (``ladder.needs_attention``) but have no wake-up scheduled are refreshed too;
* every ``SLOW_SECONDS``: unplaced accounts are tried again;
* every ``GAUGE_SECONDS``: the account gauges (``sipfleet_accounts``) recomputed from the cached accounts;
* every ``NAMESPACE_SECONDS`` (namespace-scoped operators only): the fleet of a namespace that is gone or
  terminating is forgotten (kopf stops watching such a namespace, so no DELETED event may come);
* every ``SWEEP_SECONDS``: agents hosting accounts that no longer exist (deleted while no operator ran) are fixed;
* a failure is counted and logged; the loop goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from datetime import timedelta
from typing import Callable

from pydantic import ValidationError

from sipfleet.api import models as m

from . import conditions as cond
from . import ladder as lad
from . import metrics
from .accounts import Accounts
from .k8s import ApiError
from .observed import meta
from .state import State
from .status import Status
from .wakeups import Wakeups

log = logging.getLogger("sipfleet.operator")

SLOW_SECONDS = 30
GAUGE_SECONDS = 5
NAMESPACE_SECONDS = 5
SWEEP_SECONDS = 300
RETRY_SECONDS = 5


class Background:
    def __init__(self, state: State, accounts: Accounts, status: Status, wakeups: Wakeups, clock: Callable):
        self.state, self.accounts, self.status, self.wakeups, self.clock = state, accounts, status, wakeups, clock

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        last_slow = last_sweep = last_ns = last_gauge = loop.time()
        while True:
            await self.wakeups.wait(self.clock(), self.state.settings.ladder_tick_seconds)
            try:
                await self.wake_due()
                if loop.time() - last_slow > SLOW_SECONDS:
                    last_slow = loop.time()
                    await self.refresh_unscheduled()
                    await self.accounts.retry_unplaced()
                if loop.time() - last_gauge > GAUGE_SECONDS:
                    last_gauge = loop.time()
                    self.count_accounts()
                    await self.accounts.children.follow_budget()
                if loop.time() - last_ns > NAMESPACE_SECONDS:
                    last_ns = loop.time()
                    await self.forget_terminating_namespaces()
                if loop.time() - last_sweep > SWEEP_SECONDS:
                    last_sweep = loop.time()
                    await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                metrics.RECONCILE_ERRORS.labels(where="ticker").inc()
                log.exception("periodic work failed")

    async def wake_due(self) -> None:
        """Refresh the accounts whose wake-up has come (each schedules its next one, if any); one that fails is
        tried again ``RETRY_SECONDS`` later, the others are not held up."""
        for key in self.wakeups.due(self.clock()):
            try:
                await self.status.refresh(*key)
            except (ApiError, ValidationError) as e:
                metrics.RECONCILE_ERRORS.labels(where="ticker").inc()
                log.warning("%s/%s: the ladder's wake-up failed (again in %d s): %s", *key, RETRY_SECONDS, e)
                if self.wakeups.get(key) is None:
                    self.wakeups.schedule(key, self.clock() + timedelta(seconds=RETRY_SECONDS))

    async def refresh_unscheduled(self) -> None:
        for key, rec in list(self.state.accounts.items()):
            if key in self.wakeups:
                continue
            st = rec.body.get("status") or {}
            try:
                route = m.RouteStatus.model_validate(st["route"]) if st.get("route") else None
                ladder = m.LadderStatus.model_validate(st["ladder"]) if st.get("ladder") else None
            except ValidationError:
                continue
            if lad.needs_attention(route, ladder):
                await self.status.refresh(*key)

    async def forget_terminating_namespaces(self) -> None:
        """Namespace-scoped kopf stops watching a namespace as soon as it is being deleted (kopf's namespace
        observer), so no DELETED event may come for its accounts. Their objects go with the namespace (nothing of
        ours holds it: no finalizers) and the agents unregister on SIGTERM: forget the namespace's fleet, and
        ignore the watch events still in flight for it until it is gone or created again (``state.terminating``):
        each would otherwise place a forgotten account again, into a namespace that refuses new objects."""
        st = self.state
        if not st.settings.namespaces:
            return  # cluster-wide: kopf keeps watching and sees every account go
        known = {k[0] for k in st.accounts} | {a.namespace for a in st.fleet.values()}
        if not known and not st.terminating:
            return
        try:  # one list for all of them, not a get per namespace every few seconds
            listed = {meta(n)["name"]: n for n in await st.client.list("Namespace")}
        except ApiError as e:
            if e.status == 403:  # no read access to namespaces: kopf then keeps watching them anyway
                return
            raise
        for ns in sorted(st.terminating):
            obj = listed.get(ns)
            if obj is None or not meta(obj).get("deletionTimestamp") or meta(obj).get("uid") != st.terminating[ns]:
                del st.terminating[ns]  # gone, or created again: its accounts are served again
        for ns in sorted(known):
            obj = listed.get(ns)
            if obj is not None and not meta(obj).get("deletionTimestamp"):
                continue
            log.info("namespace %s is %s: forgetting its SipAccounts and agents", ns,
                     "gone" if obj is None else "being deleted")
            if obj is not None:
                st.terminating[ns] = meta(obj).get("uid")
            st.set_fleet({n: a for n, a in st.fleet.items() if a.namespace != ns})
            for key in [k for k in st.accounts if k[0] == ns]:
                st.forget(*key)
                self.wakeups.schedule(key, None)

    async def sweep(self) -> None:
        """Agents hosting accounts that no longer exist (deleted while no operator ran): fix them."""
        st = self.state
        for agent in list(st.fleet.values()):
            for n in agent.accounts:
                if (agent.namespace, n) not in st.accounts:
                    if await st.client.get("SipAccount", agent.namespace, n) is None:
                        await self.accounts.remove({"metadata": {"namespace": agent.namespace, "name": n}})

    def count_accounts(self) -> None:
        counts: dict[tuple[str, str], int] = defaultdict(int)
        for rec in list(self.state.accounts.values()):
            for c in (rec.body.get("status") or {}).get("conditions") or []:
                counts[(c.get("type"), c.get("status"))] += 1
        for t in cond.TYPES:
            for s in ("True", "False", "Unknown"):
                metrics.ACCOUNTS.labels(condition=t, status=s).set(counts.get((t, s), 0))
