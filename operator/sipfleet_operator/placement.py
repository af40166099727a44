"""Placement: which agent pod hosts which SipAccount. Pure functions, no I/O.

Rules (docs/architecture.md, "Placement"):

* accounts can share an agent pod when they are in the same namespace (the group key is namespace + dedicated);
  inside the pod the agent runs one pjsua2 worker per ``MAX_ACCOUNTS_PER_WORKER`` accounts of one worker key
  (transport, route, routeMode: prevent mode's outbound proxy is per process), at most ``MAX_WORKERS_PER_AGENT``;
* ``spec.agent.dedicated`` accounts get an agent of their own;
* a new account joins an agent only while it holds fewer than ``limit`` accounts (the operator's
  ``accountsPerAgent``, at most ``MAX_ACCOUNTS_PER_AGENT``) and the account fits its workers
  (``models.workers_needed``: 8 accounts of 8 different routes fill an agent);
* agent names are deterministic: ``sipfleet-agent-<hash(group)[:8]>-<n>`` with the smallest free ``n``, so an
  operator restart (or two operators racing) never invents a second name for the same slot; agents made by an
  older operator (whose group key also held transport, route and routeMode) keep their names;
* a new account goes into the fullest agent of its group that still has room; placed accounts never move (a
  move re-REGISTERs them), except when they must: their group key changes, or their worker key changes and the
  agent cannot run the workers that needs. Lowering ``limit`` moves nobody (it only stops agents taking more);
* agents that empty out are removed (their children deleted).

The fleet is a plain mapping ``agent name -> Agent``; every function returns a new mapping and a plan.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import Iterable, Mapping

from sipfleet.api import models as m

AGENT_PREFIX = "sipfleet-agent-"

#: What accounts must share to share a pjsua2 worker: ``AgentAccount.worker_key()`` (transport, route, routeMode,
#: and for a tls account its TLS settings).
WorkerKey = tuple


def worker_key(spec: m.SipAccountSpec) -> WorkerKey:
    tls = m.AgentTls.from_spec(spec.tls) if spec.tls is not None else None
    return (spec.transport, tuple(spec.route), spec.route_mode) + m.tls_key(spec.transport, tls)


@dataclass(frozen=True)
class GroupKey:
    """What accounts must share to share an agent pod. Not orderable on its own (``dedicated`` is ``None`` for
    shared agents): sort by :attr:`sort_key`, which orders every key totally."""

    namespace: str
    dedicated: str | None = None  # account name when the account wants an agent of its own

    @classmethod
    def for_spec(cls, namespace: str, name: str, spec: m.SipAccountSpec) -> "GroupKey":
        return cls(namespace=namespace, dedicated=name if spec.agent.dedicated else None)

    @property
    def capacity(self) -> int:
        """The hard ceiling of accounts per agent of this key (``accountsPerAgent`` can only lower it)."""
        return 1 if self.dedicated else m.MAX_ACCOUNTS_PER_AGENT

    def to_json(self) -> str:
        return json.dumps({"namespace": self.namespace, "dedicated": self.dedicated}, sort_keys=True,
                          separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "GroupKey":
        """Decode :meth:`to_json`'s form, or an older operator's (which also held transport, route and routeMode,
        and may lack ``dedicated``: shared). Raises ``ValueError`` naming the field when it is not a key any
        version could have written; extra fields are ignored."""
        try:
            d = json.loads(text)
        except (TypeError, ValueError) as e:
            raise ValueError(f"not JSON ({e})") from None
        if not isinstance(d, dict):
            raise ValueError("not a JSON object")
        if not isinstance(d.get("namespace"), str) or not d["namespace"]:
            raise ValueError("namespace is missing or not a string")
        dedicated = d.get("dedicated")
        if dedicated is not None and (not isinstance(dedicated, str) or not dedicated):
            raise ValueError("dedicated is neither null nor an account name")
        return cls(namespace=d["namespace"], dedicated=dedicated)

    @property
    def sort_key(self) -> tuple[str, str]:
        """A total order over keys (shared agents, ``dedicated`` None, sort before dedicated ones)."""
        return (self.namespace, self.dedicated or "")

    @property
    def id(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:8]


def legacy_key_id(namespace: str, transport: str, route: Iterable[str], route_mode: str, dedicated: str | None) -> str:
    """The id an older operator (group key namespace, transport, route, routeMode, dedicated) put into the names
    of its agents: lets a ConfigMap without its key annotation be recognised."""
    text = json.dumps({"namespace": namespace, "transport": transport, "route": list(route), "routeMode": route_mode,
                       "dedicated": dedicated}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def agent_name(key: GroupKey, n: int) -> str:
    return f"{AGENT_PREFIX}{key.id}-{n}"


def agent_index(name: str) -> int | None:
    try:
        n = int(name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return None
    return n if n >= 0 else None


def agent_key_id(name: str) -> str | None:
    """The group-key hash an agent name carries (``sipfleet-agent-<id>-<n>``), or None."""
    if not name.startswith(AGENT_PREFIX):
        return None
    parts = name[len(AGENT_PREFIX):].split("-")
    return parts[0] if len(parts) == 2 and len(parts[0]) == 8 and agent_index(name) is not None else None


class _Shape:
    """What ``models.workers_needed`` looks at: an account's worker key."""

    __slots__ = ("key",)

    def __init__(self, key: WorkerKey | tuple):
        self.key = key

    def worker_key(self) -> WorkerKey | tuple:
        return self.key


