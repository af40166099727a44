"""Route drift in ``account`` mode, repaired by the operator's ladder and checked on the wire.

``sipfleet.io/reregister`` makes the agent call setRegistration(False) then (True): with per-account proxies
(routeMode account) pjsua 2.15.1 then sends REGISTER to E, the Service-Route (PJSIP issue 4066). The agent
measures the drift (status.route.inSync false), the operator sets RouteInSync=False/RouteDrift, posts a
Warning event and puts a repair token into the assignment; the agent re-creates the account and REGISTER goes
through P again.
"""

from __future__ import annotations

import time

import pytest

from sipfleet.localenv.waiting import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.lab]


def registers(lab, user: str, since: float, node: str | None = None):
    return [r for r in lab.wire(since=since, method="REGISTER", node=node) if f":{user}@" in r.from_uri]


def test_drift_is_seen_reported_and_repaired(operator, sipacc, lab, lab_user):
    user, password = lab_user("drift")
    sipacc.secret("creds", user, password)
    sipacc.create("carol", sipacc.spec(lab, user, "creds", routeMode="account",
                                       drift={"repairTimeoutSeconds": 20, "maxPodRestarts": 1}))
    sipacc.wait_condition("carol", "Ready", timeout=120)
    before_pod = sipacc.get("carol")["status"]["agent"]["pod"]

    t0 = time.time()
    sipacc.annotate("carol", {"sipfleet.io/reregister": "1"})

    # the drift happened on the wire: REGISTER straight to E
    wait_for(lambda: registers(lab, user, t0, "E"), timeout=60, message="drifted REGISTER at E")
    # ... was reported, and the ladder ran: a Warning event and a repair request
    wait_for(lambda: [e for e in sipacc.events("carol") if e.type == "Warning" and e.reason == "RouteDrift"],
             timeout=60, message="Warning event RouteDrift")
    ladder = wait_for(lambda: (sipacc.get("carol")["status"].get("ladder") or {}).get("token"),
                      timeout=30, message="ladder token")
    # ... and repaired: in sync, and the next REGISTERs go through P again
    t_drift = max(r.at for r in registers(lab, user, t0, "E"))
    sipacc.wait_condition("carol", "RouteInSync", timeout=90)
    wait_for(lambda: [r for r in registers(lab, user, t_drift, "P") if r.at > t_drift], timeout=30,
             message="REGISTER via P after the drift")
    last_p = max(r.at for r in registers(lab, user, t_drift, "P"))
    assert last_p > t_drift
    st = sipacc.wait_condition("carol", "Ready", timeout=60)["status"]
    assert st["ladder"]["phase"] == "Idle" and st["ladder"]["token"]
    assert st["ladder"]["lastMethod"] in ("recreate-account", "restart-pod")
    assert st["route"]["inSync"] is True
    # the repair was the cheap step (no pod restart was needed)
    assert st["ladder"]["lastMethod"] == "recreate-account", st["ladder"]
    assert st["agent"]["pod"] == before_pod
    assert st["agent"].get("repairTokenAck", "").endswith(f"op:{st['ladder']['token']}")
    assert [e for e in sipacc.events("carol") if e.reason == "RouteRepaired"]
    assert ladder
    assert operator.metrics().get("sipfleet_drift_repaired_total{method=\"recreate-account\"}", 0) >= 1
