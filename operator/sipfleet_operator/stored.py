"""Reading back what the operator wrote: an assignment ConfigMap as (agent, group key, accounts, their worker
keys), or why it cannot be read and which accounts it still names. Pure, and it never raises for any object the
API returns: the operator's start depends on it.

What is accepted, in order:

* the group key from the ``sipfleet.io/group-key`` annotation. Older operators wrote keys that also held
  transport, route and routeMode (one agent per route) and may lack ``dedicated`` (shared): they read as the
  namespace's key of today, so their agents keep their names and accounts and take new accounts of any route;
  extra fields are ignored;
* no usable annotation: the key recovered from the assignment itself (every hosted account carries its namespace)
  when it hashes to the id in the agent's name - today's key, or an older operator's, rebuilt from the first
  account's transport, route and routeMode - so it is the key the name was made from;
* the account names from ``assignment.json``, with each one's worker key (transport, route, routeMode); when the
  assignment is unusable but the key is known, the names from the ConfigMap's ownerReferences (written in the
  same apply as the data), worker keys unknown.

Anything else is :class:`Unreadable`, with the reason and every account name found in the assignment or the
ownerReferences, so the operator can tell those accounts and place them again.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from sipfleet.api import models as m

from .builders import ANNOTATION_GROUP_KEY, ASSIGNMENT_KEY
from .placement import GroupKey, WorkerKey, agent_key_id, legacy_key_id

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass(frozen=True)
class StoredAgent:
    namespace: str
    name: str
    key: GroupKey
    accounts: tuple[str, ...]
    #: what had to be recovered because the ConfigMap was incomplete (None: read as written)
    recovered: str | None = None
    #: (account, worker key) as the assignment says, sorted by account (empty when read from ownerReferences)
    shapes: tuple[tuple[str, WorkerKey], ...] = ()
    #: (account, registrar URI) as the assignment says: the REGISTER budget's counts before the accounts arrive
    registrars: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    def entry(self) -> tuple[str, GroupKey, tuple[str, ...], dict[str, WorkerKey]]:
        """The form :func:`placement.reconstruct` takes."""
        return self.name, self.key, self.accounts, dict(self.shapes)


@dataclass(frozen=True)
class Unreadable:
    namespace: str
    name: str
    reason: str
    #: accounts the ConfigMap names (assignment or ownerReferences), sorted
    accounts: tuple[str, ...] = ()


def account_name_ok(name: Any) -> bool:
    return isinstance(name, str) and 0 < len(name) <= 253 and bool(_DNS_SUBDOMAIN.match(name))


def _assignment(data: Any) -> tuple[list[dict] | None, str | None]:
    """The assignment's account entries, or why there are none."""
    if not isinstance(data, dict) or ASSIGNMENT_KEY not in data:
        return None, f"no {ASSIGNMENT_KEY}"
    try:
        doc = json.loads(data[ASSIGNMENT_KEY])
    except (TypeError, ValueError) as e:
        return None, f"{ASSIGNMENT_KEY} is not JSON ({e})"
    if not isinstance(doc, dict) or not isinstance(doc.get("accounts", []), list):
        return None, f"{ASSIGNMENT_KEY} has no list of accounts"
    entries = doc.get("accounts", [])
    if not all(isinstance(a, dict) and account_name_ok(a.get("name")) for a in entries):
        return None, f"{ASSIGNMENT_KEY} has an account without a valid name"
    return entries, None


def _owner_accounts(meta: dict) -> list[str]:
    refs = meta.get("ownerReferences")
    if not isinstance(refs, list):
        return []
    return [
        r["name"] for r in refs
        if isinstance(r, dict) and r.get("kind") == m.KIND and str(r.get("apiVersion", "")).startswith(f"{m.GROUP}/")
        and account_name_ok(r.get("name"))
    ]


def _shape(entry: dict) -> WorkerKey | None:
    """An assignment entry's worker key (AgentAccount.worker_key, with the model's defaults), None when unusable."""
    transport, route, mode = entry.get("transport", "udp"), entry.get("route", []), entry.get("routeMode", "prevent")
    if not isinstance(transport, str) or not isinstance(mode, str) or not isinstance(route, list) or not all(
        isinstance(r, str) for r in route
    ):
        return None
    tls = None
    if isinstance(entry.get("tls"), dict):
        try:
            tls = m.AgentTls.model_validate(entry["tls"])
        except ValueError:
            return None
    return (transport, tuple(route), mode) + m.tls_key(transport, tls)


def _shapes(entries: list[dict]) -> tuple[tuple[str, WorkerKey], ...]:
    out = {}
    for e in entries:
        shape = _shape(e)
        if shape is not None:
            out.setdefault(e["name"], shape)
    return tuple(sorted(out.items()))


def _key_from_assignment(name: str, namespace: str, entries: list[dict]) -> GroupKey | None:
    """The group key the agent's name was made from, rebuilt from what every hosted account carries: today's
    (namespace, dedicated), or an older operator's, which also held a worker key (that of the accounts it
    placed; a newer operator may have added accounts of other worker keys since)."""
    want = agent_key_id(name)
    if want is None or not entries:
        return None
    first = entries[0]
    ns = first.get("namespace", namespace)
    if not isinstance(ns, str) or not ns:
        return None
    shapes = {s for s in map(_shape, entries) if s is not None}
    for dedicated in [None] + ([first.get("name")] if len(entries) == 1 else []):
        key = GroupKey(namespace=ns, dedicated=dedicated)
        if key.id == want or any(legacy_key_id(ns, *shape, dedicated) == want for shape in sorted(shapes)):
            return key
    return None


def read_configmap(cm: Any) -> StoredAgent | Unreadable:
    """One assignment ConfigMap as a :class:`StoredAgent`, or :class:`Unreadable` with the reason."""
    meta = cm.get("metadata") if isinstance(cm, dict) else None
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not isinstance(
        meta.get("namespace"), str
    ):
        return Unreadable("", "", "no metadata name/namespace")
    ns, name = meta["namespace"], meta["name"]
    entries, assignment_problem = _assignment(cm.get("data"))
    names = [a["name"] for a in entries] if entries is not None else []
    owners = _owner_accounts(meta)

    annotations = meta.get("annotations") if isinstance(meta.get("annotations"), dict) else {}
    recovered: list[str] = []
    key: GroupKey | None = None
    key_problem = None
    raw = annotations.get(ANNOTATION_GROUP_KEY)
    if raw is None:
        key_problem = f"no {ANNOTATION_GROUP_KEY} annotation"
    else:
        try:
            key = GroupKey.from_json(raw)
        except ValueError as e:
            key_problem = f"{ANNOTATION_GROUP_KEY} annotation: {e}"
    if key is None and entries:
        key = _key_from_assignment(name, ns, entries)
        if key is not None:
            recovered.append(f"group key rebuilt from the assignment ({key_problem})")
    if key is None:
        reason = key_problem or "no group key"
        if assignment_problem:
            reason += f"; {assignment_problem}"
        return Unreadable(ns, name, reason, tuple(sorted(set(names) | set(owners))))
    if key.namespace != ns:
        return Unreadable(ns, name, f"group key names namespace {key.namespace!r}", tuple(sorted(set(names) | set(owners))))
    if entries is None:
        names = owners
        recovered.append(f"accounts taken from ownerReferences ({assignment_problem})")
    registrars = tuple(sorted({e["name"]: e["registrar"] for e in entries or []
                               if isinstance(e.get("registrar"), str)}.items()))
    return StoredAgent(ns, name, key, tuple(names), "; ".join(recovered) or None, _shapes(entries or []), registrars)
