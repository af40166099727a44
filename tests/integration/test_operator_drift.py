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
    # the event is posted after the status patch that says Ready (best effort, nobody waits for it)
    wait_for(lambda: [e for e in sipacc.events("carol") if e.reason == "RouteRepaired"], timeout=15,
             message="Normal event RouteRepaired")
    assert ladder
    assert operator.metrics().get("sipfleet_drift_repaired_total{method=\"recreate-account\"}", 0) >= 1


def _agent_pid(cluster, namespace: str, pod: str) -> int:
    """Host PID of the agent container of a pod (through the node's CRI)."""
    return cluster.container_pid(namespace, pod, "agent")


def test_agent_that_cannot_repair_gets_its_pod_restarted(operator, sipacc, cluster, lab, lab_user):
    """Ladder step 2 with a real pod restart. The agent is frozen (SIGSTOP), so it cannot carry out the repair
    token; the drift report it would have written is written in its place (the status subresource, as the
    agent writes it). Not in sync within repairTimeoutSeconds -> the operator deletes the pod -> the new pod
    registers through P -> Idle with lastMethod restart-pod."""
    import os
    import signal
    from datetime import datetime, timezone

    user, password = lab_user("frozen")
    sipacc.secret("creds", user, password)
    sipacc.create("hank", sipacc.spec(lab, user, "creds", routeMode="account",
                                      drift={"repairTimeoutSeconds": 3, "maxPodRestarts": 2}))
    sipacc.wait_condition("hank", "Ready", timeout=120)
    st = sipacc.get("hank")["status"]
    old_pod = st["agent"]["pod"]
    pid = wait_for(lambda: _agent_pid(cluster, sipacc.ns, old_pod), timeout=30, message="agent pid",
                   ignore=(AssertionError, OSError, ValueError, RuntimeError))
    os.kill(pid, signal.SIGSTOP)
    try:
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        route = st["route"]
        sipacc.custom.patch_namespaced_custom_object_status(
            "sipfleet.io", "v1alpha1", sipacc.ns, "sipaccounts", "hank",
            {"status": {"route": {"inSync": False, "effective": [lab.edge_uri()], "firstHop": f"udp:{lab.hostport('E')}",
                                  "lastDriftAt": now, "observedAt": now, "desired": route["desired"]}}})
        sipacc.wait_condition("hank", "RouteInSync", status="False", reason="RouteDrift", timeout=60)
        wait_for(lambda: (sipacc.get("hank")["status"].get("ladder") or {}).get("phase") == "PodRestarted",
                 timeout=60, message="ladder step 2 (pod restart)")
    finally:
        try:
            os.kill(pid, signal.SIGCONT)  # let it handle its SIGTERM
        except ProcessLookupError:
            pass
    t_restart = time.time()
    wait_for(lambda: [e for e in sipacc.events("hank") if e.reason == "RestartingAgent"], timeout=30,
             message="RestartingAgent event")

    def repaired():
        s = sipacc.get("hank")["status"]
        lad = s.get("ladder") or {}
        return s["agent"]["pod"] != old_pod and lad.get("phase") == "Idle" and s["route"].get("inSync") is True

    wait_for(repaired, timeout=120, interval=0.5, message="repaired by the new pod")
    st = sipacc.wait_condition("hank", "Ready", timeout=60)["status"]
    assert st["ladder"]["lastMethod"] == "restart-pod", st["ladder"]
    new_pod = sipacc.core.read_namespaced_pod(st["agent"]["pod"], sipacc.ns)
    regs = [r for r in registers(lab, user, t_restart, "P") if r.src.startswith(new_pod.status.pod_ip + ":")]
    assert regs, "no REGISTER through P from the new pod"
    wait_for(lambda: any(e.reason == "RouteRepaired" for e in sipacc.events("hank")), timeout=15,
             message="Normal event RouteRepaired")
