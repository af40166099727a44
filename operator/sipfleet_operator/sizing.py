"""Agent pod resources: how big an agent pod is, from what it hosts. Pure.

An agent pod runs one supervisor and one pjsua2 worker per ``MAX_ACCOUNTS_PER_WORKER`` accounts of one worker
key. Its requests and limits are, per resource (cpu in millicores, memory in MiB)::

    base + perWorker * W + perAccount * A          W = the size class, A = min(8 * W, accountsPerAgent)

The *size class* ``W`` is the worker count the pod is sized for: the smallest of ``CLASSES`` (1, 2, 4, 8) at or
above the workers it runs, and at least 2 for a shared pod; ``A`` is the accounts those workers can hold. Sizing
by class, not by the exact count, is what keeps a pod from rolling on every account: any change of requests or
limits changes the pod template, the Deployment (Recreate) replaces the pod, and every account it hosts
un-REGISTERs and REGISTERs again (and misses calls for the seconds the new pod takes to start).

* A shared pod starts with room for a second worker, so a second route, an account in the other routeMode, or
  a route change of some of its accounts (their new worker starts next to the old one) does not roll it.
* Packing fills the fullest agent first, so a pod that grows from 1 to 64 accounts of one route crosses a class
  twice (at its 17th and its 33rd account: 3 and 5 workers). During a bulk create that happens before its pod
  has started (cheap); a fleet that grows one account at a time pays it twice over the pod's life (16, then 32
  re-registrations).
* The trade-off: classes of every worker count would follow the load more closely (less reserved) at six more
  crossings; one class for everything (every pod sized for 64 accounts from its first) would never cross but
  reserve several times the memory and cpu for small namespaces (the issue's 2-core node ran out of cpu
  *requests*, not of cpu). A dedicated pod hosts one account in one worker: class 1, never crosses.

A new agent's first Deployment waits while accounts are still joining it (``first_deploy_wait``): a bulk create
fills an agent within a second or two, and a pod created at its first account would be replaced at its 17th and
33rd (its start thrown away, twice); it is created once the agent is full, or no account joined for a moment, or
a few seconds after its first account at the latest.

Growing is applied at once (a pod short of memory is OOM-killed, which costs the same re-registration, at a worse
time). Shrinking is lazy: a pod keeps its class until it needs a class at least two steps smaller (8 -> 2), or
until its template changes for another reason anyway (image, settings): the smaller class is taken then, for
free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

from sipfleet.api import models as m

CLASSES = (1, 2, 4, 8)  # workers a pod is sized for
SHARED_MIN = 2  # a shared pod has room for a second worker from the start
assert CLASSES[-1] == m.MAX_WORKERS_PER_AGENT


@dataclass(frozen=True)
class Coefficients:
    """One resource: ``base + per_worker * W + per_account * A`` (cpu: millicores, memory: MiB)."""

    base: float
    per_worker: float
    per_account: float

    def at(self, workers: int, accounts: int) -> float:
        return self.base + self.per_worker * workers + self.per_account * accounts


@dataclass(frozen=True)
class Sizing:
    cpu_request: Coefficients = Coefficients(10, 2, 0.5)
    memory_request: Coefficients = Coefficients(48, 8, 0.5)
    cpu_limit: Coefficients = Coefficients(200, 50, 2)
    memory_limit: Coefficients = Coefficients(128, 32, 1)

    @classmethod
    def from_api(cls, d: Mapping | None) -> "Sizing":
        """From the chart's ``agent.sizing`` (``{"requests": {"cpu": {"base": .., "perWorker": ..,
        "perAccount": ..}, "memory": {..}}, "limits": {..}}``); missing entries keep their default. Raises
        ``ValueError`` naming the entry that is not a non-negative number."""
        default = cls()
        d = d or {}
        if not isinstance(d, Mapping):
            raise ValueError("agent sizing must be an object")
        out = {}
        for kind in ("requests", "limits"):
            part = {} if d.get(kind) is None else d[kind]
            if not isinstance(part, Mapping):
                raise ValueError(f"sizing.{kind} must be an object")
            for res in ("cpu", "memory"):
                field = f"{res}_{kind[:-1]}"
                base: Coefficients = getattr(default, field)
                c = {} if part.get(res) is None else part[res]
                if not isinstance(c, Mapping):
                    raise ValueError(f"sizing.{kind}.{res} must be an object")
                values = {}
                for api, attr in (("base", "base"), ("perWorker", "per_worker"), ("perAccount", "per_account")):
                    v = c.get(api, getattr(base, attr))
                    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or not math.isfinite(v):
                        raise ValueError(f"sizing.{kind}.{res}.{api} must be a non-negative number, not {v!r}")
                    values[attr] = float(v)
                out[field] = Coefficients(**values)
        return cls(**out)


def size_class(workers: int, dedicated: bool = False) -> int:
    """The smallest class that runs ``workers`` workers (a shared pod: at least ``SHARED_MIN``)."""
    want = workers if dedicated else max(SHARED_MIN, workers)
    return next((c for c in CLASSES if c >= want), CLASSES[-1])


def choose(needed: int, previous: int | None, rolls_anyway: bool) -> int:
    """The class to apply: ``needed`` when growing, when nothing was applied before, or when the pod is replaced
    anyway; otherwise ``previous``. A running pod is never replaced only to shrink it: that would re-REGISTER
    every account it hosts because other accounts left it. It keeps its reservation until its template changes
    for another reason (a new agent image, other settings), when the smaller class costs nothing."""
    if previous not in CLASSES or needed >= previous or rolls_anyway:
        return needed
    return previous


def first_deploy_wait(now: float, first_at: float, last_join_at: float, full: bool, settle: float,
                      longest: float) -> float:
    """Seconds a new agent's first Deployment still waits (0: create it now): until the agent is ``full``, or
    ``settle`` seconds passed without an account joining, or ``longest`` seconds after its first account."""
    if full:
        return 0.0
    return max(0.0, min(last_join_at + settle, first_at + longest) - now)


def resources(size: int, accounts_per_agent: int, sizing: Sizing, dedicated: bool = False) -> dict:
    """Container requests and limits of a pod of class ``size``."""
    accounts = 1 if dedicated else min(m.MAX_ACCOUNTS_PER_WORKER * size, accounts_per_agent)

    def cpu(c: Coefficients) -> str:
        return f"{max(1, math.ceil(c.at(size, accounts)))}m"

    def mem(c: Coefficients) -> str:
        return f"{max(1, math.ceil(c.at(size, accounts)))}Mi"

    return {
        "requests": {"cpu": cpu(sizing.cpu_request), "memory": mem(sizing.memory_request)},
        "limits": {"cpu": cpu(sizing.cpu_limit), "memory": mem(sizing.memory_limit)},
    }