def workers_for(accounts: Iterable[str], shapes: Mapping[str, WorkerKey]) -> int:
    """Workers the agent needs for ``accounts``; an account of unknown shape counts as a key of its own."""
    return m.workers_needed([_Shape(shapes.get(a) or ("?", a)) for a in accounts])  # type: ignore[arg-type]


@dataclass(frozen=True)
class Agent:
    name: str
    key: GroupKey
    accounts: tuple[str, ...] = ()  # account names (all in key.namespace), sorted
    #: (account, worker key) for the accounts whose worker key is known, sorted by account
    shapes: tuple[tuple[str, WorkerKey], ...] = ()

    @property
    def namespace(self) -> str:
        return self.key.namespace

    @property
    def shape_map(self) -> dict[str, WorkerKey]:
        return dict(self.shapes)

    @property
    def workers(self) -> int:
        return workers_for(self.accounts, self.shape_map)

    def with_accounts(self, accounts: Iterable[str], shapes: Mapping[str, WorkerKey]) -> "Agent":
        names = tuple(sorted(set(accounts)))
        return replace(self, accounts=names, shapes=tuple((n, shapes[n]) for n in names if n in shapes))

    def fits(self, name: str, shape: WorkerKey, limit: int) -> bool:
        """Whether ``name`` of ``shape`` may join (or, already here, change to ``shape``) under ``limit``."""
        others = [a for a in self.accounts if a != name]
        if len(others) + 1 > min(limit, self.key.capacity):
            return False
        return workers_for(others + [name], {**self.shape_map, name: shape}) <= m.MAX_WORKERS_PER_AGENT


Fleet = Mapping[str, Agent]


@dataclass(frozen=True)
class Plan:
    """What a placement decision changes. ``changed`` agents need their ConfigMap/Role/owners rewritten,
    ``created`` agents need all their children, ``removed`` agents had all their accounts leave."""

    fleet: dict[str, Agent]
    agent: str | None = None
    created: frozenset[str] = frozenset()
    changed: frozenset[str] = frozenset()
    removed: frozenset[str] = frozenset()

    @property
    def noop(self) -> bool:
        return not (self.created or self.changed or self.removed)


def find(fleet: Fleet, namespace: str, name: str) -> str | None:
    for agent in fleet.values():
        if agent.namespace == namespace and name in agent.accounts:
            return agent.name
    return None


def remove(fleet: Fleet, namespace: str, name: str) -> Plan:
    """Take an account out of its agent; an agent left empty is removed."""
    new = dict(fleet)
    where = find(fleet, namespace, name)
    if where is None:
        return Plan(fleet=new)
    agent = new[where]
    remaining = [a for a in agent.accounts if a != name]
    if remaining:
        new[where] = agent.with_accounts(remaining, agent.shape_map)
        return Plan(fleet=new, changed=frozenset({where}))
    del new[where]
    return Plan(fleet=new, removed=frozenset({where}))


