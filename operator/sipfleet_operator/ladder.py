"""The drift repair ladder as a pure state machine.

    drift seen (status.route.inSync == False, measured by the agent)
      -> Warning event RouteDrift; step 1: a new repair token in the assignment ConfigMap (the agent re-creates
         the account)                                                        phase RepairRequested
      -> not in sync within spec.drift.repairTimeoutSeconds: step 2: restart the agent pod (delete it; the
         Deployment recreates it)                                            phase PodRestarted
      -> still not in sync after spec.drift.maxPodRestarts restarts: step 3: Degraded, and from then on one
         restart per exponentially growing wait (capped): never a restart storm.
    in sync again at any step -> Idle, with the method and duration recorded.

With ``spec.drift.selfHeal`` (the default) the agent re-creates a drifted account itself at the first drifted
REGISTER; the ladder waits ``repairTimeoutSeconds`` from the drift before it steps in. A route that drifts more than
``flapThreshold`` times within ``flapWindowSeconds`` is *flapping* (:mod:`.flapping` counts the agent's
``route.driftCount``, so drifts healed before the operator saw them count too): Warning event RouteFlapping,
condition RouteFlapping, and the same ladder as cause ``Flapping``: every drift after a step takes the next step
(repair token -> pod restart(s) -> Degraded), and in Degraded one restart per back-off period however often it
drifts. It ends (Idle) when the route is in sync and no longer flapping.

``step`` takes everything it needs (including ``now``) and returns the new ``LadderStatus`` plus the actions
the handler has to carry out. It never returns actions twice for the same situation: calling it again with
the returned ladder and the same inputs is a no-op, so the operator can re-evaluate as often as it likes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import dataclasses

from sipfleet.api import keys as k
from sipfleet.api import models as m

from . import flapping
from .conditions import PodState, parse_time
from .conditions import rfc3339_ms as rfc3339

#: after a pod restart the new pod has to start, register and report: give it this much on top of the timeout
POD_START_GRACE_SECONDS = 20
#: first wait in Degraded; doubles per further failure up to the cap
BACKOFF_BASE_SECONDS = 30
BACKOFF_CAP_SECONDS = 600


@dataclass(frozen=True)
class RequestRepair:
    token: str


@dataclass(frozen=True)
class RestartPod:
    pod: str


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Repaired:
    method: m.RepairMethod
    duration_ms: float


@dataclass(frozen=True)
class DriftSeen:
    pass


@dataclass(frozen=True)
class Step:
    ladder: m.LadderStatus | None
    actions: tuple = ()
    wake_at: datetime | None = None

    @property
    def changed(self) -> bool:  # pragma: no cover - convenience
        return bool(self.actions)


@dataclass(frozen=True)
class Inputs:
    drift: m.DriftSettings
    route: m.RouteStatus | None
    ladder: m.LadderStatus | None
    pod: PodState | None
    now: datetime
    backoff_cap_seconds: int = BACKOFF_CAP_SECONDS
    extra: dict = field(default_factory=dict)


def _upd(ladder: m.LadderStatus, **changes) -> m.LadderStatus:
    return m.LadderStatus.model_validate({**ladder.model_dump(), **changes})


def backoff(k: int, cap: int = BACKOFF_CAP_SECONDS) -> int:
    return int(min(cap, BACKOFF_BASE_SECONDS * (2 ** max(0, k))))


def new_token(now: datetime, attempts: int) -> str:
    return f"{int(now.timestamp() * 1000):x}-{attempts}"


def _pod_age(pod: PodState | None, now: datetime) -> float | None:
    if pod is None or pod.name is None:
        return None
    started = parse_time(pod.started_at)
    return None if started is None else (now - started).total_seconds()


def _drift_start(i: Inputs, ladder: m.LadderStatus) -> datetime:
    seen = parse_time(i.route.last_drift_at) if i.route else None
    requested = parse_time(ladder.requested_at)
    candidates = [t for t in (seen, requested) if t is not None]
    return min(candidates) if candidates else i.now


def _restart(i: Inputs, ladder: m.LadderStatus, phase: str, attempts: int, why: str) -> tuple[m.LadderStatus, list]:
    """Restart the agent pod unless it is younger than the repair timeout (someone restarted it already)."""
    actions: list = []
    age = _pod_age(i.pod, i.now)
    if i.pod is not None and i.pod.name and (age is None or age >= i.drift.repair_timeout_seconds) and not i.pod.deleting:
        actions.append(RestartPod(i.pod.name))
        actions.append(Event("Warning", k.EVENT_RESTARTING_AGENT, f"{why}; restarting agent pod {i.pod.name}"))
    else:
        actions.append(Event("Warning", k.EVENT_RESTARTING_AGENT, f"{why}; the agent pod was restarted recently, waiting"))
    return (
        _upd(
            ladder,
            phase=phase,
            attempts=attempts,
            requested_at=rfc3339(i.now),
            last_method="restart-pod",
        ),
        actions,
    )


def step(i: Inputs) -> Step:
    base = i.ladder or m.LadderStatus()
    d = flapping.observe(i.drift, i.route, base, i.now)
    counted = {"drift_count_seen": d.seen, "recent_drifts": d.recent, "flapping": d.flapping}
    if any(getattr(base, f) != v for f, v in counted.items()):
        i = dataclasses.replace(i, ladder=_upd(base, **counted))
    return _step(i, d, flap_started=d.flapping and not base.flapping)


def _flap_why(i: Inputs, d: flapping.Drifts) -> str:
    return f"route drifted more than {i.drift.flap_threshold} times within {i.drift.flap_window_seconds}s"


def _step(i: Inputs, d: flapping.Drifts, flap_started: bool) -> Step:
    ladder = i.ladder or m.LadderStatus()
    in_sync = i.route.in_sync if i.route is not None else None
    timeout = i.drift.repair_timeout_seconds
    now = i.now
    requested = parse_time(ladder.requested_at)

    if ladder.phase == "Idle":
        if flap_started:
            token = new_token(now, 0)
            new = _upd(ladder, phase="RepairRequested", cause=k.CAUSE_FLAPPING, attempts=0, token=token,
                       requested_at=rfc3339(now), next_attempt_at=rfc3339(now + timedelta(seconds=timeout)),
                       last_method="recreate-account")
            return Step(new, (DriftSeen(), Event("Warning", k.EVENT_ROUTE_FLAPPING,
                                                 f"{_flap_why(i, d)}; requesting repair {token}"),
                              RequestRepair(token)), wake_at=d.calm_at)
        if in_sync is not False:
            return Step(i.ladder, wake_at=d.calm_at)
        if i.drift.self_heal and i.route and i.route.last_drift_at:
            seen = parse_time(i.route.last_drift_at)
            if seen is not None and now < seen + timedelta(seconds=timeout):
                # The agent heals itself first; the operator steps in when that does not work in time.
                return Step(i.ladder, wake_at=seen + timedelta(seconds=timeout))
        token = new_token(now, 0)
        eff = ", ".join(i.route.effective) if i.route else ""
        new = _upd(
            ladder,
            phase="RepairRequested",
            cause=k.CAUSE_FLAPPING if d.flapping else k.CAUSE_DRIFT,
            attempts=0,
            token=token,
            requested_at=rfc3339(now),
            next_attempt_at=rfc3339(now + timedelta(seconds=timeout)),
            last_method="recreate-account",
        )
        return Step(
            new,
            (
                DriftSeen(),
                Event("Warning", k.EVENT_ROUTE_DRIFT, f"REGISTER left along {eff or 'an unexpected route'}; requesting repair {token}"),
                RequestRepair(token),
            ),
            wake_at=now + timedelta(seconds=timeout),
        )

    early = False  # a flapping route drifted again after the last step: take the next one now
    if flap_started and ladder.cause != k.CAUSE_FLAPPING:
        # flapping began in the middle of a drift's escalation: from now on every drift takes the next step
        new = _upd(ladder, cause=k.CAUSE_FLAPPING)
        return Step(new, (Event("Warning", k.EVENT_ROUTE_FLAPPING, f"{_flap_why(i, d)} during the repair ladder"),),
                    wake_at=d.calm_at)
    if ladder.cause == k.CAUSE_FLAPPING:
        if in_sync is not False and not d.flapping:
            new = _upd(ladder, phase="Idle", cause=None, attempts=0, next_attempt_at=None, requested_at=None)
            return Step(new, (Event("Normal", k.EVENT_ROUTE_REPAIRED,
                                    f"route in sync and no longer flapping (last step {ladder.last_method})"),))
        if ladder.phase != "Degraded" and d.new > 0 and (requested is None or now > requested):
            early = True
        elif ladder.phase != "Degraded" and in_sync is not False:
            return Step(i.ladder, wake_at=d.calm_at)

    if in_sync is True and ladder.cause != k.CAUSE_FLAPPING:
        duration_ms = round((now - _drift_start(i, ladder)).total_seconds() * 1000.0, 1)
        method: m.RepairMethod = "recreate-account" if ladder.phase == "RepairRequested" else "restart-pod"
        last = i.route.last_repair if i.route else None
        if (
            last is not None and last.duration_ms is not None and last.result == "repaired"
            and ladder.token and last.token and ladder.token in last.token
        ):
            # the agent measured drift-seen -> first REGISTER via the route; more precise than our own clock
            duration_ms = i.route.last_repair.duration_ms
        new = _upd(
            ladder, phase="Idle", cause=None, attempts=0, next_attempt_at=None, requested_at=None,
            last_method=method, last_duration_ms=duration_ms,
        )
        return Step(
            new,
            (
                Repaired(method, duration_ms),
                Event("Normal", k.EVENT_ROUTE_REPAIRED, f"route back in sync ({method}, {duration_ms:.0f} ms)"),
            ),
        )

    if ladder.phase == "RepairRequested":
        deadline = (requested or now) + timedelta(seconds=timeout)
        if now < deadline and not early:
            return Step(i.ladder if i.ladder is not None else ladder, wake_at=deadline)
        why = (f"{_flap_why(i, d)}: drifted again after repair request {ladder.token}" if early
               else f"not in sync {timeout}s after repair request {ladder.token}")
        if i.drift.max_pod_restarts == 0:
            return _degrade(i, ladder, why)
        new, actions = _restart(i, ladder, "PodRestarted", 1, why)
        new = _upd(new, next_attempt_at=rfc3339(now + timedelta(seconds=timeout + POD_START_GRACE_SECONDS)))
        return Step(new, tuple(actions), wake_at=now + timedelta(seconds=timeout + POD_START_GRACE_SECONDS))

    if ladder.phase == "PodRestarted":
        wait = timeout + POD_START_GRACE_SECONDS
        deadline = (requested or now) + timedelta(seconds=wait)
        if now < deadline and not early:
            return Step(i.ladder, wake_at=deadline)
        if ladder.attempts < i.drift.max_pod_restarts:
            new, actions = _restart(
                i, ladder, "PodRestarted", ladder.attempts + 1,
                f"{_flap_why(i, d)}: drifted again after pod restart {ladder.attempts}/{i.drift.max_pod_restarts}"
                if early else f"not in sync {wait}s after pod restart {ladder.attempts}/{i.drift.max_pod_restarts}",
            )
            new = _upd(new, next_attempt_at=rfc3339(now + timedelta(seconds=wait)))
            return Step(new, tuple(actions), wake_at=now + timedelta(seconds=wait))
        return _degrade(i, ladder, f"{'still flapping' if early else 'not in sync'} after {ladder.attempts} pod restarts")

    if ladder.phase == "Degraded":
        nxt = parse_time(ladder.next_attempt_at) or now
        if now < nxt:
            return Step(i.ladder, wake_at=nxt)
        attempts = ladder.attempts + 1
        new, actions = _restart(i, ladder, "Degraded", attempts,
                                f"still {'flapping' if ladder.cause == k.CAUSE_FLAPPING else 'drifted'} after "
                                f"{ladder.attempts} attempts")
        delay = backoff(attempts - i.drift.max_pod_restarts, i.backoff_cap_seconds)
        new = _upd(new, next_attempt_at=rfc3339(now + timedelta(seconds=delay)))
        return Step(new, tuple(actions), wake_at=now + timedelta(seconds=delay))

    return Step(i.ladder)  # pragma: no cover - unknown phase


def _degrade(i: Inputs, ladder: m.LadderStatus, why: str) -> Step:
    delay = backoff(0, i.backoff_cap_seconds)
    nxt = i.now + timedelta(seconds=delay)
    new = _upd(ladder, phase="Degraded", next_attempt_at=rfc3339(nxt))
    return Step(new, (Event("Warning", k.EVENT_DEGRADED, f"{why}; backing off {delay}s"),), wake_at=nxt)


def needs_attention(route: m.RouteStatus | None, ladder: m.LadderStatus | None) -> bool:
    """Whether an account has to be looked at by the periodic ladder tick."""
    return (route is not None and route.in_sync is False) or (ladder is not None and ladder.phase != "Idle")
