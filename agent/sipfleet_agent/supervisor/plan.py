"""Which worker hosts which account: a pure, stable plan.

Promise of :func:`plan_workers`: every account stays in the worker it was in as long as that worker's key
(transport, route, routeMode) is still the account's key; a new or re-keyed account goes into an existing worker
of its key with room (the fullest first, then the lowest id), else into a new worker with the lowest free id.
Workers left empty are dropped. Only when an account fits nowhere (all ``max_workers`` ids taken) are the workers
of one key compacted, moving the accounts of that key's emptiest worker; an account that still fits nowhere is
returned in ``unplaced``. :func:`diff` says, per worker id, what the supervisor has to do.
"""

from __future__ import annotations

import dataclasses
from typing import Hashable, Mapping

AccountId = tuple  # (namespace or None, name)
WorkerKey = Hashable  # AgentAccount.worker_key()


@dataclasses.dataclass(frozen=True)
class WorkerSlot:
    id: int
    key: WorkerKey
    accounts: frozenset


@dataclasses.dataclass(frozen=True)
class Plan:
    workers: Mapping[int, WorkerSlot]
    unplaced: tuple = ()

    def worker_of(self, account: AccountId) -> int | None:
        for w in self.workers.values():
            if account in w.accounts:
                return w.id
        return None


def _sort_key(a: AccountId) -> tuple:
    return tuple("" if x is None else str(x) for x in a)


def plan_workers(prev: Mapping[int, WorkerSlot], wanted: Mapping[AccountId, WorkerKey], *,
                 max_workers: int = 8, max_per_worker: int = 8) -> Plan:
    slots: dict[int, set] = {}
    keys: dict[int, WorkerKey] = {}
    placed: set = set()
    for wid in sorted(prev):
        w = prev[wid]
        keep = {a for a in w.accounts if wanted.get(a, _MISSING) == w.key and a not in placed}
        if keep:
            slots[wid], keys[wid] = set(sorted(keep, key=_sort_key)[:max_per_worker]), w.key
            placed |= slots[wid]
    unplaced = []
    for acc in sorted((a for a in wanted if a not in placed), key=_sort_key):
        key = wanted[acc]
        wid = _room(slots, keys, key, max_per_worker)
        if wid is None and len(slots) < max_workers:
            wid = min(i for i in range(max_workers) if i not in slots)
            slots[wid], keys[wid] = set(), key
        if wid is None:
            wid = _compact(slots, keys, max_per_worker)
            if wid is not None:
                slots[wid], keys[wid] = set(), key
        if wid is None:
            unplaced.append(acc)
            continue
        slots[wid].add(acc)
    return Plan({wid: WorkerSlot(wid, keys[wid], frozenset(s)) for wid, s in sorted(slots.items())}, tuple(unplaced))


_MISSING = object()


def _room(slots: dict[int, set], keys: dict[int, WorkerKey], key: WorkerKey, cap: int) -> int | None:
    fits = [wid for wid in slots if keys[wid] == key and len(slots[wid]) < cap]
    if not fits:
        return None
    return min(fits, key=lambda wid: (-len(slots[wid]), wid))


def _compact(slots: dict[int, set], keys: dict[int, WorkerKey], cap: int) -> int | None:
    """Empty one worker by moving its accounts into others of the same key; its id is returned (now free)."""
    for wid in sorted(slots, key=lambda w: (len(slots[w]), w)):
        others = [o for o in slots if o != wid and keys[o] == keys[wid]]
        room = sum(cap - len(slots[o]) for o in others)
        if room < len(slots[wid]):
            continue
        for acc in sorted(slots[wid], key=_sort_key):
            target = min((o for o in others if len(slots[o]) < cap), key=lambda o: (-len(slots[o]), o))
            slots[target].add(acc)
        del slots[wid]
        del keys[wid]
        return wid
    return None


@dataclasses.dataclass(frozen=True)
class WorkerChange:
    id: int
    action: str  # "start", "stop", "restart" (key changed), "update" (accounts changed), "keep"
    added: frozenset = frozenset()
    removed: frozenset = frozenset()


def diff(prev: Mapping[int, WorkerSlot], new: Mapping[int, WorkerSlot]) -> list[WorkerChange]:
    out = []
    for wid in sorted(set(prev) | set(new)):
        a, b = prev.get(wid), new.get(wid)
        if b is None:
            out.append(WorkerChange(wid, "stop", removed=a.accounts))  # type: ignore[union-attr]
        elif a is None:
            out.append(WorkerChange(wid, "start", added=b.accounts))
        elif a.key != b.key:
            out.append(WorkerChange(wid, "restart", added=b.accounts, removed=a.accounts))
        elif a.accounts != b.accounts:
            out.append(WorkerChange(wid, "update", added=b.accounts - a.accounts, removed=a.accounts - b.accounts))
        else:
            out.append(WorkerChange(wid, "keep"))
    return out