def place(fleet: Fleet, key: GroupKey, name: str, shape: WorkerKey, limit: int = m.MAX_ACCOUNTS_PER_AGENT) -> Plan:
    """Place account ``name`` (namespace ``key.namespace``, worker key ``shape``) into an agent of its group
    holding fewer than ``limit`` accounts.

    Already placed in an agent of the same group: it stays, even when its worker key changed, as long as the agent
    can run the workers that needs (the agent restarts that worker only); otherwise, or when its group changed, it
    leaves that agent first.
    """
    where = find(fleet, key.namespace, name)
    if where is not None and fleet[where].key == key:
        agent = fleet[where]
        if agent.shape_map.get(name) == shape:
            return Plan(fleet=dict(fleet), agent=where)
        if agent.fits(name, shape, m.MAX_ACCOUNTS_PER_AGENT):  # staying is never refused for the soft limit
            new = dict(fleet)
            new[where] = agent.with_accounts(agent.accounts, {**agent.shape_map, name: shape})
            return Plan(fleet=new, agent=where, changed=frozenset({where}))
    removed: frozenset[str] = frozenset()
    changed: frozenset[str] = frozenset()
    if where is not None:
        left = remove(fleet, key.namespace, name)
        fleet, removed, changed = left.fleet, left.removed, left.changed
    new = dict(fleet)
    candidates = [a for a in new.values() if a.key == key and a.fits(name, shape, limit)]
    if candidates:
        # Fullest first (packs densely, lets emptier agents drain), then the one that needs no new worker, then by
        # index for determinism.
        def rank(a: Agent) -> tuple:
            grows = workers_for([*a.accounts, name], {**a.shape_map, name: shape}) > a.workers
            return (-len(a.accounts), grows, agent_index(a.name) or 0, a.name)

        target = min(candidates, key=rank)
        new[target.name] = target.with_accounts([*target.accounts, name], {**target.shape_map, name: shape})
        return Plan(fleet=new, agent=target.name, changed=changed | {target.name}, removed=removed)
    used = {agent_index(n) for n in [*new, *removed] if agent_key_id(n) == key.id}
    n = 0
    while n in used or agent_name(key, n) in new:
        n += 1
    created = agent_name(key, n)
    new[created] = Agent(name=created, key=key).with_accounts([name], {name: shape})
    return Plan(
        fleet=new, agent=created, created=frozenset({created}), changed=changed | {created}, removed=removed
    )


@dataclass(frozen=True)
class Reconstruction:
    fleet: dict[str, Agent]
    # agents whose stored assignment had to be corrected (duplicates dropped, over capacity, bad key)
    dirty: frozenset[str] = frozenset()
    # (namespace, name) of accounts that were dropped from an agent and need placing again
    displaced: frozenset[tuple[str, str]] = frozenset()


Stored = tuple[str, GroupKey, Iterable[str], Mapping[str, WorkerKey]]


def reconstruct(stored: Iterable[Stored]) -> Reconstruction:
    """Rebuild the fleet from what the assignment ConfigMaps say (name, group key, account names, their worker
    keys).

    The ConfigMaps are the source of truth. If an operator died half-way through a move, an account can appear
    twice: the first agent in (key, index, name) order keeps it. An agent keeps the first names in order while
    they fit the hard limits (``MAX_ACCOUNTS_PER_AGENT`` accounts, ``MAX_WORKERS_PER_AGENT`` workers; not the
    soft ``accountsPerAgent``: nobody moves for that); a dedicated agent keeps only its own account; an agent name
    seen twice keeps its first entry. Never raises for any input of the declared types, and every account named
    anywhere ends up exactly once, either in ``fleet`` or in ``displaced``.
    """
    fleet: dict[str, Agent] = {}
    seen: set[tuple[str, str]] = set()
    dirty: set[str] = set()
    displaced: set[tuple[str, str]] = set()

    def order(entry: tuple) -> tuple:
        index = agent_index(entry[0])
        return (entry[1].sort_key, -1 if index is None else index, entry[0])

    entries = [(n, k, list(a), dict(s)) for n, k, a, s in stored]
    for name, key, accounts, shapes in sorted(entries, key=order):
        if name in fleet:  # the same agent twice (cannot come from one cluster, but keep the promise)
            dirty.add(name)
            displaced.update((key.namespace, a) for a in accounts)
            continue
        if len(set(accounts)) != len(accounts):
            dirty.add(name)
        agent = Agent(name=name, key=key)
        keep: list[str] = []
        for account in dict.fromkeys(accounts):
            ref = (key.namespace, account)
            fits = len(keep) < key.capacity and workers_for([*keep, account], shapes) <= m.MAX_WORKERS_PER_AGENT
            if ref in seen or not fits or (key.dedicated and key.dedicated != account):
                dirty.add(name)
                if ref not in seen:
                    displaced.add(ref)
                continue
            seen.add(ref)
            keep.append(account)
        fleet[name] = agent.with_accounts(keep, shapes)
    displaced -= seen
    return Reconstruction(fleet=fleet, dirty=frozenset(dirty), displaced=frozenset(displaced))


def empty_agents(fleet: Fleet) -> list[str]:
    return sorted(a.name for a in fleet.values() if not a.accounts)


def without_empty(fleet: Fleet) -> dict[str, Agent]:
    return {n: a for n, a in fleet.items() if a.accounts}
