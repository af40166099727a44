"""Route drift in ``account`` mode, self-healed by the agent or repaired by the operator's ladder, checked on the wire.

The drift is real: ``POST /debug/drift`` on the agent pod (the operator started with ``SIPFLEET_AGENT_DEBUG_HOOKS``,
off by default) calls setRegistration(False) then (True) on the account, and with per-account proxies pjsua
2.15.1 then sends REGISTER to E, the Service-Route (PJSIP issue 4066). ``sipfleet.io/reregister`` does not take
that path any more: it re-creates the account (un-REGISTER, then REGISTER from a new registration client).
"""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from sipfleet.api import keys
from sipfleet.localenv.waiting import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.lab]

DEBUG_HOOKS = {"SIPFLEET_AGENT_DEBUG_HOOKS": "true"}


def registers(lab, user: str, since: float, node: str | None = None):
    return [r for r in lab.wire(since=since, method="REGISTER", node=node) if f":{user}@" in r.from_uri]


def _drift(accs, name: str) -> float:
    """POST /debug/drift to the agent pod hosting ``name``; the time it was sent."""
    pod = accs.core.read_namespaced_pod(accs.get(name)["status"]["agent"]["pod"], accs.ns)
    t = time.time()
    req = urllib.request.Request(f"http://{pod.status.pod_ip}:8080/debug/drift?account={name}", data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=20) as r:
        assert json.loads(r.read())["result"] == 1
    return t


def test_reregister_annotation_does_not_drift(operator, sipacc, lab, lab_user):
    user, password = lab_user("rereg")
    sipacc.secret("creds", user, password)
    sipacc.create("rita", sipacc.spec(lab, user, "creds", routeMode="account", drift={"selfHeal": False}))
    sipacc.wait_condition("rita", "Ready", timeout=120)
    t0 = time.time()
    sipacc.annotate("rita", {keys.ANNOTATION_REREGISTER: "1"})
    wait_for(lambda: (sipacc.get("rita")["status"].get("agent") or {}).get("reregisterTokenAck"), timeout=60,
             message="reregister acknowledged")
    unreg = wait_for(lambda: [r for r in registers(lab, user, t0, "P") if r.expires == "0"], timeout=30,
                     message="un-REGISTER via P")[0]
    wait_for(lambda: [r for r in registers(lab, user, unreg.at, "P") if r.expires != "0"], timeout=30,
             message="a fresh REGISTER via P")
    sipacc.wait_condition("rita", "Ready", timeout=60)
    time.sleep(2.0)  # a drifted REGISTER would follow at once
    assert registers(lab, user, t0, "E") == []
    st = sipacc.get("rita")["status"]
    assert st["route"]["inSync"] is True and st["route"].get("driftCount", 0) == 0
    assert not (st.get("ladder") or {}).get("token")
    assert not [e for e in sipacc.events("rita") if e.reason == keys.EVENT_ROUTE_DRIFT]


def test_drift_without_self_heal_is_repaired_by_the_ladder(own_operator, lab, lab_user):
    accs = own_operator(DEBUG_HOOKS)
    user, password = lab_user("drift")
    accs.secret("creds", user, password)
    accs.create("carol", accs.spec(lab, user, "creds", routeMode="account",
                                   drift={"selfHeal": False, "repairTimeoutSeconds": 20, "maxPodRestarts": 1}))
    accs.wait_condition("carol", "Ready", timeout=180)
    before_pod = accs.get("carol")["status"]["agent"]["pod"]

    t0 = _drift(accs, "carol")
    # the drift happened on the wire: REGISTER straight to E
    wait_for(lambda: registers(lab, user, t0, "E"), timeout=60, message="drifted REGISTER at E")
    # ... was reported, and the ladder ran: a Warning event and a repair request
    wait_for(lambda: [e for e in accs.events("carol") if e.type == "Warning" and e.reason == "RouteDrift"],
             timeout=60, message="Warning event RouteDrift")
    ladder = wait_for(lambda: (accs.get("carol")["status"].get("ladder") or {}).get("token"),
                      timeout=30, message="ladder token")
    # ... and repaired: in sync, and the next REGISTERs go through P again
    t_drift = max(r.at for r in registers(lab, user, t0, "E"))
    accs.wait_condition("carol", "RouteInSync", timeout=90)
    wait_for(lambda: [r for r in registers(lab, user, t_drift, "P") if r.at > t_drift], timeout=30,
             message="REGISTER via P after the drift")
    st = accs.wait_condition("carol", "Ready", timeout=60)["status"]
    assert st["ladder"]["phase"] == "Idle" and st["ladder"]["token"]
    # the repair was the cheap step (no pod restart was needed)
    assert st["ladder"]["lastMethod"] == "recreate-account", st["ladder"]
    assert st["agent"]["pod"] == before_pod
    assert st["agent"].get("repairTokenAck", "").endswith(f"op:{st['ladder']['token']}")
    assert st["route"]["lastRepair"]["trigger"] == "operator"
    wait_for(lambda: [e for e in accs.events("carol") if e.reason == "RouteRepaired"], timeout=15,
             message="Normal event RouteRepaired")
    assert ladder
    assert accs.operator.metrics().get("sipfleet_drift_repaired_total{method=\"recreate-account\"}", 0) >= 1


