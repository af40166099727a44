"""Conditions follow the agent's measurements only while the agent that measured is alive."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from sipfleet.api import models as m
from sipfleet_operator import conditions as c

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
POD = c.PodState(name="sipfleet-agent-x-0-abc", phase="Running", ready=True, ever_ready=True)


def status(reg=None, in_sync=None, agent_pod="sipfleet-agent-x-0-abc", ladder=None, conditions=()):
    return m.SipAccountStatus(
        registration=m.RegistrationStatus(state=reg, code=200 if reg == "Registered" else 403) if reg else None,
        route=m.RouteStatus(mode="account", desired=["<sip:p;lr>"], effective=["<sip:e;lr>"], in_sync=in_sync)
        if in_sync is not None
        else None,
        agent=m.AgentRef(name="sipfleet-agent-x-0", pod=agent_pod) if agent_pod else None,
        ladder=ladder,
        conditions=list(conditions),
    )


def inputs(st, pod=POD, placed="sipfleet-agent-x-0", creds=None, paused=False):
    return c.Inputs(generation=4, placed_in=placed, credentials_problem=creds, pod=pod, status=st, paused=paused)


def by_type(conds):
    return {x.type: x for x in conds}


def test_registered_and_in_sync_is_ready():
    conds = by_type(c.compute(inputs(status("Registered", True)), T0))
    assert [k for k in conds] == ["Ready", "Registered", "RouteInSync", "RouteFlapping", "AgentReady", "Degraded"]
    assert conds["RouteFlapping"].status == "False" and conds["RouteFlapping"].reason == "Stable"
    assert conds["Ready"].status == "True"
    assert conds["Registered"].status == "True" and conds["Registered"].reason == "Registered"
    assert conds["RouteInSync"].status == "True"
    assert conds["AgentReady"].status == "True"
    assert conds["Degraded"].status == "False"
    assert all(x.observed_generation == 4 for x in conds.values())


def test_failure_reasons():
    conds = by_type(c.compute(inputs(status("Failed")), T0))
    assert (conds["Registered"].status, conds["Registered"].reason) == ("False", "RegistrationFailed")
    assert conds["Ready"].reason == "RegistrationFailed"
    drift = by_type(c.compute(inputs(status("Registered", False)), T0))
    assert (drift["RouteInSync"].status, drift["RouteInSync"].reason) == ("False", "RouteDrift")
    assert drift["Ready"].status == "False" and drift["Ready"].reason == "RouteDrift"


def test_credentials_missing_before_placement():
    conds = by_type(c.compute(inputs(status(), pod=None, placed=None, creds="Secret ns/creds not found"), T0))
    assert (conds["Registered"].status, conds["Registered"].reason) == ("False", "CredentialsMissing")
    assert conds["AgentReady"].reason == "CredentialsMissing"
    assert conds["Ready"].reason == "CredentialsMissing"
    assert "not found" in conds["Registered"].message


def test_credentials_invalid_is_its_own_reason():
    i = c.Inputs(generation=4, placed_in=None, credentials_problem="Secret creds key username holds control characters",
                 pod=None, status=status(), credentials_reason="CredentialsInvalid")
    conds = by_type(c.compute(i, T0))
    assert [conds[t].reason for t in ("Ready", "Registered", "AgentReady")] == ["CredentialsInvalid"] * 3
    assert "control characters" in conds["Registered"].message


def test_agent_gone_makes_registration_unknown():
    gone = c.PodState(name="sipfleet-agent-x-0-abc", phase="Running", ready=False, ever_ready=True)
    conds = by_type(c.compute(inputs(status("Registered", True), pod=gone), T0))
    assert (conds["AgentReady"].status, conds["AgentReady"].reason) == ("False", "AgentNotReporting")
    assert (conds["Registered"].status, conds["Registered"].reason) == ("Unknown", "AgentNotReporting")
    assert conds["RouteInSync"].status == "Unknown"
    nopod = by_type(c.compute(inputs(status("Registered", True), pod=None), T0))
    assert nopod["Registered"].status == "Unknown" and nopod["AgentReady"].reason == "AgentPending"
    assert nopod["Registered"].reason == "AgentNotReporting"  # someone reported before: it stopped
    starting = c.PodState(name="p2", phase="Pending", ready=False)
    st = by_type(c.compute(inputs(status("Registered", True), pod=starting), T0))
    assert st["AgentReady"].reason == "AgentPending" and st["Registered"].status == "Unknown"
    assert st["Registered"].reason == "AgentNotReporting"
    fresh = by_type(c.compute(inputs(status(agent_pod=None), pod=starting), T0))
    assert (fresh["Registered"].status, fresh["Registered"].reason) == ("Unknown", "AgentPending")


def test_stale_status_from_previous_pod_is_not_trusted():
    new_pod = c.PodState(name="sipfleet-agent-x-0-new", phase="Running", ready=True, ever_ready=True)
    conds = by_type(c.compute(inputs(status("Registered", True), pod=new_pod), T0))
    assert (conds["Registered"].status, conds["Registered"].reason) == ("Unknown", "AgentNotReporting")
    # an agent that does not say which pod it is, is trusted
    conds = by_type(c.compute(inputs(status("Registered", True, agent_pod=None), pod=new_pod), T0))
    assert conds["Registered"].status == "True"


def test_last_transition_time_is_kept_when_status_unchanged():
    first = c.compute(inputs(status("Registered", True)), T0)
    st = status("Registered", True, conditions=first)
    again = c.compute(inputs(st), T0 + timedelta(minutes=5))
    assert again == first  # idempotent: nothing to patch
    st2 = status("Failed", conditions=first)
    later = by_type(c.compute(inputs(st2), T0 + timedelta(minutes=6)))
    assert later["Registered"].last_transition_time == "2026-01-01T12:06:00Z"
    assert later["AgentReady"].last_transition_time == "2026-01-01T12:00:00Z"


def test_degraded_and_paused():
    ladder = m.LadderStatus(phase="Degraded", attempts=3, next_attempt_at="2026-01-01T12:10:00Z")
    conds = by_type(c.compute(inputs(status("Registered", False, ladder=ladder)), T0))
    assert conds["Degraded"].status == "True" and conds["Degraded"].reason == "RepairBackoff"
    paused = by_type(c.compute(inputs(status("Registered", True), paused=True), T0))
    assert paused["Ready"].reason == "Paused"


def test_conditions_are_valid_api_objects():
    for st in (status(), status("Registering"), status("Unregistered"), status("Registered", False)):
        for cond in c.compute(inputs(st), T0):
            m.Condition.model_validate(cond.to_api())


def test_an_unschedulable_pod_says_why_on_the_account():
    msg = "0/1 nodes are available: 1 Insufficient memory. preemption: 0/1 nodes are available"
    pod = c.PodState(name="sipfleet-agent-x-0-abc", phase="Pending", unschedulable=msg)
    conds = by_type(c.compute(inputs(status(agent_pod=None), pod=pod), T0))
    assert (conds["AgentReady"].status, conds["AgentReady"].reason) == ("False", "Unschedulable")
    assert (conds["Ready"].status, conds["Ready"].reason) == ("False", "Unschedulable")
    assert msg in conds["Ready"].message and "sipfleet-agent-x-0-abc" in conds["Ready"].message
    assert conds["Registered"].status == "Unknown" and msg in conds["Registered"].message
    # once scheduled it is an ordinary starting pod again
    started = c.PodState(name="sipfleet-agent-x-0-abc", phase="Pending")
    assert by_type(c.compute(inputs(status(agent_pod=None), pod=started), T0))["Ready"].reason == "AgentPending"


def test_route_flapping_is_its_own_condition_and_ready_does_not_hang_on_it():
    ladder = m.LadderStatus(phase="RepairRequested", flapping=True, cause="Flapping",
                            recent_drifts=["2026-01-01T11:59:00.000Z", "2026-01-01T11:59:10.000Z"])
    conds = by_type(c.compute(inputs(status("Registered", True, ladder=ladder)), T0))
    assert conds["RouteFlapping"].status == "True" and conds["RouteFlapping"].reason == "Flapping"
    assert "2 times" in conds["RouteFlapping"].message and "11:59:00" in conds["RouteFlapping"].message
    assert conds["Ready"].status == "True" and conds["Degraded"].status == "False"
    calm = by_type(c.compute(inputs(status("Registered", True, ladder=ladder.model_copy(update={"flapping": False}))), T0))
    assert calm["RouteFlapping"].status == "False" and calm["RouteFlapping"].reason == "Stable"


def test_the_agents_failure_reason_becomes_the_registered_conditions_reason():
    reg = m.RegistrationStatus(state="Failed", reason="10 Service-Route URIs; pjsua holds at most 8",
                               failure_reason="RegistrarResponseRejected")
    st = status("Failed").model_copy(update={"registration": reg})
    conds = by_type(c.compute(inputs(st), T0))
    assert (conds["Registered"].status, conds["Registered"].reason) == ("False", "RegistrarResponseRejected")
    assert "at most 8" in conds["Registered"].message and conds["Ready"].reason == "RegistrarResponseRejected"
    with pytest.raises(ValueError):
        m.RegistrationStatus(state="Failed", failure_reason="not a reason")


def test_an_agent_starting_is_one_state_and_its_own_early_report_is_not_a_stopped_agent():
    """No pod yet, Pending, Running but not Ready: one and the same condition (no status write per step); the
    starting pod's own report, sent before its readiness probe passed, does not make it 'not reporting'."""
    placed = "sipfleet-agent-x-0"
    steps = [None, c.PodState(name="p2", phase="Pending"), c.PodState(name="p2", phase="Running")]
    seen = {tuple((x.type, x.status, x.reason, x.message) for x in c.desired(inputs(status(agent_pod=None), pod=p)))
            for p in steps}
    assert len(seen) == 1
    early = by_type(c.compute(inputs(status("Registered", True, agent_pod="p2"), pod=steps[2]), T0))
    assert (early["Registered"].status, early["Registered"].reason) == ("Unknown", "AgentPending")
    assert early["AgentReady"].message == f"agent {placed} is starting"
    # the same report from a pod that was Ready once and is not now: it stopped reporting
    stopped = c.PodState(name="p2", phase="Running", ever_ready=True)
    assert by_type(c.compute(inputs(status("Registered", True, agent_pod="p2"), pod=stopped), T0))[
        "Registered"].reason == "AgentNotReporting"
