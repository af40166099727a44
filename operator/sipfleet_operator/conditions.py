"""Conditions of a SipAccount, computed from its spec, the agent-written status and the agent pod's state.

Pure: ``compute`` takes everything it needs (including ``now``) and returns the new condition list; a
condition whose status, reason and message did not change keeps its lastTransitionTime, so recomputing is
idempotent and the operator patches only when something really changed.

* ``AgentReady``: the hosting agent pod exists and is Ready; ``Unschedulable`` with the scheduler's message when
  the scheduler cannot place it (too big for every node, say), so the account says why, not just "starting".
* ``Registered``: what the agent measured (``status.registration``) - but only while the agent that wrote it
  is alive; otherwise Unknown / AgentNotReporting (a stale "Registered" must not survive its agent).
* ``RouteInSync``: the agent's measured ``status.route.inSync`` (reason ``FailedOver`` while in sync with a fallback
  route: ``status.route.active``).
* ``RouteFlapping``: the route drifted more than ``spec.drift.flapThreshold`` times within ``flapWindowSeconds``
  (the ladder's verdict, ``status.ladder.flapping``); informational, Ready does not depend on it (a flapping route
  that self-heals registers through the desired route nearly all of the time; the ladder escalates and, if that
  does not help, sets Degraded).
* ``Degraded``: the drift repair ladder gave up for now and backs off.
* ``Ready``: all of the above are healthy.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Sequence

from sipfleet.api import conditions as ct
from sipfleet.api import credentials as creds
from sipfleet.api import models as m

TYPES = ct.TYPES


def rfc3339(t: datetime) -> str:
    return t.astimezone(timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_ms(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def parse_time(s: str | None) -> datetime | None:
    if not s:
        return None
    try:
        return datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclass(frozen=True)
class PodState:
    """What the operator knows about the agent pod hosting an account."""

    name: str | None = None  # None: no pod exists
    phase: str | None = None
    ready: bool = False
    deleting: bool = False
    started_at: str | None = None  # pod creationTimestamp
    restarts: int = 0
    ever_ready: bool = False  # the agent was Ready once in this pod: not Ready now means it stopped reporting
    #: the scheduler's message while it cannot place the pod (PodScheduled False, reason Unschedulable)
    unschedulable: str | None = None


@dataclass(frozen=True)
class Inputs:
    generation: int | None
    placed_in: str | None  # agent name, None when not placed
    credentials_problem: str | None  # None: Secret present and well-formed
    pod: PodState | None  # None: not known / no pod
    status: m.SipAccountStatus
    paused: bool = False
    credentials_reason: str = creds.MISSING  # or creds.INVALID


@dataclass(frozen=True)
class C:
    type: str
    status: str
    reason: str
    message: str = ""


def _agent_ready(i: Inputs) -> C:
    if i.placed_in is None:
        if i.credentials_problem:
            return C(ct.AGENT_READY, "False", i.credentials_reason, i.credentials_problem)
        return C(ct.AGENT_READY, "False", ct.AGENT_PENDING, "not placed on an agent yet")
    pod = i.pod
    if pod is None or pod.name is None:
        return C(ct.AGENT_READY, "False", ct.AGENT_PENDING, _starting(i))
    if pod.deleting:
        return C(ct.AGENT_READY, "False", ct.AGENT_NOT_REPORTING, f"agent pod {pod.name} is terminating")
    if pod.ready:
        return C(ct.AGENT_READY, "True", ct.AGENT_READY_REASON, f"agent pod {pod.name} is ready")
    if pod.unschedulable is not None:
        return C(ct.AGENT_READY, "False", ct.UNSCHEDULABLE,
                 f"agent pod {pod.name} cannot be scheduled: {pod.unschedulable or 'no reason given'}")
    if pod.ever_ready or pod.phase in ("Failed", "Succeeded"):
        return C(ct.AGENT_READY, "False", ct.AGENT_NOT_REPORTING, f"agent pod {pod.name} is not ready ({pod.phase})")
    return C(ct.AGENT_READY, "False", ct.AGENT_PENDING, _starting(i))


def _starting(i: Inputs) -> str:
    """One message for every step of an agent's start (no pod yet, Pending, Running but not Ready): the steps are
    not transitions of the account, so they cost no status write (kubectl shows the pod's own progress)."""
    return f"agent {i.placed_in} is starting"


def _own_early_report(i: Inputs) -> bool:
    """The agent-written status comes from the pod that is starting now (it registers before its readiness probe
    passes): that pod has not stopped reporting, it has not started reporting to the operator yet."""
    agent, pod = i.status.agent, i.pod
    return (agent is not None and pod is not None and bool(pod.name) and agent.pod == pod.name
            and not pod.ever_ready and not pod.deleting and pod.phase not in ("Failed", "Succeeded"))


def _reporter_current(i: Inputs) -> bool:
    """Whether the agent-written status comes from the pod that runs now (when the agent says who it is)."""
    agent = i.status.agent
    if agent is None or i.pod is None:
        return True
    if agent.name and i.placed_in and agent.name != i.placed_in:
        return False
    if agent.pod and i.pod.name and agent.pod != i.pod.name:
        return False
    return True


def _registered(i: Inputs, agent_ready: C) -> C:
    if i.credentials_problem and i.placed_in is None:
        return C(ct.REGISTERED, "False", i.credentials_reason, i.credentials_problem)
    if agent_ready.status != "True":
        # an agent reported for this account before and is not Ready (or gone): it stopped reporting
        reported = (i.status.agent is not None and bool(i.status.agent.pod) or i.status.registration is not None) \
            and not _own_early_report(i)
        reason = ct.AGENT_NOT_REPORTING if agent_ready.reason == ct.AGENT_NOT_REPORTING or reported else ct.AGENT_PENDING
        return C(ct.REGISTERED, "Unknown", reason, agent_ready.message)
    if not _reporter_current(i):
        return C(ct.REGISTERED, "Unknown", ct.AGENT_NOT_REPORTING, f"waiting for agent pod {i.pod.name} to report")
    reg = i.status.registration
    if reg is None:
        return C(ct.REGISTERED, "Unknown", ct.AGENT_PENDING, "the agent has not reported a registration yet")
    detail = " ".join(str(x) for x in (reg.code, reg.reason) if x not in (None, ""))
    if reg.state == "Registered":
        return C(ct.REGISTERED, "True", ct.REGISTERED_REASON, detail or "registered")
    if reg.state == "Failed":
        if i.credentials_problem:
            return C(ct.REGISTERED, "False", i.credentials_reason, i.credentials_problem)
        return C(ct.REGISTERED, "False", reg.failure_reason or ct.REGISTRATION_FAILED, detail or "registration failed")
    if reg.state == "Registering":
        return C(ct.REGISTERED, "False", ct.REGISTERING, detail or "registering")
    return C(ct.REGISTERED, "False", ct.UNREGISTERED, detail or "not registered")


def _route(i: Inputs, registered: C) -> C:
    route = i.status.route
    if registered.status == "Unknown" or route is None or route.in_sync is None:
        return C(ct.ROUTE_IN_SYNC, "Unknown", ct.NOT_OBSERVED, "no REGISTER observed by the current agent yet")
    if route.in_sync:
        hop = f" via {route.first_hop}" if route.first_hop else ""
        active = route.active
        if active is not None and active.index > 0:
            why = f": {active.message}" if active.message else ""
            return C(ct.ROUTE_IN_SYNC, "True", ct.FAILED_OVER,
                     f"REGISTER sent{hop} along fallback route {active.index} ({', '.join(active.route)}){why}")
        return C(ct.ROUTE_IN_SYNC, "True", ct.IN_SYNC, f"REGISTER sent{hop} along the desired route")
    eff = ", ".join(route.effective) or "(none)"
    return C(ct.ROUTE_IN_SYNC, "False", ct.ROUTE_DRIFT, f"effective route {eff} differs from desired {', '.join(route.desired)}")


def _flapping(i: Inputs) -> C:
    ladder = i.status.ladder
    if ladder is not None and ladder.flapping:
        return C(ct.ROUTE_FLAPPING, "True", ct.FLAPPING,
                 f"the route drifted {len(ladder.recent_drifts)} times recently (the first at "
                 f"{min(ladder.recent_drifts) if ladder.recent_drifts else '?'}); the repair ladder escalates")
    return C(ct.ROUTE_FLAPPING, "False", ct.STABLE, "")


def _degraded(i: Inputs) -> C:
    ladder = i.status.ladder
    if ladder is not None and ladder.phase == "Degraded":
        nxt = f"; next attempt at {ladder.next_attempt_at}" if ladder.next_attempt_at else ""
        return C(ct.DEGRADED, "True", ct.REPAIR_BACKOFF, f"route repair failed {ladder.attempts} times{nxt}")
    return C(ct.DEGRADED, "False", ct.AS_EXPECTED, "")


def _ready(agent: C, reg: C, route: C, degraded: C, i: Inputs) -> C:
    if i.paused:
        return C(ct.READY, "False", ct.PAUSED, "reconciliation is paused (sipfleet.io/paused)")
    for c in (agent, reg):
        if c.status != "True":
            return C(ct.READY, "False", c.reason, c.message)
    if route.status == "False":
        return C(ct.READY, "False", route.reason, route.message)
    if degraded.status == "True":
        return C(ct.READY, "False", degraded.reason, degraded.message)
    return C(ct.READY, "True", ct.READY_REASON, "registered through the desired route")


def desired(i: Inputs) -> list[C]:
    agent = _agent_ready(i)
    reg = _registered(i, agent)
    route = _route(i, reg)
    degraded = _degraded(i)
    return [_ready(agent, reg, route, degraded, i), reg, route, _flapping(i), agent, degraded]


def merge(previous: Sequence[m.Condition], new: Sequence[C], generation: int | None, now: datetime) -> list[m.Condition]:
    """Turn desired conditions into API conditions, keeping lastTransitionTime when the status did not change."""
    old = {c.type: c for c in previous}
    out = []
    for c in new:
        prev = old.get(c.type)
        ltt = prev.last_transition_time if prev is not None and prev.status == c.status else rfc3339(now)
        out.append(
            m.Condition(
                type=c.type,
                status=c.status,
                reason=c.reason,
                message=c.message[:1024],
                observed_generation=generation,
                last_transition_time=ltt,
            )
        )
    return out


def compute(i: Inputs, now: datetime) -> list[m.Condition]:
    return merge(i.status.conditions, desired(i), i.generation, now)


def conditions_api(conds: Sequence[m.Condition]) -> list[dict]:
    return [c.to_api() for c in conds]


def get(conds: Sequence[m.Condition], type_: str) -> m.Condition | None:
    return next((c for c in conds if c.type == type_), None)