def test_self_heal_repairs_without_the_operator_and_a_flapping_route_escalates(own_operator, lab, lab_user):
    """selfHeal is on by default: the agent repairs at the first drifted REGISTER, the operator's ladder takes no
    step (no token), the self-heals are one Event with a count. Drifting more than flapThreshold times within the
    window makes the route RouteFlapping: a Warning event and the ladder's escalation (a repair token first)."""
    accs = own_operator(DEBUG_HOOKS)
    user, password = lab_user("heal")
    accs.secret("creds", user, password)
    accs.create("hal", accs.spec(lab, user, "creds", routeMode="account",
                                 drift={"flapThreshold": 2, "flapWindowSeconds": 600, "repairTimeoutSeconds": 30}))
    accs.wait_condition("hal", "Ready", timeout=180)
    assert accs.get("hal")["spec"]["drift"]["selfHeal"] is True  # the default, filled in by the apiserver

    t0 = _drift(accs, "hal")
    drifted = wait_for(lambda: [r for r in registers(lab, user, t0, "E") if r.expires != "0"], timeout=60,
                       message="drifted REGISTER at E")[0]
    back = wait_for(lambda: [r for r in registers(lab, user, drifted.at, "P") if r.expires != "0"
                             and r.call_id != drifted.call_id], timeout=30, message="REGISTER via P after it")[0]
    print(f"\nwire: drifted REGISTER at E -> REGISTER via P {1000 * (back.at - drifted.at):.1f} ms")
    st = wait_for(lambda: (s := accs.get("hal")["status"])["route"].get("selfHealCount") == 1
                  and s["route"].get("inSync") is True and s, timeout=30, message="selfHealCount 1 in status")
    assert st["route"]["lastRepair"]["trigger"] == "self-heal" and st["route"]["lastRepair"]["result"] == "repaired"
    assert st["route"]["driftCount"] == 1
    time.sleep(3.0)  # the operator has seen it by now: counted, no ladder step
    st = accs.get("hal")["status"]
    assert (st.get("ladder") or {}).get("phase", "Idle") == "Idle" and not (st.get("ladder") or {}).get("token"), st
    assert (st.get("ladder") or {}).get("driftCountSeen") == 1
    assert not [e for e in accs.events("hal") if e.reason == "RouteDrift"]
    healed = wait_for(lambda: [e for e in accs.events("hal") if e.reason == keys.EVENT_ROUTE_SELF_HEALED], timeout=30,
                      message="RouteSelfHealed event")
    assert len(healed) == 1 and healed[0].type == "Normal" and (healed[0].count or 1) == 1

    # two more drifts: 3 within the window (more than flapThreshold 2): flapping
    for n in (2, 3):
        _drift(accs, "hal")
        wait_for(lambda n=n: (accs.get("hal")["status"]["route"].get("driftCount") or 0) >= n, timeout=60,
                 message=f"drift {n} counted")
    accs.wait_condition("hal", keys.CONDITION_ROUTE_FLAPPING, "True", keys.REASON_FLAPPING, timeout=60)
    wait_for(lambda: [e for e in accs.events("hal") if e.type == "Warning" and e.reason == keys.EVENT_ROUTE_FLAPPING],
             timeout=30, message="Warning event RouteFlapping")
    lad = wait_for(lambda: (l := accs.get("hal")["status"].get("ladder") or {}).get("token") and l, timeout=30,
                   message="the ladder's repair token")
    assert lad["cause"] == "Flapping" and lad["phase"] in ("RepairRequested", "PodRestarted", "Degraded"), lad
    wait_for(lambda: (accs.get("hal")["status"].get("agent") or {}).get("repairTokenAck", "").endswith(lad["token"]),
             timeout=60, message="the agent carried out the ladder's token")
    # the self-heals stay one Event, its count raised
    healed = wait_for(lambda: [e for e in accs.events("hal") if e.reason == keys.EVENT_ROUTE_SELF_HEALED
                               and (e.count or 1) >= 3], timeout=30, message="RouteSelfHealed count 3")
    assert len([e for e in accs.events("hal") if e.reason == keys.EVENT_ROUTE_SELF_HEALED]) == 1, healed
    # every drift was healed on the wire: the last REGISTER went through P
    accs.wait_condition("hal", "RouteInSync", timeout=60)
    last_e = max(r.at for r in registers(lab, user, t0, "E"))
    wait_for(lambda: [r for r in registers(lab, user, last_e, "P") if r.expires != "0" and r.at > last_e], timeout=30,
             message="a REGISTER via P after the last drifted one")


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
