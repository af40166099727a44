"""The operator's state and its (thin) I/O: pure modules decide, this module carries the decisions out.

State in memory, rebuilt from the cluster on start:

* ``fleet``: which agent hosts which account - reconstructed from the assignment ConfigMaps (the source of
  truth) before any handler runs, so a restarted operator never invents a second agent for a slot;
* caches of SipAccounts, agent pods and Secret versions, fed by kopf watch events;
* ``applied``: a digest of every child object last applied, so unchanged children are never written again.

Writes: children are server-side applied (idempotent create-or-patch with one field manager), status with JSON
merge patches of the operator's own fields, and only when something changed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import fnmatch
import hashlib
import json
import logging
import socket
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Collection, Iterable, Mapping

from pydantic import ValidationError

from sipfleet.api import credentials as creds_rules
from sipfleet.api import models as m

from . import builders as b
from . import conditions as cond
from . import ladder as lad
from . import metrics
from . import placement as pl
from . import stored
from .config import Settings
from .k8s import ApiError, Client
from .loading import Loader, Scope, scopes_for

log = logging.getLogger("sipfleet.operator")

CHILD_KINDS = ("ConfigMap", "ServiceAccount", "Role", "RoleBinding", "Deployment")


def now() -> datetime:
    return datetime.now(timezone.utc)


def _meta(body: dict) -> dict:
    return body.get("metadata") or {}


def _ref(body: dict) -> tuple[str, str]:
    meta = _meta(body)
    return meta.get("namespace", ""), meta.get("name", "")


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def is_paused(body: dict) -> bool:
    return (_meta(body).get("annotations") or {}).get(b.ANNOTATION_PAUSED, "").lower() == "true"


@dataclass(frozen=True)
class SecretInfo:
    version: str | None
    problem: str | None
    reason: str = creds_rules.MISSING  # the condition reason when there is a problem


def secret_problem(secret: dict | None, creds: m.CredentialsRef) -> SecretInfo:
    """Pure check of a Secret against what the account needs: present, non-empty keys, values a SIP stack can use
    (sipfleet.api.credentials). The problem names the Secret and the key, never a value."""
    if secret is None:
        return SecretInfo(None, f"Secret {creds.secret_name} not found")
    version = _meta(secret).get("resourceVersion")
    values: dict[str, bytes] = {}
    for k, v in (secret.get("data") or {}).items():
        try:
            values[k] = base64.b64decode(v or "", validate=True)
        except (binascii.Error, ValueError):
            return SecretInfo(version, f"Secret {creds.secret_name} key {k} is not base64", creds_rules.INVALID)
    values.update({k: (v or "").encode() for k, v in (secret.get("stringData") or {}).items()})
    missing = [k for k in (creds.username_key, creds.password_key) if not values.get(k)]
    if missing:
        return SecretInfo(version, f"Secret {creds.secret_name} has no (or an empty) key {', '.join(missing)}")
    for key, check in ((creds.username_key, creds_rules.username_problem),
                       (creds.password_key, creds_rules.password_problem)):
        why = check(values[key])
        if why:
            return SecretInfo(version, f"Secret {creds.secret_name} key {key} {why}", creds_rules.INVALID)
    return SecretInfo(version, None)


def pod_state(pod: dict, ever_ready: bool) -> cond.PodState:
    meta, status = _meta(pod), pod.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    restarts = sum(int(cs.get("restartCount") or 0) for cs in status.get("containerStatuses") or [])
    unschedulable = next((str(c.get("message") or "") for c in status.get("conditions") or []
                          if c.get("type") == "PodScheduled" and c.get("status") == "False"
                          and c.get("reason") == "Unschedulable"), None)
    return cond.PodState(
        unschedulable=unschedulable,
        name=meta.get("name"),
        phase=status.get("phase"),
        ready=ready,
        deleting=bool(meta.get("deletionTimestamp")),
        started_at=meta.get("creationTimestamp"),
        restarts=restarts,
        ever_ready=ever_ready or ready or restarts > 0,
    )


def namespace_terminating(e: ApiError) -> bool:
    """The apiserver refuses new objects in a namespace that is being deleted."""
    body = e.body if isinstance(e.body, dict) else {}
    details = body.get("details") or {}
    causes = " ".join(c.get("reason", "") for c in details.get("causes") or [])
    return e.status == 403 and (
        "NamespaceTerminating" in causes or "being terminated" in str(body.get("message", ""))
        or "unable to create new content" in str(body.get("message", ""))
    )


def namespace_matches(patterns, ns: str) -> bool:
    """Whether a namespace is watched (kopf's namespace patterns: names, globs, ``!`` negations; none = all)."""
    if not patterns:
        return True
    included = False
    for p in patterns:
        if p.startswith("!"):
            if fnmatch.fnmatchcase(ns, p[1:]):
                return False
        elif fnmatch.fnmatchcase(ns, p):
            included = True
    return included


#: kopf index shapes (handlers.py declares the indexes; a unit test passes plain dicts of lists)
PodsByAgent = Mapping[str, Iterable[cond.PodState]]
AccountsBySecret = Mapping[tuple[str, str], Collection[str]]


class Engine:
    def __init__(self, settings: Settings, client: Client | None = None, *, pods: PodsByAgent | None = None,
                 accounts_by_secret: AccountsBySecret | None = None):
        self.settings = settings
        self.client = client or Client(on_write=metrics.count_write)
        self.fleet: dict[str, pl.Agent] = {}
        self.accounts: dict[tuple[str, str], dict] = {}
        self.secrets: dict[tuple[str, str], SecretInfo] = {}
        #: kopf's indexes (live, read-only): agent -> its pods' states; (namespace, Secret) -> account names
        self.pods: PodsByAgent = pods if pods is not None else {}
        self.accounts_by_secret: AccountsBySecret = accounts_by_secret if accounts_by_secret is not None else {}
        self.seen_pod: dict[str, cond.PodState | None] = {}  # agent -> the pod its accounts' status was made from
        self.applied: dict[tuple[str, str, str], str] = {}
        self.hosted_names: dict[str, set[str]] = {}  # agent -> accounts its children were last applied for
        self.deployed: dict[str, dict] = {}  # agent -> its Deployment as last applied (its size class)
        self.synced_generation: dict[tuple[str, str], int] = {}
        self.reconciled: dict[tuple[str, str], str] = {}  # digest of the inputs last reconciled
        self.frozen: dict[tuple[str, str], b.HostedAccount] = {}  # last hosted form (used while paused)
        self.agent_locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.account_locks: dict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)
        self.restarted_pods: dict[str, float] = {}  # pod name -> loop time we deleted it
        # assignment ConfigMaps that could not be read at start, until their accounts are placed again
        self.unreadable: dict[tuple[str, str], stored.Unreadable] = {}
        self.loader: Loader[list[dict]] = Loader(scopes_for(settings.namespaces), self._read_scope,
                                                 self._apply_scope, on_error=self._load_failed)
        self._tasks: list[asyncio.Task] = []
        self.instance = settings.instance or socket.gethostname()

    # ---------------------------------------------------------------------------------------------- start / stop

    async def load(self) -> None:
        """Rebuild placements from the assignment ConfigMaps (the source of truth for who hosts what), scope by
        scope. Never raises: a scope that cannot be read is retried in the background while the others are
        served (loading.py); a ConfigMap that cannot be read is reported on the accounts it names."""
        await self.loader.start()

    async def _read_scope(self, scope: Scope) -> list[dict]:
        cms = await self.client.list("ConfigMap", scope, b.AGENT_SELECTOR)
        return [cm for cm in cms if self.watches(_ref(cm)[0])]

    async def _apply_scope(self, scope: Scope, cms: list[dict]) -> None:
        results = [stored.read_configmap(cm) for cm in cms]
        agents = [r for r in results if isinstance(r, stored.StoredAgent)]
        rec = pl.reconstruct(a.entry() for a in agents)
        for a in agents:
            if a.recovered:
                log.warning("assignment ConfigMap %s/%s was incomplete: %s (it is rewritten)", a.namespace, a.name,
                            a.recovered)
        for u in (r for r in results if isinstance(r, stored.Unreadable)):
            log.error("assignment ConfigMap %s/%s cannot be read (%s); its accounts %s are placed again",
                      u.namespace, u.name, u.reason, ", ".join(u.accounts) or "(none named)")
            metrics.RECONCILE_ERRORS.labels(where="load").inc()
            self.unreadable[(u.namespace, u.name)] = u
        empty = pl.empty_agents(rec.fleet)
        self.fleet.update(pl.without_empty(rec.fleet))
        log.info("loaded %s: %d agents hosting %d accounts (%d to correct, %d displaced, %d empty, %d unreadable)",
                 "the whole cluster" if scope is None else f"namespace {scope}", len(rec.fleet) - len(empty),
                 sum(len(a.accounts) for a in rec.fleet.values()), len(rec.dirty), len(rec.displaced), len(empty),
                 sum(1 for r in results if isinstance(r, stored.Unreadable)))
        metrics.AGENTS.set(len(self.fleet))
        try:
            for name in empty:  # nothing to host (its accounts were kept by another agent): remove it
                await self._delete_children(name, rec.fleet[name].namespace)
            for (ns, name), u in list(self.unreadable.items()):
                if not u.accounts and (scope is None or ns == scope):
                    await self._retire_unreadable(ns, name)
        except ApiError as e:  # the fleet is read; leftovers go with the next sweep or placement
            log.warning("could not remove an agent left without accounts: %s", e)

    def _load_failed(self, scope: Scope, error: str) -> None:
        metrics.RECONCILE_ERRORS.labels(where="load").inc()

    def watches(self, ns: str) -> bool:
        return namespace_matches(self.settings.namespaces, ns)

    def start_background(self) -> None:
        self._tasks.append(asyncio.create_task(self._ticker(), name="sipfleet-ticker"))

    async def stop(self) -> None:
        await self.loader.stop()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        await self.client.close()

    # ---------------------------------------------------------------------------------------------- caches

    def remember(self, body: dict) -> None:
        """Cache the newest version of an account (a late watch event must not undo a fresher patch response)."""
        ns, name = _ref(body)
        if not name:
            return
        old = self.accounts.get((ns, name))
        if old is not None and _meta(old).get("uid") == _meta(body).get("uid"):
            try:
                if int(_meta(body).get("resourceVersion")) < int(_meta(old).get("resourceVersion")):
                    return
            except (TypeError, ValueError):
                pass
        self.accounts[(ns, name)] = body

    def forget(self, ns: str, name: str) -> None:
        self.accounts.pop((ns, name), None)
        self.reconciled.pop((ns, name), None)
        self.synced_generation.pop((ns, name), None)
        self.frozen.pop((ns, name), None)

    async def check_secret(self, ns: str, creds: m.CredentialsRef, refresh: bool = True) -> SecretInfo:
        key = (ns, creds.secret_name)
        if refresh or key not in self.secrets:
            secret = await self.client.get("Secret", ns, creds.secret_name)
            self.secrets[key] = secret_problem(secret, creds)
        return self.secrets[key]

    async def account(self, ns: str, name: str) -> dict | None:
        body = self.accounts.get((ns, name))
        if body is None:
            body = await self.client.get("SipAccount", ns, name)
            if body is not None:
                self.remember(body)
        return body

    # ---------------------------------------------------------------------------------------------- placement

    @staticmethod
    def inputs_digest(body: dict) -> str:
        """What placement and the assignment depend on: spec, the user annotations, the ladder's token.
        (kopf's change detection sees spec changes only; annotations come through watch events.)"""
        annotations = _meta(body).get("annotations") or {}
        return _digest({
            "spec": body.get("spec"),
            "annotations": {k: annotations.get(k) for k in (b.ANNOTATION_PAUSED, b.ANNOTATION_REPAIR,
                                                            b.ANNOTATION_REREGISTER)},
            "ladder": ((body.get("status") or {}).get("ladder") or {}).get("token"),
        })

    def needs_reconcile(self, body: dict) -> bool:
        ns, name = _ref(body)
        if _meta(body).get("deletionTimestamp"):
            return False
        return self.reconciled.get((ns, name)) != self.inputs_digest(body)

    async def reconcile_account(self, body: dict) -> None:
        """create / update / resume: place the account and bring its agent's children in line.
        Raises ``NotLoaded`` while the account's namespace has not been read (kopf retries)."""
        ns, name = _ref(body)
        self.remember(body)
        await self.loader.wait(ns)
        digest = self.inputs_digest(body)
        if is_paused(body) or _meta(body).get("deletionTimestamp"):
            self.reconciled.pop((ns, name), None)  # un-pausing reconciles whatever changed meanwhile
            await self.refresh_status(ns, name)
            return
        spec = m.SipAccountSpec.model_validate(body.get("spec") or {})
        secret = await self.check_secret(ns, spec.credentials)
        where = pl.find(self.fleet, ns, name)
        if secret.problem and where is None:
            log.info("%s/%s: %s; waiting for the Secret", ns, name, secret.problem)
            self.reconciled[(ns, name)] = digest  # the Secret watch (and a slow retry) take it from here
            await self.refresh_status(ns, name)
            return
        plan = pl.place(self.fleet, pl.GroupKey.for_spec(ns, name, spec), name, pl.worker_key(spec),
                        self.settings.accounts_per_agent)
        self.fleet = plan.fleet
        if where != plan.agent:
            log.info("%s/%s placed on agent %s%s%s", ns, name, plan.agent, " (new)" if plan.created else "",
                     f" (moved from {where})" if where else "")
        metrics.AGENTS.set(len(self.fleet))
        for gone in sorted(plan.removed):
            await self.delete_agent(gone, ns)
        for agent in sorted(plan.changed | {plan.agent} - {None}):
            await self.sync_agent(agent)
        await self._tell_unreadable(body, plan.agent)
        gen = _meta(body).get("generation")
        if gen is not None:
            self.synced_generation[(ns, name)] = gen
        self.reconciled[(ns, name)] = digest
        await self.refresh_status(ns, name)

    async def remove_account(self, body: dict) -> None:
        """delete: take the account out of its agent (the agent unregisters it); empty agents go away."""
        ns, name = _ref(body)
        await self.loader.wait(ns)
        plan = pl.remove(self.fleet, ns, name)
        self.fleet = plan.fleet
        if plan.changed or plan.removed:
            log.info("%s/%s removed from agent %s", ns, name, next(iter(plan.changed | plan.removed)))
        metrics.AGENTS.set(len(self.fleet))
        self.forget(ns, name)
        try:
            for gone in sorted(plan.removed):
                await self.delete_agent(gone, ns)
            for agent in sorted(plan.changed):
                await self.sync_agent(agent)
        except ApiError as e:
            if not namespace_terminating(e):
                raise
            # the namespace is going away with everything in it: nothing left to update
            log.info("%s/%s removed while namespace %s terminates", ns, name, ns)

    async def hosted(self, ns: str, name: str) -> b.HostedAccount | None:
        body = await self.account(ns, name)
        if body is None:
            return None
        if is_paused(body) and (ns, name) in self.frozen:
            return self.frozen[(ns, name)]
        meta = _meta(body)
        try:
            spec = m.SipAccountSpec.model_validate(body.get("spec") or {})
        except ValidationError as e:
            log.error("%s/%s: invalid spec (%s)", ns, name, e.errors()[:1])
            return self.frozen.get((ns, name))
        info = self.secrets.get((ns, spec.credentials.secret_name))
        if info is None:
            info = await self.check_secret(ns, spec.credentials)
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
        self.frozen[(ns, name)] = h
        return h

    async def _tell_unreadable(self, body: dict, agent: str | None) -> None:
        """An account that an unreadable ConfigMap named gets one Warning event saying so, once it is placed;
        the unreadable agent is removed when none of its accounts still needs it."""
        ns, name = _ref(body)
        for (uns, uname), u in list(self.unreadable.items()):
            if uns != ns or name not in u.accounts:
                continue
            what = "it was rewritten" if uname == agent else f"the account was placed on agent {agent}"
            await self.event(body, "Warning", "AssignmentUnreadable",
                             f"the assignment ConfigMap {uname} that hosted this account could not be read at operator "
                             f"start ({u.reason}); {what}")
            await self._retire_unreadable(uns, uname)

    async def _retire_unreadable(self, ns: str, name: str) -> None:
        u = self.unreadable.get((ns, name))
        if u is None:
            return
        for account in u.accounts:
            if pl.find(self.fleet, ns, account) is None and await self.account(ns, account) is not None:
                return  # still to be placed (its resume handler will get here again, and tell it)
        del self.unreadable[(ns, name)]
        if name not in self.fleet:  # else placement re-used the name: its children were just rewritten
            await self._delete_children(name, ns)

    async def sync_agent(self, agent_name: str) -> None:
        """Server-side apply the children of one agent whose desired form changed (ConfigMap first)."""
        async with self.agent_locks[agent_name]:
            for _ in range(3):
                agent = self.fleet.get(agent_name)
                if agent is None:
                    return
                hosted, gone = [], []
                for n in agent.accounts:
                    h = await self.hosted(agent.namespace, n)
                    (hosted if h is not None else gone).append(h or n)
                if gone:  # deleted while we were not looking
                    for n in gone:
                        self.fleet = pl.remove(self.fleet, agent.namespace, n).fleet
                    if agent_name not in self.fleet:
                        await self._delete_children(agent_name, agent.namespace)
                        return
                    continue
                break
            else:
                return
            fetched: dict[str, dict | None] = {}
            deployed = self.deployed.get(agent_name)
            if deployed is None:  # not applied by this process yet: the size class the cluster has
                deployed = fetched["Deployment"] = await self.client.get("Deployment", agent.namespace, agent_name)
            size = b.size_to_apply(agent, self.settings, deployed)
            children = b.build_children(agent, hosted, self.settings, size)
            names = set(agent.accounts)
            if names - self.hosted_names.get(agent_name, set()):
                # accounts join: grant the agent access (Role) before it sees them in the assignment
                children.sort(key=lambda c: c["kind"] != "Role")
            for child in children:
                key = (child["kind"], agent.namespace, agent_name)
                digest = _digest(child)
                if self.applied.get(key) == digest:
                    continue
                if key not in self.applied:
                    # not applied by this process yet (it just started): read before writing, and skip the
                    # write when the object already is what we would apply
                    current = fetched[child["kind"]] if child["kind"] in fetched else await self.client.get(
                        child["kind"], agent.namespace, agent_name)
                    if b.unchanged(child, current, digest):
                        self.applied[key] = digest
                        if child["kind"] == "Deployment":
                            self.deployed[agent_name] = child
                        continue
                child["metadata"].setdefault("annotations", {})[b.ANNOTATION_APPLIED] = digest
                await self.client.apply(child)
                self.applied[key] = digest
                if child["kind"] == "Deployment":
                    self.deployed[agent_name] = child
            self.hosted_names[agent_name] = names

    async def delete_agent(self, agent_name: str, ns: str) -> None:
        async with self.agent_locks[agent_name]:
            if agent_name in self.fleet:
                return  # re-used meanwhile
            await self._delete_children(agent_name, ns)

    async def _delete_children(self, agent_name: str, ns: str) -> None:
        log.info("agent %s/%s has no accounts left: deleting its children", ns, agent_name)
        for kind in reversed(CHILD_KINDS):
            await self.client.delete(kind, ns, agent_name)
            self.applied.pop((kind, ns, agent_name), None)
        self.seen_pod.pop(agent_name, None)
        self.hosted_names.pop(agent_name, None)
        self.deployed.pop(agent_name, None)

    async def child_deleted(self, kind: str, ns: str, name: str) -> None:
        """A child vanished (someone deleted it): forget it was applied and re-create it if still needed."""
        self.applied.pop((kind, ns, name), None)
        if kind == "Deployment":
            self.deployed.pop(name, None)
        if name in self.fleet:
            await self.sync_agent(name)

    # ---------------------------------------------------------------------------------------------- secrets / pods

    async def on_secret(self, event_type: str, secret: dict) -> None:
        ns, sname = _ref(secret)
        users = []
        for aname in sorted(self.accounts_by_secret.get((ns, sname), ())):
            body = await self.account(ns, aname)
            if body is not None:
                users.append(((ns, aname), body))
        changed = False
        for i, ((ans, aname), body) in enumerate(users):
            try:
                spec = m.SipAccountSpec.model_validate(body.get("spec") or {})
            except ValidationError:
                continue
            new = secret_problem(None if event_type == "DELETED" else secret, spec.credentials)
            if i == 0:
                changed = self.secrets.get((ns, sname)) != new
                self.secrets[(ns, sname)] = new
            if not changed:
                return
            agent = pl.find(self.fleet, ans, aname)
            if agent is None and new.problem is None:
                if self.loader.is_loaded(ans):  # otherwise placed once its namespace is read
                    await self.reconcile_account(body)  # placed now that it can register
                continue
            if agent is not None and new.problem is None:
                await self.sync_agent(agent)  # new secretVersion: the agent re-reads the credentials
            await self.refresh_status(ans, aname)

    async def on_pod(self, agent: str) -> None:
        """One of the agent's pods changed (kopf's pod index has it already): when the pod its accounts' status is
        made from changed, refresh their status."""
        self._count_pods()
        now_pod = self.pod_for(agent)
        if agent in self.seen_pod and self.seen_pod[agent] == now_pod:
            return
        self.seen_pod[agent] = now_pod
        a = self.fleet.get(agent)
        if a is not None:
            for n in a.accounts:
                await self.refresh_status(a.namespace, n)

    def pod_for(self, agent: str | None) -> cond.PodState | None:
        """The agent pod an account's status speaks of: the newest one that is not being deleted."""
        if not agent:
            return None
        pods = list(self.pods.get(agent, ()))
        if not pods:
            return None
        return sorted(pods, key=lambda p: (not p.deleting, p.started_at or "", p.name or ""))[-1]

    def _count_pods(self) -> None:
        states = [p for agent in list(self.pods) for p in self.pods.get(agent, ())]
        ready = sum(1 for p in states if p.ready)
        metrics.AGENT_PODS.labels(ready="true").set(ready)
        metrics.AGENT_PODS.labels(ready="false").set(len(states) - ready)

    # ---------------------------------------------------------------------------------------------- status

    async def refresh_status(self, ns: str, name: str) -> None:
        """Recompute conditions and run the ladder; patch status only when it changes; carry out actions."""
        async with self.account_locks[(ns, name)]:
            body = self.accounts.get((ns, name))
            if body is None or _meta(body).get("deletionTimestamp"):
                return
            try:
                spec = m.SipAccountSpec.model_validate(body.get("spec") or {})
                status = m.SipAccountStatus.model_validate(body.get("status") or {})
            except ValidationError as e:
                log.warning("%s/%s: cannot read spec/status: %s", ns, name, e.errors()[:1])
                metrics.RECONCILE_ERRORS.labels(where="status-parse").inc()
                return
            t = now()
            paused = is_paused(body)
            placed = pl.find(self.fleet, ns, name)
            pod = self.pod_for(placed)
            info = self.secrets.get((ns, spec.credentials.secret_name))
            step = None
            if placed and not paused:
                step = lad.step(lad.Inputs(
                    drift=spec.drift, route=status.route, ladder=status.ladder, pod=pod, now=t,
                    backoff_cap_seconds=self.settings.degraded_backoff_cap_seconds,
                ))
            new_ladder = step.ladder if step is not None else status.ladder
            gen = _meta(body).get("generation")
            conds = cond.compute(
                cond.Inputs(
                    generation=gen, placed_in=placed, credentials_problem=info.problem if info else None,
                    credentials_reason=info.reason if info else creds_rules.MISSING,
                    pod=pod, status=status.model_copy(update={"ladder": new_ladder}), paused=paused,
                ),
                t,
            )
            patch: dict[str, Any] = {}
            if conds != list(status.conditions):
                patch["conditions"] = cond.conditions_api(conds)
            if new_ladder != status.ladder and new_ladder is not None:
                patch["ladder"] = new_ladder.model_dump(mode="json", by_alias=True)
            synced = self.synced_generation.get((ns, name))
            if synced is not None and synced != status.observed_generation:
                patch["observedGeneration"] = synced
            if patch:
                try:
                    fresh = await self.client.merge_patch("SipAccount", ns, name, {"status": patch}, sub="status")
                except ApiError as e:
                    if e.status == 404:
                        return
                    raise
                metrics.STATUS_PATCHES.inc()
                self.remember(fresh)
            if step is not None and step.actions:
                await self._act(body, placed, step.actions)

    async def _act(self, body: dict, agent: str | None, actions) -> None:
        ns, name = _ref(body)
        # events are best effort and nobody waits for them: post them after the repair request / pod restart
        # is on its way (one apiserver round trip less between drift seen and the new token reaching the agent)
        for a in sorted(actions, key=lambda a: isinstance(a, lad.Event)):
            if isinstance(a, lad.DriftSeen):
                metrics.DRIFT_SEEN.inc()
            elif isinstance(a, lad.Repaired):
                metrics.DRIFT_REPAIRED.labels(method=a.method).inc()
                metrics.REPAIR_SECONDS.observe(a.duration_ms / 1000.0)
            elif isinstance(a, lad.RequestRepair):
                if agent:
                    await self.sync_agent(agent)  # the new token is in status.ladder now: it goes to the agent
            elif isinstance(a, lad.RestartPod):
                await self._restart_pod(ns, a.pod)
            elif isinstance(a, lad.Event):
                log.log(logging.WARNING if a.type == "Warning" else logging.INFO, "%s/%s %s: %s", ns, name,
                        a.reason, a.message)
                await self.event(body, a.type, a.reason, a.message)

    async def _restart_pod(self, ns: str, pod: str) -> None:
        loop = asyncio.get_running_loop()
        last = self.restarted_pods.get(pod)
        if last is not None and loop.time() - last < 60:
            return  # another account of the same agent asked for this restart already
        self.restarted_pods[pod] = loop.time()
        metrics.POD_RESTARTS.inc()
        await self.client.delete("Pod", ns, pod)

    async def event(self, body: dict, type_: str, reason: str, message: str) -> None:
        ns, name = _ref(body)
        meta = _meta(body)
        ts = cond.rfc3339(now())
        ev = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{name}.", "namespace": ns},
            "involvedObject": {
                "apiVersion": m.API_VERSION, "kind": m.KIND, "name": name, "namespace": ns, "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "sipfleet-operator"},
            "reportingComponent": "sipfleet.io/operator",
            "reportingInstance": self.instance[:128],
            "firstTimestamp": ts,
            "lastTimestamp": ts,
            "count": 1,
        }
        try:
            await self.client.create(ev)
        except ApiError as e:  # events are best effort
            log.warning("could not post event %s for %s/%s: %s", reason, ns, name, e)

    # ---------------------------------------------------------------------------------------------- periodic work

    async def _ticker(self) -> None:
        loop = asyncio.get_running_loop()
        last_slow = loop.time()
        last_sweep = loop.time()
        last_ns = loop.time()
        while True:
            await asyncio.sleep(self.settings.ladder_tick_seconds)
            try:
                for (ns, name), body in list(self.accounts.items()):
                    st = body.get("status") or {}
                    route, ladder = st.get("route") or {}, st.get("ladder") or {}
                    if route.get("inSync") is False or ladder.get("phase") not in (None, "Idle"):
                        await self.refresh_status(ns, name)
                if loop.time() - last_slow > 30:
                    last_slow = loop.time()
                    await self._retry_unplaced()
                    self._count_accounts()
                if loop.time() - last_ns > 5:
                    last_ns = loop.time()
                    await self._forget_terminating_namespaces()
                if loop.time() - last_sweep > 300:
                    last_sweep = loop.time()
                    await self._sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                metrics.RECONCILE_ERRORS.labels(where="ticker").inc()
                log.exception("periodic work failed")

    async def _retry_unplaced(self) -> None:
        for (ns, name), body in list(self.accounts.items()):
            if (pl.find(self.fleet, ns, name) is None and not is_paused(body) and not _meta(body).get("deletionTimestamp")
                    and self.loader.is_loaded(ns)):
                await self.reconcile_account(body)

    async def _forget_terminating_namespaces(self) -> None:
        """Namespace-scoped kopf stops watching a namespace as soon as it is being deleted (kopf's namespace
        observer), so no DELETED event may come for its accounts. Their objects go with the namespace (nothing of
        ours holds it: no finalizers) and the agents unregister on SIGTERM: forget the namespace's fleet."""
        if not self.settings.namespaces:
            return  # cluster-wide: kopf keeps watching and sees every account go
        known = {k[0] for k in self.accounts} | {a.namespace for a in self.fleet.values()}
        if not known:
            return
        try:  # one list for all of them, not a get per namespace every few seconds
            listed = {_meta(n)["name"]: n for n in await self.client.list("Namespace")}
        except ApiError as e:
            if e.status == 403:  # no read access to namespaces: kopf then keeps watching them anyway
                return
            raise
        for ns in sorted(known):
            obj = listed.get(ns)
            if obj is not None and not _meta(obj).get("deletionTimestamp"):
                continue
            log.info("namespace %s is %s: forgetting its SipAccounts and agents", ns,
                     "gone" if obj is None else "being deleted")
            self.fleet = {n: a for n, a in self.fleet.items() if a.namespace != ns}
            for key in [k for k in self.accounts if k[0] == ns]:
                self.forget(*key)
            metrics.AGENTS.set(len(self.fleet))

    async def _sweep(self) -> None:
        """Agents hosting accounts that no longer exist (deleted while no operator ran): fix them."""
        for agent in list(self.fleet.values()):
            for n in agent.accounts:
                if (agent.namespace, n) not in self.accounts:
                    if await self.client.get("SipAccount", agent.namespace, n) is None:
                        await self.remove_account({"metadata": {"namespace": agent.namespace, "name": n}})

    def _count_accounts(self) -> None:
        counts: dict[tuple[str, str], int] = defaultdict(int)
        for body in list(self.accounts.values()):
            for c in (body.get("status") or {}).get("conditions") or []:
                counts[(c.get("type"), c.get("status"))] += 1
        for t in cond.TYPES:
            for s in ("True", "False", "Unknown"):
                metrics.ACCOUNTS.labels(condition=t, status=s).set(counts.get((t, s), 0))
