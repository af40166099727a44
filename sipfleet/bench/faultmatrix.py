"""The fault matrix of ``sipfleet bench faults``: what one fault did to the fleet, judged from observations. Pure.

A row says, for one fault: the accounts affected (seen not Ready, or not in sync, at any look from the fault's
start until the fleet was settled again), how long after the fault ended the last of them was still seen so
(0 when none was), the REGISTERs the lab's first hops received from the fleet while the fault lasted and until
the fleet was settled again, the
apiserver writes during the whole run of the fault, and what was lost: a SipAccount spec that changed, an
account hosted by no agent or by two, an agent ConfigMap without its Deployment (or the reverse), an account
not Ready at the end. A fault that adds accounts (the operator killed during a converge) has them watched and
judged with the rest (:class:`FaultRun`), and what deleting them again left behind is lost too
(:func:`deletion_leftovers`). Takeover times are read from the operators' JSON logs (:func:`first_log_at`).
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Iterable


@dataclass
class Row:
    fault: str
    accounts: int
    affected: int = 0
    recovery_s: float | None = 0.0  # None: not all Ready again within the bench's timeout
    registers: int = 0  # while the fault lasted
    registers_total: int = 0  # from its start until the fleet was settled again
    writes: int | None = 0  # None: not known (the apiserver's counters were reset by its restart)
    lost: list[str] = field(default_factory=list)
    note: str = ""


@dataclass
class FaultRun:
    """What one fault may add to its row: accounts it created (``specs``: name -> spec digest, ``users``: name ->
    lab user), watched from another thread, and checks to run after the row is taken (``after``: each returns
    what it found lost and a note)."""

    specs: dict[str, str]
    users: dict[str, str]
    after: list[Callable[[], tuple[list[str], str]]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_accounts(self, specs: dict[str, str], users: dict[str, str]) -> None:
        with self._lock:
            self.specs = {**self.specs, **specs}
            self.users = {**self.users, **users}

    def watched(self) -> dict[str, str]:
        with self._lock:
            return dict(self.specs)


def spec_digest(obj: dict) -> str:
    return hashlib.sha256(json.dumps(obj.get("spec") or {}, sort_keys=True).encode()).hexdigest()[:16]


def healthy(obj: dict) -> bool:
    """Ready and RouteInSync True (Ready alone already needs both, this says it for old statuses too)."""
    conds = {c.get("type"): c.get("status") for c in (obj.get("status") or {}).get("conditions") or []}
    return conds.get("Ready") == "True" and conds.get("RouteInSync", "True") == "True"


def why_unhealthy(obj: dict) -> str:
    """The conditions that are not as a healthy account has them, with their reasons: ``Ready=False Registering``."""
    good = {"Ready": "True", "Registered": "True", "RouteInSync": "True", "AgentReady": "True"}
    conds = (obj.get("status") or {}).get("conditions") or []
    bad = [f"{c.get('type')}={c.get('status')}" + (f" {c['reason']}" if c.get("reason") else "")
           for c in conds if c.get("type") in good and c.get("status") != good[c.get("type")]]
    return ", ".join(bad) or "no conditions"


def losses(before_specs: dict[str, str], accounts: Iterable[dict], assignments: dict[str, list[str]],
           deployments: Iterable[str]) -> list[str]:
    """What a fault lost, from the fleet as it is now against the specs before it. Pure."""
    out = []
    now = {o["metadata"]["name"]: o for o in accounts}
    for name, digest in sorted(before_specs.items()):
        if name not in now:
            out.append(f"{name}: SipAccount gone")
        elif spec_digest(now[name]) != digest:
            out.append(f"{name}: spec changed")
        elif not healthy(now[name]):
            out.append(f"{name}: not Ready and in sync at the end ({why_unhealthy(now[name])})")
    hosts: dict[str, list[str]] = {}
    for agent, names in assignments.items():
        for n in names:
            hosts.setdefault(n, []).append(agent)
    for name in sorted(before_specs):
        where = hosts.get(name, [])
        if len(where) != 1:
            out.append(f"{name}: hosted by {len(where)} agents {sorted(where)}")
    deps = set(deployments)
    out += [f"agent {a}: ConfigMap without Deployment" for a in sorted(set(assignments) - deps)]
    out += [f"agent {d}: Deployment without ConfigMap" for d in sorted(deps - set(assignments))]
    return out


def deletion_leftovers(deleted: dict[str, str], accounts: Iterable[dict], assignments: dict[str, list[str]],
                       contacts: dict[str, list[str]]) -> list[str]:
    """What deleting accounts left behind. ``deleted``: account name -> lab user; ``contacts``: lab user -> the
    registrar's contacts for it. Pure."""
    names = {o["metadata"]["name"] for o in accounts}
    out = [f"{n}: SipAccount still there after its deletion" for n in sorted(deleted) if n in names]
    out += [f"{n}: deleted but still assigned to agent {a}" for a, ns in sorted(assignments.items())
            for n in sorted(ns) if n in deleted]
    out += [f"{n}: deleted but {len(contacts[u])} contact(s) left at the registrar" for n, u in sorted(deleted.items())
            if contacts.get(u)]
    return out


def first_log_at(log_text: str, needle: str, after: datetime) -> datetime | None:
    """When the first JSON log line (``ts``, ``msg``) whose message contains ``needle`` was written at or after
    ``after`` (an aware datetime); None if none was. Lines that are not such JSON are skipped. Pure."""
    for line in log_text.splitlines():
        try:
            doc = json.loads(line)
            ts = datetime.fromisoformat(doc["ts"])
        except (ValueError, KeyError, TypeError):
            continue
        if needle in str(doc.get("msg", "")) and ts >= after:
            return ts
    return None


def engine_running(log_text: str) -> bool:
    """From an operator's JSON log: its engine was started and not stopped since (a standby's engine may have run
    a moment while it saw itself alone). Pure."""
    running = False
    for line in log_text.splitlines():
        try:
            msg = str(json.loads(line).get("msg", ""))
        except (ValueError, AttributeError):
            continue
        if msg.startswith("engine started"):
            running = True
        elif msg.startswith("engine stopped"):
            running = False
    return running


def lost_cell(lost: list[str], show: int = 3) -> str:
    """A row's losses for the table: the first ``show`` and how many more (the JSON rows keep them all). Pure."""
    if not lost:
        return "nothing"
    more = len(lost) - show
    return "; ".join(lost[:show]) + (f"; ... and {more} more" if more > 0 else "")


def render(rows: list[Row]) -> str:
    """The matrix as a text table."""
    head = ("fault", "accounts affected", "recovered after end", "REGISTERs during/until settled", "API writes",
            "lost", "note")
    body = [(r.fault, f"{r.affected}/{r.accounts}",
             "not within timeout" if r.recovery_s is None else f"{r.recovery_s:.1f} s",
             f"{r.registers}/{r.registers_total}",
             "counters reset" if r.writes is None else str(r.writes), lost_cell(r.lost), r.note) for r in rows]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in [head, *body]]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])
