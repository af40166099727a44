"""The drift repair ladder: token -> pod restart -> Degraded with capped backoff; never a restart storm."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sipfleet.api import models as m
from sipfleet_operator import ladder as L
from sipfleet_operator.conditions import PodState, rfc3339

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
OLD_POD = PodState(name="agent-0-old", phase="Running", ready=True, ever_ready=True, started_at="2026-01-01T11:00:00Z")


def route(in_sync, drift_at=None, last_repair=None):
    return m.RouteStatus(
        mode="account", desired=["<sip:p;lr>"], effective=["<sip:e;lr>"] if in_sync is False else ["<sip:p;lr>"],
        in_sync=in_sync, last_drift_at=drift_at, last_repair=last_repair,
    )


def run(ladder, in_sync, now, drift=None, pod=OLD_POD, **kw):
    return L.step(
        L.Inputs(drift=drift or m.DriftSettings(), route=route(in_sync, **kw), ladder=ladder, pod=pod, now=now)
    )


def kinds(step):
    return [type(a).__name__ for a in step.actions]


def test_in_sync_idle_does_nothing():
    s = run(None, True, T0)
    assert s.ladder is None and not s.actions
    assert run(None, None, T0).actions == ()


def test_full_ladder_until_degraded_and_backoff():
    drift = m.DriftSettings(repair_timeout_seconds=10, max_pod_restarts=2)
    s1 = run(None, False, T0, drift)
    assert s1.ladder.phase == "RepairRequested"
    assert kinds(s1) == ["DriftSeen", "Event", "RequestRepair"]
    assert s1.actions[1].type == "Warning" and s1.actions[1].reason == "RouteDrift"
    token = s1.actions[2].token
    assert s1.ladder.token == token
    # idempotent within the timeout
    assert run(s1.ladder, False, T0 + timedelta(seconds=9), drift).actions == ()
    s2 = run(s1.ladder, False, T0 + timedelta(seconds=10), drift)
    assert s2.ladder.phase == "PodRestarted" and s2.ladder.attempts == 1
    assert L.RestartPod("agent-0-old") in s2.actions
    t = T0 + timedelta(seconds=10)
    wait = 10 + L.POD_START_GRACE_SECONDS
    new_pod = PodState(name="agent-0-new", phase="Running", ready=True, ever_ready=True, started_at=rfc3339(t + timedelta(seconds=2)))
    assert run(s2.ladder, False, t + timedelta(seconds=wait - 1), drift, pod=new_pod).actions == ()
    s3 = run(s2.ladder, False, t + timedelta(seconds=wait), drift, pod=new_pod)
    assert s3.ladder.phase == "PodRestarted" and s3.ladder.attempts == 2
    assert L.RestartPod("agent-0-new") in s3.actions
    t3 = t + timedelta(seconds=wait)
    s4 = run(s3.ladder, False, t3 + timedelta(seconds=wait), drift)
    assert s4.ladder.phase == "Degraded"
    assert not any(isinstance(a, L.RestartPod) for a in s4.actions)
    assert any(isinstance(a, L.Event) and a.reason == "Degraded" for a in s4.actions)
    # backoff doubles, capped; exactly one restart per backoff period
    restarts = 0
    ladder = s4.ladder
    now = t3 + timedelta(seconds=wait)
    waits = []
    for _ in range(400):
        now += timedelta(seconds=5)
        s = run(ladder, False, now, drift)
        if any(isinstance(a, L.RestartPod) for a in s.actions):
            restarts += 1
            waits.append((datetime.fromisoformat(s.ladder.next_attempt_at.replace("Z", "+00:00")) - now).total_seconds())
        ladder = s.ladder
    assert ladder.phase == "Degraded"
    assert waits[:4] == [60, 120, 240, 480] and max(waits) == L.BACKOFF_CAP_SECONDS
    assert restarts <= 2000 / 30  # never a storm: 2000 s saw at most a handful
    assert restarts == len(waits) and restarts < 10


def test_repaired_by_token():
    s1 = run(None, False, T0)
    s2 = run(s1.ladder, True, T0 + timedelta(seconds=2))
    assert s2.ladder.phase == "Idle" and s2.ladder.last_method == "recreate-account"
    rep = [a for a in s2.actions if isinstance(a, L.Repaired)]
    assert rep and rep[0].method == "recreate-account" and 1900 <= rep[0].duration_ms <= 2100
    assert any(isinstance(a, L.Event) and a.reason == "RouteRepaired" for a in s2.actions)
    # afterwards: idle and quiet, the token stays (the ConfigMap must not change back)
    s3 = run(s2.ladder, True, T0 + timedelta(seconds=30))
    assert s3.actions == () and s3.ladder == s2.ladder and s3.ladder.token == s1.ladder.token


def test_agent_measured_duration_wins_when_token_matches():
    s1 = run(None, False, T0)
    rec = m.RepairRecord(method="recreate-account", trigger="operator", token=f"op:{s1.ladder.token}",
                         started_at="x", duration_ms=7.5, result="repaired")
    s2 = run(s1.ladder, True, T0 + timedelta(seconds=2), last_repair=rec)
    assert s2.ladder.last_duration_ms == 7.5


def test_repaired_after_pod_restart():
    drift = m.DriftSettings(repair_timeout_seconds=5)
    s1 = run(None, False, T0, drift)
    s2 = run(s1.ladder, False, T0 + timedelta(seconds=5), drift)
    s3 = run(s2.ladder, True, T0 + timedelta(seconds=8), drift)
    assert s3.ladder.phase == "Idle" and s3.ladder.last_method == "restart-pod"


def test_young_pod_is_not_restarted_again():
    young = PodState(name="agent-0-young", phase="Running", ready=True, ever_ready=True, started_at=rfc3339(T0 + timedelta(seconds=8)))
    s1 = run(None, False, T0)
    s2 = run(s1.ladder, False, T0 + timedelta(seconds=10), pod=young)
    assert s2.ladder.phase == "PodRestarted"
    assert not any(isinstance(a, L.RestartPod) for a in s2.actions)


def test_zero_restarts_goes_straight_to_degraded():
    drift = m.DriftSettings(repair_timeout_seconds=3, max_pod_restarts=0)
    s1 = run(None, False, T0, drift)
    s2 = run(s1.ladder, False, T0 + timedelta(seconds=3), drift)
    assert s2.ladder.phase == "Degraded" and not any(isinstance(a, L.RestartPod) for a in s2.actions)


def test_self_heal_gets_a_head_start():
    drift = m.DriftSettings(self_heal=True, repair_timeout_seconds=10)
    s = run(None, False, T0 + timedelta(seconds=3), drift, drift_at=rfc3339(T0))
    assert s.actions == () and s.wake_at == T0 + timedelta(seconds=10)
    s = run(None, False, T0 + timedelta(seconds=10), drift, drift_at=rfc3339(T0))
    assert s.ladder.phase == "RepairRequested"


def test_recovers_from_degraded():
    ladder = m.LadderStatus(phase="Degraded", attempts=4, next_attempt_at=rfc3339(T0 + timedelta(minutes=5)))
    s = run(ladder, True, T0)
    assert s.ladder.phase == "Idle" and s.ladder.attempts == 0


def test_needs_attention():
    assert L.needs_attention(route(False), None)
    assert not L.needs_attention(route(True), None)
    assert L.needs_attention(route(True), m.LadderStatus(phase="PodRestarted"))
    assert not L.needs_attention(None, m.LadderStatus())


# ------------------------------------------------------------------------------------------------ flapping


def flap_route(count, in_sync=True, drift_at=None):
    return m.RouteStatus(mode="account", desired=["<sip:p;lr>"], effective=["<sip:p;lr>"] if in_sync else ["<sip:e;lr>"],
                         in_sync=in_sync, last_drift_at=drift_at, drift_count=count)


def flap(ladder, count, now, drift=None, in_sync=True, pod=OLD_POD):
    return L.step(L.Inputs(drift=drift or m.DriftSettings(), route=flap_route(count, in_sync, rfc3339(now)),
                           ladder=ladder, pod=pod, now=now))


def test_an_account_that_never_drifted_gets_no_ladder_written():
    assert flap(None, 0, T0).ladder is None
    assert flap(None, 0, T0 + timedelta(hours=1)).ladder is None


def test_self_healed_drifts_are_counted_and_quiet_until_flapping():
    drift = m.DriftSettings(flap_threshold=3, flap_window_seconds=300)
    ladder, t = None, T0
    for n in range(1, 4):  # three drifts, each healed by the agent before the operator looked: counted, no action
        t += timedelta(seconds=20)
        s = flap(ladder, n, t, drift)
        assert s.actions == () and s.ladder.phase == "Idle" and not s.ladder.flapping
        assert s.ladder.drift_count_seen == n and len(s.ladder.recent_drifts) == n
        ladder = s.ladder
    # the same status looked at again: nothing changes (no status write)
    assert flap(ladder, 3, t + timedelta(seconds=1), drift).ladder == ladder
    # the fourth within the window: RouteFlapping, the ladder's first step
    t += timedelta(seconds=20)
    s = flap(ladder, 4, t, drift)
    assert s.ladder.flapping and s.ladder.phase == "RepairRequested" and s.ladder.cause == "Flapping"
    assert kinds(s) == ["DriftSeen", "Event", "RequestRepair"]
    assert s.actions[1].type == "Warning" and s.actions[1].reason == "RouteFlapping"
    assert "more than 3 times within 300s" in s.actions[1].message


def test_drifts_spread_wider_than_the_window_are_not_flapping():
    drift = m.DriftSettings(flap_threshold=3, flap_window_seconds=60)
    ladder, t = None, T0
    for n in range(1, 20):
        t += timedelta(seconds=25)  # at most 3 within any 60 s
        s = flap(ladder, n, t, drift)
        assert not s.ladder.flapping and s.actions == (), n
        ladder = s.ladder
    assert len(ladder.recent_drifts) <= drift.flap_threshold + 1


def test_a_new_agent_counting_afresh_is_counted():
    drift = m.DriftSettings(flap_threshold=2, flap_window_seconds=300)
    s = flap(None, 5, T0, drift)  # an agent that drifted 5 times: the operator's first look
    assert s.ladder.drift_count_seen == 5 and s.ladder.flapping  # 5 new ones (capped at threshold + 1)
    s2 = flap(m.LadderStatus(drift_count_seen=7), 1, T0, drift)  # smaller count: a new agent, its one drift is new
    assert s2.ladder.drift_count_seen == 1 and len(s2.ladder.recent_drifts) == 1


def test_flapping_route_escalates_and_backs_off_instead_of_looping():
    """A route that drifts again after every repair (the agent self-heals each one within milliseconds): each drift
    after a step takes the next step (token -> pod restarts -> Degraded), then one pod restart per back-off period
    however often it drifts; it never loops."""
    drift = m.DriftSettings(flap_threshold=3, flap_window_seconds=300, repair_timeout_seconds=10, max_pod_restarts=2)
    ladder, t, count = None, T0, 0
    phases, restarts, flap_events, tokens = [], [], 0, set()
    for tick in range(2400):  # 40 minutes, a drift every 10 s, the operator looking every second
        t = T0 + timedelta(seconds=tick)
        if tick % 10 == 0:
            count += 1
        # the agent pod restarts take effect: a young pod after each restart
        pod = PodState(name=f"agent-{len(restarts)}", phase="Running", ready=True, ever_ready=True,
                       started_at=rfc3339(restarts[-1] + timedelta(seconds=1)) if restarts else OLD_POD.started_at)
        s = flap(ladder, count, t, drift, pod=pod)
        for a in s.actions:
            if isinstance(a, L.RestartPod):
                restarts.append(t)
            if isinstance(a, L.RequestRepair):
                tokens.add(a.token)
            if isinstance(a, L.Event) and a.reason == "RouteFlapping":
                flap_events += 1
        ladder = s.ladder if s.ladder is not None else ladder
        if not phases or phases[-1] != ladder.phase:
            phases.append(ladder.phase)
    assert phases[:4] == ["Idle", "RepairRequested", "PodRestarted", "Degraded"], phases
    assert ladder.phase == "Degraded" and ladder.flapping and ladder.cause == "Flapping"
    assert flap_events == 1 and len(tokens) == 1
    # back-off: the gaps between restarts in Degraded grow and are capped; no restart storm
    gaps = [(b - a).total_seconds() for a, b in zip(restarts, restarts[1:])]
    assert len(restarts) <= drift.max_pod_restarts + 8, gaps
    degraded_gaps = gaps[drift.max_pod_restarts:]
    assert degraded_gaps == sorted(degraded_gaps) and max(degraded_gaps) <= L.BACKOFF_CAP_SECONDS + 1
    assert degraded_gaps[-1] >= 4 * degraded_gaps[0]


def test_flapping_ends_when_the_route_calms_down():
    drift = m.DriftSettings(flap_threshold=3, flap_window_seconds=60)
    ladder, t = None, T0
    for n in range(1, 5):
        t += timedelta(seconds=5)
        ladder = flap(ladder, n, t, drift).ladder
    assert ladder.flapping and ladder.phase == "RepairRequested"
    # in sync, no more drifts: waits (no timeout escalation for a route that is in sync) ...
    s = flap(ladder, 4, t + timedelta(seconds=30), drift)
    assert s.actions == () and s.ladder.phase == "RepairRequested" and s.wake_at is not None
    # ... until the window no longer holds more than the threshold: Idle, not flapping
    s = flap(ladder, 4, s.wake_at, drift)
    assert s.ladder.phase == "Idle" and not s.ladder.flapping and s.ladder.cause is None
    assert [a.reason for a in s.actions if isinstance(a, L.Event)] == ["RouteRepaired"]


def test_flapping_starting_during_a_drift_escalation_switches_its_cause():
    drift = m.DriftSettings(self_heal=False, flap_threshold=1, flap_window_seconds=300)
    s1 = flap(None, 1, T0, drift, in_sync=False)
    assert s1.ladder.phase == "RepairRequested" and s1.ladder.cause == "Drift"
    s2 = flap(s1.ladder, 2, T0 + timedelta(seconds=2), drift, in_sync=False)
    assert s2.ladder.flapping and s2.ladder.cause == "Flapping" and s2.ladder.phase == "RepairRequested"
    assert [a.reason for a in s2.actions] == ["RouteFlapping"]
