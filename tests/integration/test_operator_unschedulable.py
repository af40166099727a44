"""An agent pod the scheduler cannot place says so on each of its accounts: Ready and AgentReady False, reason
Unschedulable, with the scheduler's own message (not just "starting"). The pod is made too big for the real node
through the operator's sizing settings (the chart's agent.sizing)."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.lab]

HUGE = 64 * 1024 * 1024  # MiB: 64 TiB of memory for every agent pod


def test_an_agent_pod_too_big_for_the_node_is_unschedulable_on_its_accounts(own_operator, lab, lab_user):
    sipacc = own_operator({"SIPFLEET_AGENT_SIZING": json.dumps({
        "requests": {"memory": {"base": HUGE}}, "limits": {"memory": {"base": HUGE}}})})
    for name in ("big1", "big2"):
        u, p = lab_user("us")
        sipacc.secret(f"{name}-creds", u, p)
        sipacc.create(name, sipacc.spec(lab, u, f"{name}-creds"))
    for name in ("big1", "big2"):
        ready = sipacc.wait_condition(name, "Ready", "False", "Unschedulable", timeout=120)
    (pod,) = sipacc.agent_pods()
    sched = next(c for c in pod.status.conditions if c.type == "PodScheduled")
    assert (sched.status, sched.reason) == ("False", "Unschedulable")
    assert "Insufficient memory" in sched.message
    for name in ("big1", "big2"):
        st = sipacc.get(name)["status"]
        conds = {c["type"]: c for c in st["conditions"]}
        assert (conds["AgentReady"]["status"], conds["AgentReady"]["reason"]) == ("False", "Unschedulable")
        for c in (conds["Ready"], conds["AgentReady"]):
            assert sched.message in c["message"] and pod.metadata.name in c["message"], c
        assert conds["Registered"]["status"] == "Unknown"
    assert ready["status"]["conditions"][0]["type"] == "Ready"
