"""SipAccount reconcile: placement decided (placement.py, pure), carried out here.

It promises: nothing is placed or removed before the account's scope was read at start, nor in a namespace
forgotten while being deleted (``NotLoaded`` otherwise, which kopf retries); an account whose Secret is missing
or unusable waits unplaced (the Secret's watch, and a slow retry, place it later); a placed account stays where
it is unless it must move; every agent the decision touched gets one children pass, agents left empty are
deleted; then the account's status is refreshed. A Secret that changes re-syncs the agents hosting its accounts (they re-read the credentials).
"""

from __future__ import annotations

import logging

from pydantic import ValidationError

from sipfleet.api import kerrors
from sipfleet.api import models as m

from . import placement as pl
from .children import Children
from .loading import NotLoaded
from .observed import inputs_digest, is_deleting, is_paused, ref, secret_problem
from .restore import Restore
from .state import State
from .status import Status

log = logging.getLogger("sipfleet.operator")


class Accounts:
    def __init__(self, state: State, children: Children, status: Status, restore: Restore):
        self.state, self.children, self.status, self.restore = state, children, status, restore

    def needs_reconcile(self, body: dict) -> bool:
        """Whether what placement and the agent depend on changed since the last reconcile (kopf's own change
        detection does not see our annotations: see observed.inputs_digest)."""
        if is_deleting(body):
            return False
        rec = self.state.accounts.get(ref(body))
        return rec is None or rec.reconciled != inputs_digest(body)

    def _reconciled(self, ns: str, name: str, digest: str | None) -> None:
        rec = self.state.accounts.get((ns, name))
        if rec is not None:
            rec.reconciled = digest

    async def reconcile(self, body: dict) -> None:
        """create / update / resume: place the account and bring its agent's children in line.
        Raises ``NotLoaded`` while the account's namespace has not been read (kopf retries)."""
        st = self.state
        ns, name = ref(body)
        if ns in st.terminating:  # kopf retries; a namespace of that name created again is served then
            raise NotLoaded(f"namespace {ns} is being deleted")
        st.remember(body)
        await self.restore.loader.wait(ns)
        digest = inputs_digest(body)
        if is_paused(body) or is_deleting(body):
            self._reconciled(ns, name, None)  # un-pausing reconciles whatever changed meanwhile
            await self.status.refresh(ns, name)
            return
        spec = m.SipAccountSpec.model_validate(body.get("spec") or {})
        secret = await st.check_secret(ns, spec.credentials)
        where = pl.find(st.fleet, ns, name)
        if secret.problem and where is None:
            log.info("%s/%s: %s; waiting for the Secret", ns, name, secret.problem)
            self._reconciled(ns, name, digest)  # the Secret watch (and a slow retry) take it from here
            await self.status.refresh(ns, name)
            return
        plan = pl.place(st.fleet, pl.GroupKey.for_spec(ns, name, spec), name, pl.worker_key(spec),
                        st.settings.accounts_per_agent)
        st.set_fleet(plan.fleet)
        if where != plan.agent:
            log.info("%s/%s placed on agent %s%s%s", ns, name, plan.agent, " (new)" if plan.created else "",
                     f" (moved from {where})" if where else "")
        for gone in sorted(plan.removed):
            await self.children.delete_agent(gone, ns)
        for agent in sorted(plan.changed | {plan.agent} - {None}):
            await self.children.sync_agent(agent)
        await self.restore.tell_unreadable(body, plan.agent)
        gen = (body.get("metadata") or {}).get("generation")
        rec = st.accounts.get((ns, name))
        if rec is not None:
            if gen is not None:
                rec.synced_generation = gen
            rec.reconciled = digest
        await self.status.refresh(ns, name)

    async def remove(self, body: dict) -> None:
        """delete: take the account out of its agent (the agent unregisters it); empty agents go away."""
        st = self.state
        ns, name = ref(body)
        await self.restore.loader.wait(ns)
        plan = pl.remove(st.fleet, ns, name)
        st.set_fleet(plan.fleet)
        if plan.changed or plan.removed:
            log.info("%s/%s removed from agent %s", ns, name, next(iter(plan.changed | plan.removed)))
        st.forget(ns, name)
        self.status.wakeups.schedule((ns, name), None)
        try:
            for gone in sorted(plan.removed):
                await self.children.delete_agent(gone, ns)
            for agent in sorted(plan.changed):
                await self.children.sync_agent(agent)
        except kerrors.NamespaceTerminating:
            # the namespace is going away with everything in it: nothing left to update
            log.info("%s/%s removed while namespace %s terminates", ns, name, ns)

    async def on_secret(self, event_type: str, secret: dict) -> None:
        """A Secret some accounts use changed (or went): when its verdict changed, place the accounts it now lets
        register, re-sync the agents hosting them, refresh their status."""
        st = self.state
        ns, sname = ref(secret)
        if ns in st.terminating:
            return  # the namespace's Secrets go with it; its accounts were forgotten
        changed = None
        for aname in st.secret_users(ns, sname):
            body = await st.account(ns, aname)
            if body is None:
                continue
            try:
                spec = m.SipAccountSpec.model_validate(body.get("spec") or {})
            except ValidationError:
                continue
            new = secret_problem(None if event_type == "DELETED" else secret, spec.credentials)
            if changed is None:
                changed = st.secrets.get((ns, sname)) != new
                st.secrets[(ns, sname)] = new
            if not changed:
                return
            agent = pl.find(st.fleet, ns, aname)
            if agent is None and new.problem is None:
                if self.restore.loader.is_loaded(ns):  # otherwise placed once its namespace is read
                    await self.reconcile(body)  # placed now that it can register
                continue
            if agent is not None and new.problem is None:
                await self.children.sync_agent(agent)  # new secretVersion: the agent re-reads the credentials
            await self.status.refresh(ns, aname)

    async def retry_unplaced(self) -> None:
        """Accounts left unplaced (their Secret was not usable, or placing failed): try again."""
        st = self.state
        for (ns, name), rec in list(st.accounts.items()):
            body = rec.body
            if (pl.find(st.fleet, ns, name) is None and not is_paused(body) and not is_deleting(body)
                    and self.restore.loader.is_loaded(ns)):
                await self.reconcile(body)
