"""User annotations: ``sipfleet.io/repair`` re-creates the account (a new REGISTER through P),
``sipfleet.io/paused`` freezes what the agent is told until it is removed."""

from __future__ import annotations

import time

import pytest

from sipfleet.localenv.waiting import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.lab]


def assigned(sipacc, name: str) -> dict:
    agent = sipacc.hosting_agent(name)
    return next(a for a in sipacc.agent_configmaps()[agent]["accounts"] if a["name"] == name)


def test_repair_annotation_and_pause(operator, sipacc, lab, lab_user):
    user, password = lab_user("ann")
    sipacc.secret("creds", user, password)
    sipacc.create("frank", sipacc.spec(lab, user, "creds"))
    sipacc.wait_condition("frank", "Ready", timeout=120)

    # repair on request: the agent re-creates the account and registers again through P
    t0 = time.time()
    sipacc.annotate("frank", {"sipfleet.io/repair": "please-1"})
    wait_for(lambda: (sipacc.get("frank")["status"].get("agent") or {}).get("repairTokenAck") == "user:please-1",
             timeout=60, message="repair token acknowledged by the agent")
    wait_for(lambda: [r for r in lab.wire(since=t0, method="REGISTER", node="P") if f":{user}@" in r.from_uri],
             timeout=30, message="a new REGISTER through P")
    sipacc.wait_condition("frank", "Ready", timeout=60)

    # paused: a spec change is not passed on; Ready says why
    sipacc.annotate("frank", {"sipfleet.io/paused": "true"})
    sipacc.wait_condition("frank", "Ready", status="False", reason="Paused", timeout=60)
    gen0 = sipacc.get("frank")["metadata"]["generation"]
    assert assigned(sipacc, "frank")["generation"] == gen0
    sipacc.custom.patch_namespaced_custom_object(
        "sipfleet.io", "v1alpha1", sipacc.ns, "sipaccounts", "frank",
        {"spec": {"registration": {"expiresSeconds": 600}}})
    gen1 = sipacc.get("frank")["metadata"]["generation"]
    assert gen1 > gen0
    # the operator saw the new generation (its conditions say so) but did not act on it
    wait_for(lambda: (sipacc.condition("frank", "Ready") or {}).get("observedGeneration") == gen1,
             timeout=60, message="conditions computed for the new generation")
    assert assigned(sipacc, "frank")["generation"] == gen0
    assert assigned(sipacc, "frank")["registration"]["expiresSeconds"] == 300
    assert sipacc.get("frank")["status"]["observedGeneration"] == gen0

    # resumed: the change goes out, the account registers with it
    sipacc.annotate("frank", {"sipfleet.io/paused": None})
    wait_for(lambda: assigned(sipacc, "frank")["generation"] == gen1, timeout=60, message="assignment updated")
    assert assigned(sipacc, "frank")["registration"]["expiresSeconds"] == 600
    wait_for(lambda: sipacc.get("frank")["status"].get("observedGeneration") == gen1, timeout=60,
             message="observedGeneration")
    sipacc.wait_condition("frank", "Ready", timeout=120)
