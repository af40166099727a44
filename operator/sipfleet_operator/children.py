"""An agent's children (ConfigMap, ServiceAccount, Role, RoleBinding, Deployment): built by the pure builders,
server-side applied here.

It promises:

* one pass per agent: a pass applies every child of the agent that changed, in order (the Role first when
  accounts join, so the agent may read them before it sees them in its assignment); requests that arrive while
  a pass runs are served by one more pass, which all of them share (so many accounts joining at once cost two
  passes, not one each);
* no write for a child whose digest was applied already; after a start (nothing applied yet by this process)
  the child is read first and not written when it already is what would be applied;
* a new agent's first Deployment waits while accounts are still joining it (sizing.first_deploy_wait), then
  one more pass creates it: its pod is not replaced during a bulk create;
* an agent left without accounts has its children deleted (unless placement re-used the name meanwhile);
* the assignment carries each account's share of the REGISTER budget as the pass finds it; when a share changes,
  the agents of that registrar get a pass (:meth:`Children.follow_budget`, a few times in a fleet's growth).
"""

from __future__ import annotations

import asyncio
import logging

from pydantic import ValidationError

from sipfleet.api import models as m
from sipfleet.api.budget import registrar_key

from . import builders as b
from . import placement as pl
from . import sizing
from .observed import digest, is_paused
from .state import State

log = logging.getLogger("sipfleet.operator")

CHILD_KINDS = ("ConfigMap", "ServiceAccount", "Role", "RoleBinding", "Deployment")


#: a deferred pass that failed is tried again this much later
RETRY_SECONDS = 5.0


