"""Placement: which agent hosts which SipAccount. Pure functions, no I/O.

Rules (docs/architecture.md):

* accounts can share an agent only when namespace, transport, route and routeMode are equal (the route is the
  agent process' global outbound proxy in ``prevent`` mode, so it is per process);
* ``spec.agent.dedicated`` accounts get an agent of their own;
* at most ``MAX_ACCOUNTS_PER_AGENT`` accounts per agent (pjsua's PJSUA_MAX_ACC);
* agent names are deterministic: ``sipfleet-agent-<hash(group)[:8]>-<n>`` with the smallest free ``n``, so an
  operator restart (or two operators racing) never invents a second name for the same slot;
* a new account goes into the fullest agent of its group that still has room; placed accounts never move
  (a move would re-REGISTER them), except when their own group key changes;
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


@dataclass(frozen=True)
class GroupKey:
    """What accounts must share to share an agent. Not orderable on its own (``dedicated`` is ``None`` for
    shared agents): sort by :attr:`sort_key`, which orders every key totally."""

    namespace: str
    transport: str
    route: tuple[str, ...]
    route_mode: str
    dedicated: str | None = None  # account name when the account wants an agent of its own

    @classmethod
    def for_spec(cls, namespace: str, name: str, spec: m.SipAccountSpec) -> "GroupKey":
        return cls(
            namespace=namespace,
            transport=spec.transport,
            route=tuple(spec.route),
            route_mode=spec.route_mode,
            dedicated=name if spec.agent.dedicated else None,
        )

    @property
    def capacity(self) -> int:
        return 1 if self.dedicated else m.MAX_ACCOUNTS_PER_WORKER

    def to_json(self) -> str:
        return json.dumps(
            {
                "namespace": self.namespace,
                "transport": self.transport,
                "route": list(self.route),
                "routeMode": self.route_mode,
                "dedicated": self.dedicated,
            },
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> "GroupKey":
        """Decode :meth:`to_json`'s form. Raises ``ValueError`` naming the field when it is not a key this
        operator (or an older one: ``dedicated`` absent means shared) could have written; extra fields are
        ignored."""
        try:
            d = json.loads(text)
        except (TypeError, ValueError) as e:
            raise ValueError(f"not JSON ({e})") from None
        if not isinstance(d, dict):
            raise ValueError("not a JSON object")
        for f in ("namespace", "transport", "routeMode"):
            if not isinstance(d.get(f), str) or not d[f]:
                raise ValueError(f"{f} is missing or not a string")
        route = d.get("route")
        if not isinstance(route, list) or not all(isinstance(r, str) and r for r in route):
            raise ValueError("route is missing or not a list of strings")
        dedicated = d.get("dedicated")
        if dedicated is not None and (not isinstance(dedicated, str) or not dedicated):
            raise ValueError("dedicated is neither null nor an account name")
        return cls(
            namespace=d["namespace"],
            transport=d["transport"],
            route=tuple(route),
            route_mode=d["routeMode"],
            dedicated=dedicated,
        )

    @property
    def sort_key(self) -> tuple[str, str, tuple[str, ...], str, str]:
        """A total order over keys (shared agents, ``dedicated`` None, sort before dedicated ones)."""
        return (self.namespace, self.transport, self.route, self.route_mode, self.dedicated or "")

    @property
    def id(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:8]


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


@dataclass(frozen=True)
class Agent:
    name: str
    key: GroupKey
    accounts: tuple[str, ...] = ()  # account names (all in key.namespace), sorted

    @property
    def namespace(self) -> str:
        return self.key.namespace

    @property
    def room(self) -> int:
        return self.key.capacity - len(self.accounts)


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
    remaining = tuple(a for a in agent.accounts if a != name)
    if remaining:
        new[where] = replace(agent, accounts=remaining)
        return Plan(fleet=new, changed=frozenset({where}))
    del new[where]
    return Plan(fleet=new, removed=frozenset({where}))


def place(fleet: Fleet, key: GroupKey, name: str) -> Plan:
    """Place account ``name`` (namespace ``key.namespace``) into an agent of its group.

    Already placed in an agent of the same group: nothing changes. Placed in another group's agent (its route
    or transport changed): it leaves that agent first.
    """
    where = find(fleet, key.namespace, name)
    if where is not None and fleet[where].key == key:
        return Plan(fleet=dict(fleet), agent=where)
    removed: frozenset[str] = frozenset()
    changed: frozenset[str] = frozenset()
    if where is not None:
        left = remove(fleet, key.namespace, name)
        fleet, removed, changed = left.fleet, left.removed, left.changed
    new = dict(fleet)
    candidates = [a for a in new.values() if a.key == key and a.room > 0]
    if candidates:
        # Fullest first (packs densely, lets emptier agents drain), then by index for determinism.
        target = min(candidates, key=lambda a: (-len(a.accounts), agent_index(a.name) or 0, a.name))
        new[target.name] = replace(target, accounts=tuple(sorted(target.accounts + (name,))))
        return Plan(fleet=new, agent=target.name, changed=changed | {target.name}, removed=removed)
    used = {agent_index(a.name) for a in new.values() if a.key == key} | {
        agent_index(n) for n in removed
    }
    n = 0
    while n in used or agent_name(key, n) in new:
        n += 1
    created = agent_name(key, n)
    new[created] = Agent(name=created, key=key, accounts=(name,))
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


def reconstruct(stored: Iterable[tuple[str, GroupKey, Iterable[str]]]) -> Reconstruction:
    """Rebuild the fleet from what the assignment ConfigMaps say (name, group key, account names).

    The ConfigMaps are the source of truth. If an operator died half-way through a move, an account can appear
    twice: the first agent in (key, index, name) order keeps it. Agents over capacity keep the first names in
    order; a dedicated agent keeps only its own account; an agent name seen twice keeps its first entry. Never
    raises for any input of the declared types, and every account named anywhere ends up exactly once, either
    in ``fleet`` or in ``displaced``.
    """
    fleet: dict[str, Agent] = {}
    seen: set[tuple[str, str]] = set()
    dirty: set[str] = set()
    displaced: set[tuple[str, str]] = set()

    def order(entry: tuple[str, GroupKey, Iterable[str]]) -> tuple:
        index = agent_index(entry[0])
        return (entry[1].sort_key, -1 if index is None else index, entry[0])

    for name, key, accounts in sorted(((n, k, list(a)) for n, k, a in stored), key=order):
        if name in fleet:  # the same agent twice (cannot come from one cluster, but keep the promise)
            dirty.add(name)
            displaced.update((key.namespace, a) for a in accounts)
            continue
        if len(set(accounts)) != len(accounts):
            dirty.add(name)
        keep: list[str] = []
        for account in dict.fromkeys(accounts):
            ref = (key.namespace, account)
            if ref in seen or len(keep) >= key.capacity or (key.dedicated and key.dedicated != account):
                dirty.add(name)
                if ref not in seen:
                    displaced.add(ref)
                continue
            seen.add(ref)
            keep.append(account)
        fleet[name] = Agent(name=name, key=key, accounts=tuple(sorted(keep)))
    displaced -= seen
    return Reconstruction(fleet=fleet, dirty=frozenset(dirty), displaced=frozenset(displaced))


def empty_agents(fleet: Fleet) -> list[str]:
    return sorted(a.name for a in fleet.values() if not a.accounts)


def without_empty(fleet: Fleet) -> dict[str, Agent]:
    return {n: a for n, a in fleet.items() if a.accounts}

