"""The fault matrix of ``sipfleet bench faults``: what one fault did to the fleet, judged from observations. Pure.

A row says, for one fault: the accounts affected (seen not Ready, or not in sync, at any look from the fault's
start until the fleet was settled again), how long after the fault ended the last of them was still seen so
(0 when none was), the REGISTERs the lab's first hops received from the fleet while the fault lasted and until
the fleet was settled again, the
apiserver writes during the whole run of the fault, and what was lost: a SipAccount spec that changed, an
account hosted by no agent or by two, an agent ConfigMap without its Deployment (or the reverse), an account
not Ready at the end.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Iterable


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


def spec_digest(obj: dict) -> str:
    return hashlib.sha256(json.dumps(obj.get("spec") or {}, sort_keys=True).encode()).hexdigest()[:16]


def healthy(obj: dict) -> bool:
    """Ready and RouteInSync True (Ready alone already needs both, this says it for old statuses too)."""
    conds = {c.get("type"): c.get("status") for c in (obj.get("status") or {}).get("conditions") or []}
    return conds.get("Ready") == "True" and conds.get("RouteInSync", "True") == "True"


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
            out.append(f"{name}: not Ready and in sync at the end")
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


def render(rows: list[Row]) -> str:
    """The matrix as a text table."""
    head = ("fault", "accounts affected", "recovered after end", "REGISTERs during/until settled", "API writes",
            "lost", "note")
    body = [(r.fault, f"{r.affected}/{r.accounts}",
             "not within timeout" if r.recovery_s is None else f"{r.recovery_s:.1f} s",
             f"{r.registers}/{r.registers_total}",
             "counters reset" if r.writes is None else str(r.writes), "; ".join(r.lost) or "nothing", r.note) for r in rows]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in [head, *body]]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])