class Children:
    def __init__(self, state: State):
        self.state = state
        self.client = state.client
        self._tasks: set[asyncio.Task] = set()

    def stop(self) -> None:
        for rec in self.state.agents.values():
            if rec.deploy_timer is not None:
                rec.deploy_timer.cancel()
                rec.deploy_timer = None
        for t in list(self._tasks):
            t.cancel()

    async def hosted(self, ns: str, name: str) -> b.HostedAccount | None:
        """The account as its agent gets it (None: it no longer exists). While paused: what it got last."""
        st = self.state
        body = await st.account(ns, name)
        if body is None:
            return None
        rec = st.accounts.get((ns, name))
        frozen = rec.frozen if rec is not None else None
        if is_paused(body) and frozen is not None:
            return frozen
        meta = body.get("metadata") or {}
        try:
            spec = m.SipAccountSpec.model_validate(body.get("spec") or {})
        except ValidationError as e:
            log.error("%s/%s: invalid spec (%s)", ns, name, e.errors()[:1])
            return frozen
        info = st.secrets.get((ns, spec.credentials.secret_name))
        if info is None:
            info = await st.check_secret(ns, spec.credentials)
        annotations = meta.get("annotations") or {}
        ladder = ((body.get("status") or {}).get("ladder") or {}).get("token")
        h = b.HostedAccount(
            name=name,
            namespace=ns,
            uid=meta.get("uid", ""),
            generation=meta.get("generation"),
            spec=spec,
            secret_version=info.version,
            repair_token=b.combine_token(annotations.get(b.ANNOTATION_REPAIR), ladder),
            reregister_token=b.combine_token(annotations.get(b.ANNOTATION_REREGISTER), None),
        )
        if rec is not None:
            rec.frozen = h
        return h

    async def sync_agent(self, agent_name: str) -> None:
        """Bring the agent's children in line with the fleet and its accounts (one pass; see the module doc)."""
        rec = self.state.agent(agent_name)
        if rec.next_pass is not None:  # a pass that has not started yet sees this change too: share it
            await asyncio.shield(rec.next_pass)
            return
        loop = asyncio.get_running_loop()
        shared = rec.next_pass = loop.create_future()
        shared.add_done_callback(lambda f: f.cancelled() or f.exception())  # no "never retrieved" noise
        try:
            async with rec.lock:
                if rec.next_pass is shared:
                    rec.next_pass = None  # it starts: what changes from now on needs a pass of its own
                await self._pass(agent_name)
        except BaseException as e:
            if rec.next_pass is shared:
                rec.next_pass = None
            if not shared.done():
                if isinstance(e, Exception):
                    shared.set_exception(e)
                else:
                    shared.cancel()
            raise
        shared.set_result(None)

    async def _pass(self, agent_name: str) -> None:
        st = self.state
        for _ in range(3):
            agent = st.fleet.get(agent_name)
            if agent is None:
                return
            hosted, gone = [], []
            for n in agent.accounts:
                h = await self.hosted(agent.namespace, n)
                (hosted if h is not None else gone).append(h or n)
            if gone:  # deleted while we were not looking
                fleet = st.fleet
                for n in gone:
                    fleet = pl.remove(fleet, agent.namespace, n).fleet
                st.set_fleet(fleet)
                if agent_name not in st.fleet:
                    await self.delete_children(agent_name, agent.namespace)
                    return
                continue
            break
        else:
            return
        rec = st.agent(agent_name)
        fetched: dict[str, dict | None] = {}
        deployed = rec.deployed
        if deployed is None:  # not applied by this process yet: the size class the cluster has
            deployed = fetched["Deployment"] = await self.client.get("Deployment", agent.namespace, agent_name)
        size = b.size_to_apply(agent, st.settings, deployed)
        rates = st.register_rates()
        children = b.build_children(agent, hosted, st.settings, size, rates)
        names = frozenset(agent.accounts)
        now = asyncio.get_running_loop().time()
        if rec.first_pass_at is None:
            rec.first_pass_at = now
        if names - rec.hosted_names:
            rec.last_join_at = now
            # accounts join: grant the agent access (Role) before it sees them in the assignment
            children.sort(key=lambda c: c["kind"] != "Role")
        for child in children:
            kind = child["kind"]
            if kind == "Deployment" and deployed is None:  # none in the cluster yet: wait while accounts join
                wait = sizing.first_deploy_wait(
                    now, rec.first_pass_at, rec.last_join_at or now,
                    full=len(names) >= min(st.settings.accounts_per_agent, agent.key.capacity),
                    settle=st.settings.first_deploy_settle_seconds, longest=st.settings.first_deploy_wait_seconds)
                if wait > 0:
                    self._pass_later(agent_name, wait)
                    continue
            d = digest(child)
            if rec.applied.get(kind) == d:
                continue
            if kind not in rec.applied:
                # not applied by this process yet (it just started): read before writing, and skip the
                # write when the object already is what we would apply
                current = fetched[kind] if kind in fetched else await self.client.get(kind, agent.namespace,
                                                                                      agent_name)
                if b.unchanged(child, current, d):
                    self._applied(rec, child, d)
                    continue
            child["metadata"].setdefault("annotations", {})[b.ANNOTATION_APPLIED] = d
            await self.client.apply(child)
            self._applied(rec, child, d)
        rec.hosted_names = names
        rec.rates = {r: rates.get(r) for r in {registrar_key(h.spec.registrar) for h in hosted}}

    async def follow_budget(self) -> None:
        """The REGISTER budget's shares changed since an agent's last pass (a registrar's account count crossed a
        step, sipfleet.api.budget): one pass for that agent, whose assignment carries the shares. An agent this
        process has not passed yet gets the shares of its moment at its first pass."""
        st = self.state
        rates = st.register_rates()
        for name in list(st.fleet):
            seen = st.agents[name].rates if name in st.agents else None
            if seen is not None and any(rates.get(r) != v for r, v in seen.items()):
                await self.sync_agent(name)

    def _pass_later(self, agent_name: str, delay: float) -> None:
        """One more pass of the agent in ``delay`` seconds (one at a time; a failed one is tried again)."""
        rec = self.state.agent(agent_name)
        if rec.deploy_timer is not None:
            return
        loop = asyncio.get_running_loop()

        async def later() -> None:
            try:
                await self.sync_agent(agent_name)
            except Exception as e:  # noqa: BLE001 - an apiserver away: again a little later
                log.warning("agent %s: creating its Deployment failed (again in %.0f s): %s", agent_name,
                            RETRY_SECONDS, e)
                self._pass_later(agent_name, RETRY_SECONDS)

        def fire() -> None:
            rec.deploy_timer = None
            task = loop.create_task(later(), name=f"sipfleet-deploy-{agent_name}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        rec.deploy_timer = loop.call_later(delay + 0.005, fire)

    @staticmethod
    def _applied(rec, child: dict, d: str) -> None:
        rec.applied[child["kind"]] = d
        if child["kind"] == "Deployment":
            rec.deployed = child

    async def delete_agent(self, agent_name: str, ns: str) -> None:
        async with self.state.agent(agent_name).lock:
            if agent_name in self.state.fleet:
                return  # re-used meanwhile
            await self.delete_children(agent_name, ns)

    async def delete_children(self, agent_name: str, ns: str) -> None:
        log.info("agent %s/%s has no accounts left: deleting its children", ns, agent_name)
        rec = self.state.agent(agent_name)
        for kind in reversed(CHILD_KINDS):
            await self.client.delete(kind, ns, agent_name)
            rec.applied.pop(kind, None)
        rec.forget_children()

    async def child_deleted(self, kind: str, ns: str, name: str) -> None:
        """A child vanished (someone deleted it): forget it was applied and re-create it if still needed."""
        rec = self.state.agents.get(name)
        if rec is not None:
            rec.applied.pop(kind, None)
            if kind == "Deployment":
                rec.deployed = None
        if name in self.state.fleet:
            await self.sync_agent(name)
