"""The operator's state in memory, in one object that lives in kopf's operator memo (handlers.py).

It promises:

* ``fleet``: which agent hosts which account - rebuilt from the assignment ConfigMaps at start (restore.py)
  before any account is placed, then changed by placement decisions only;
* one record per SipAccount (``accounts``), created when a version of it is seen and dropped when it goes:
  its newest body (a late watch event never undoes a fresher patch response), the generation last synced to
  its agent, the form last handed to its agent (used while it is paused) and when the ladder wants it back;
* one record per agent (``agents``): a digest of every child last applied (an unchanged child is never written
  again), the accounts and the Deployment last applied, the pod its accounts' status was last made from;
* the Secrets' verdicts (versions and problems, never values);
* read-only views of kopf's indexes: the agent pods (``pods``) and which accounts use which Secret.

Reads that miss the cache go to the apiserver (``account``, ``check_secret``); nothing here writes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Collection, Iterable, Mapping

from sipfleet.api import models as m
from sipfleet.api.budget import per_account_rate, registrar_key

from . import builders as b
from . import conditions as cond
from . import metrics
from . import placement as pl
from . import stored
from .config import Settings
from .k8s import Client
from .observed import Key, SecretInfo, current_pod, meta, namespace_matches, ref, secret_problem

#: the shapes of kopf's indexes (handlers.py declares them; unit tests pass plain dicts of lists)
PodsByAgent = Mapping[str, Iterable[cond.PodState]]
AccountsBySecret = Mapping[Key, Collection[str]]


@dataclass
class AccountRecord:
    body: dict
    synced_generation: int | None = None  # the generation its agent's children were last built from
    reconciled: str | None = None  # observed.inputs_digest of the body last reconciled
    frozen: b.HostedAccount | None = None  # the form last handed to its agent (kept while paused)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one status refresh at a time


@dataclass
class AgentRecord:
    applied: dict[str, str] = field(default_factory=dict)  # child kind -> digest last applied
    hosted_names: frozenset[str] = frozenset()  # accounts its children were last applied for
    deployed: dict | None = None  # its Deployment as last applied (its size class)
    seen_pod: cond.PodState | None = None  # the pod its accounts' status was last refreshed for
    pod_seen: bool = False  # whether seen_pod was set
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one pass over its children at a time
    next_pass: asyncio.Future | None = None  # a pass waiting for the lock (children.py joins it)
    first_pass_at: float | None = None  # loop time of its first pass (while it has no Deployment)
    last_join_at: float | None = None  # loop time an account last joined it
    deploy_timer: asyncio.TimerHandle | None = None  # the pass that creates its deferred first Deployment
    rates: dict[str, float | None] | None = None  # REGISTER budget shares of its registrars at its last pass

    def forget_children(self) -> None:
        self.applied.clear()
        self.hosted_names = frozenset()
        self.deployed = None
        self.seen_pod, self.pod_seen = None, False
        self.first_pass_at = self.last_join_at = None
        self.rates = None
        if self.deploy_timer is not None:
            self.deploy_timer.cancel()
            self.deploy_timer = None


class State:
    def __init__(self, settings: Settings, client: Client, *, pods: PodsByAgent | None = None,
                 accounts_by_secret: AccountsBySecret | None = None):
        self.settings = settings
        self.client = client
        self.fleet: dict[str, pl.Agent] = {}
        self.accounts: dict[Key, AccountRecord] = {}
        self.agents: dict[str, AgentRecord] = {}
        self.secrets: dict[Key, SecretInfo] = {}
        self.pods: PodsByAgent = pods if pods is not None else {}
        self.accounts_by_secret: AccountsBySecret = accounts_by_secret if accounts_by_secret is not None else {}
        self.restarted_pods: dict[str, float] = {}  # pod name -> loop time the ladder deleted it
        #: namespaces forgotten while being deleted (namespaced mode), by the uid of the Namespace then: a late
        #: watch event of theirs is not an account to place (background.forget_terminating_namespaces)
        self.terminating: dict[str, str | None] = {}
        #: assignment ConfigMaps that could not be read at start, until their accounts are placed again
        self.unreadable: dict[Key, stored.Unreadable] = {}
        #: each known account's registrar key and the accounts per registrar (the REGISTER budget's split)
        self.registrar_of: dict[Key, str] = {}
        self.per_registrar: dict[str, int] = {}

    def watches(self, ns: str) -> bool:
        return namespace_matches(self.settings.namespaces, ns)

    # ---- fleet

    def set_fleet(self, fleet: dict[str, pl.Agent]) -> None:
        self.fleet = fleet
        metrics.AGENTS.set(len(fleet))

    def agent(self, name: str) -> AgentRecord:
        rec = self.agents.get(name)
        if rec is None:
            rec = self.agents[name] = AgentRecord()
        return rec

    # ---- accounts

    def remember(self, body: dict) -> None:
        """Cache the newest version of an account (a late watch event must not undo a fresher patch response),
        without its ``managedFields`` (nearly half of a SipAccount's bytes, never read here)."""
        ns, name = ref(body)
        if not name or ns in self.terminating:
            return
        if "managedFields" in meta(body):
            body = {**body, "metadata": {k: v for k, v in meta(body).items() if k != "managedFields"}}
        rec = self.accounts.get((ns, name))
        if rec is None:
            self.accounts[(ns, name)] = AccountRecord(body)
            self._count_registrar((ns, name), (body.get("spec") or {}).get("registrar"))
            return
        old = rec.body
        if meta(old).get("uid") == meta(body).get("uid"):
            try:
                if int(meta(body).get("resourceVersion")) < int(meta(old).get("resourceVersion")):
                    return
            except (TypeError, ValueError):
                pass
        rec.body = body
        self._count_registrar((ns, name), (body.get("spec") or {}).get("registrar"))

    def forget(self, ns: str, name: str) -> None:
        self.accounts.pop((ns, name), None)
        self._count_registrar((ns, name), None)

    def _count_registrar(self, key: Key, registrar: object) -> None:
        new = registrar_key(registrar) if isinstance(registrar, str) and registrar else None
        old = self.registrar_of.get(key)
        if new == old:
            return
        if old is not None:
            self.per_registrar[old] -= 1
            if not self.per_registrar[old]:
                del self.per_registrar[old]
            del self.registrar_of[key]
        if new is not None:
            self.registrar_of[key] = new
            self.per_registrar[new] = self.per_registrar.get(new, 0) + 1

    def seed_registrars(self, ns: str, pairs) -> None:  # noqa: ANN001 - (account name, registrar URI) pairs
        """At start, from the assignments: the accounts they host, counted per registrar before their bodies come
        (a pass made while they come in one by one would otherwise hand out the shares of a smaller fleet)."""
        for name, registrar in pairs:
            if (ns, name) not in self.registrar_of:
                self._count_registrar((ns, name), registrar)

    def register_rates(self) -> dict[str, float]:
        """Registrar key -> each of its accounts' share of the REGISTER budget ({}: no budget)."""
        limit = self.settings.register_rate_limit
        if limit <= 0:
            return {}
        return {reg: rate for reg, n in self.per_registrar.items()
                if (rate := per_account_rate(limit, n)) is not None}

    def body(self, ns: str, name: str) -> dict | None:
        rec = self.accounts.get((ns, name))
        return rec.body if rec is not None else None

    async def account(self, ns: str, name: str) -> dict | None:
        """The account's newest known body; read from the apiserver when not cached (None: it does not exist)."""
        body = self.body(ns, name)
        if body is None:
            body = await self.client.get("SipAccount", ns, name)
            if body is not None:
                self.remember(body)
        return body

    # ---- Secrets

    async def check_secret(self, ns: str, creds: m.CredentialsRef, refresh: bool = True) -> SecretInfo:
        key = (ns, creds.secret_name)
        if refresh or key not in self.secrets:
            secret = await self.client.get("Secret", ns, creds.secret_name)
            self.secrets[key] = secret_problem(secret, creds)
        return self.secrets[key]

    def secret_users(self, ns: str, secret: str) -> list[str]:
        return sorted(self.accounts_by_secret.get((ns, secret), ()))

    # ---- pods (kopf's index)

    def pod_for(self, agent: str | None) -> cond.PodState | None:
        return current_pod(self.pods.get(agent, ())) if agent else None

    def count_pods(self) -> None:
        states = [p for agent in list(self.pods) for p in self.pods.get(agent, ())]
        ready = sum(1 for p in states if p.ready)
        metrics.AGENT_PODS.labels(ready="true").set(ready)
        metrics.AGENT_PODS.labels(ready="false").set(len(states) - ready)
