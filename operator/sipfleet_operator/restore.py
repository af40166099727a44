"""The fleet rebuilt at start from the assignment ConfigMaps (the source of truth for who hosts what).

It promises: every watched scope is read before any account in it is placed or removed (loading.py reads them
scope by scope, retries the ones that fail and never fails the start); what a ConfigMap says is taken as it is
(placement.reconstruct), so a restarted operator never invents a second agent for a slot; an agent left with
no accounts has its children removed; a ConfigMap that cannot be read is remembered with the accounts it
names, so that each of them, once placed again, gets one Warning event saying so (``tell_unreadable``), and the
unreadable agent goes when none of its accounts still needs it.
"""

from __future__ import annotations

import logging

from sipfleet.api import keys as k

from . import builders as b
from . import metrics
from . import placement as pl
from . import stored
from .children import Children
from .events import Events
from .k8s import ApiError
from .loading import Loader, Scope, scopes_for
from .observed import ref
from .state import State

log = logging.getLogger("sipfleet.operator")


class Restore:
    def __init__(self, state: State, children: Children, events: Events):
        self.state, self.children, self.events = state, children, events
        self.loader: Loader[list[dict]] = Loader(scopes_for(state.settings.namespaces), self._read_scope,
                                                 self._apply_scope, on_error=self._load_failed)

    async def _read_scope(self, scope: Scope) -> list[dict]:
        cms = await self.state.client.list("ConfigMap", scope, b.AGENT_SELECTOR)
        return [cm for cm in cms if self.state.watches(ref(cm)[0])]

    async def _apply_scope(self, scope: Scope, cms: list[dict]) -> None:
        st = self.state
        results = [stored.read_configmap(cm) for cm in cms]
        agents = [r for r in results if isinstance(r, stored.StoredAgent)]
        rec = pl.reconstruct(a.entry() for a in agents)
        for a in agents:  # the budget's shares as they were: the accounts' watch events then change nothing
            st.seed_registrars(a.namespace, a.registrars)
        for a in agents:
            if a.recovered:
                log.warning("assignment ConfigMap %s/%s was incomplete: %s (it is rewritten)", a.namespace, a.name,
                            a.recovered)
        for u in (r for r in results if isinstance(r, stored.Unreadable)):
            log.error("assignment ConfigMap %s/%s cannot be read (%s); its accounts %s are placed again",
                      u.namespace, u.name, u.reason, ", ".join(u.accounts) or "(none named)")
            metrics.RECONCILE_ERRORS.labels(where="load").inc()
            st.unreadable[(u.namespace, u.name)] = u
        empty = pl.empty_agents(rec.fleet)
        st.set_fleet({**st.fleet, **pl.without_empty(rec.fleet)})
        log.info("loaded %s: %d agents hosting %d accounts (%d to correct, %d displaced, %d empty, %d unreadable)",
                 "the whole cluster" if scope is None else f"namespace {scope}", len(rec.fleet) - len(empty),
                 sum(len(a.accounts) for a in rec.fleet.values()), len(rec.dirty), len(rec.displaced), len(empty),
                 sum(1 for r in results if isinstance(r, stored.Unreadable)))
        try:
            for name in empty:  # nothing to host (its accounts were kept by another agent): remove it
                await self.children.delete_children(name, rec.fleet[name].namespace)
            for (ns, name), u in list(st.unreadable.items()):
                if not u.accounts and (scope is None or ns == scope):
                    await self.retire_unreadable(ns, name)
        except ApiError as e:  # the fleet is read; leftovers go with the next sweep or placement
            log.warning("could not remove an agent left without accounts: %s", e)

    def _load_failed(self, scope: Scope, error: str) -> None:
        metrics.RECONCILE_ERRORS.labels(where="load").inc()

    async def tell_unreadable(self, body: dict, agent: str | None) -> None:
        """An account that an unreadable ConfigMap named gets one Warning event saying so, once it is placed;
        the unreadable agent is removed when none of its accounts still needs it."""
        ns, name = ref(body)
        for (uns, uname), u in list(self.state.unreadable.items()):
            if uns != ns or name not in u.accounts:
                continue
            what = "it was rewritten" if uname == agent else f"the account was placed on agent {agent}"
            await self.events.post(body, "Warning", k.EVENT_ASSIGNMENT_UNREADABLE,
                                   f"the assignment ConfigMap {uname} that hosted this account could not be read "
                                   f"at operator start ({u.reason}); {what}")
            await self.retire_unreadable(uns, uname)

    async def retire_unreadable(self, ns: str, name: str) -> None:
        st = self.state
        u = st.unreadable.get((ns, name))
        if u is None:
            return
        for account in u.accounts:
            if pl.find(st.fleet, ns, account) is None and await st.account(ns, account) is not None:
                return  # still to be placed (its resume handler will get here again, and tell it)
        del st.unreadable[(ns, name)]
        if name not in st.fleet:  # else placement re-used the name: its children were just rewritten
            await self.children.delete_children(name, ns)
