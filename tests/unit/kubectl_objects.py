"""Recorded-shape API objects for the kubectl plugin's unit tests (the JSON the apiserver serves), built small."""

from __future__ import annotations

NS = "demo"
AGENT_A = "sipfleet-agent-ba582bff-0"
AGENT_D = "sipfleet-agent-4be1c2aa-0"


def cond(type_, status, reason, ltt, message=""):
    return {"type": type_, "status": status, "reason": reason, "message": message, "observedGeneration": 1,
            "lastTransitionTime": ltt}


def healthy_conditions(ltt="2026-12-02T04:00:05Z"):
    return [cond("Ready", "True", "Ready", ltt, "registered through the desired route"),
            cond("Registered", "True", "Registered", ltt, "200 OK"),
            cond("RouteInSync", "True", "InSync", ltt, "REGISTER sent via udp:10.213.201.1:5060 along the desired route"),
            cond("AgentReady", "True", "AgentReady", "2026-12-02T04:00:03Z"),
            cond("Degraded", "False", "AsExpected", "2026-12-02T04:00:01Z")]


def account(name, agent, pod, conditions=None, route=None, ladder=None, annotations=None, ns=NS, mode="prevent",
            registration=None):
    return {
        "apiVersion": "sipfleet.io/v1alpha1", "kind": "SipAccount",
        "metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}", "generation": 1,
                     "creationTimestamp": "2026-12-02T04:00:00Z", "annotations": annotations or {}},
        "spec": {"aor": f"sip:{name}@lab.sipfleet.test", "registrar": "sip:10.213.201.2:5060",
                 "route": ["sip:10.213.201.1:5060;lr"], "routeMode": mode,
                 "credentials": {"secretName": f"{name}-sip"}},
        "status": {
            "observedGeneration": 1,
            "conditions": healthy_conditions() if conditions is None else conditions,
            "registration": registration or {"state": "Registered", "code": 200, "reason": "OK",
                                             "expiresSeconds": 300, "registeredSince": "2026-12-02T04:00:04.500Z"},
            "route": route or {"mode": mode, "desired": ["sip:10.213.201.1:5060;lr", "sip:10.213.201.3:5060;lr"],
                               "effective": ["sip:10.213.201.1:5060;lr"], "firstHop": "udp:10.213.201.1:5060",
                               "inSync": True, "observedAt": "2026-12-02T04:00:04.400Z"},
            "agent": {"name": agent, "pod": pod, "version": "0.1.0"},
            "ladder": ladder or {"phase": "Idle", "attempts": 0},
        },
    }


def repair(started, completed, ms, method="recreate-account", trigger="operator", result="repaired", token="op:t1"):
    return {"method": method, "trigger": trigger, "token": token, "driftSeenAt": started, "startedAt": started,
            "completedAt": completed, "durationMs": ms, "result": result}


def event(name, reason, type_, first, last=None, count=1, message="", ns=NS):
    return {"kind": "Event", "metadata": {"name": f"{name}.abc{reason}", "namespace": ns},
            "involvedObject": {"apiVersion": "sipfleet.io/v1alpha1", "kind": "SipAccount", "name": name,
                               "namespace": ns},
            "reason": reason, "type": type_, "message": message, "count": count, "firstTimestamp": first,
            "lastTimestamp": last or first, "source": {"component": "sipfleet-operator"}}


def deployment(agent, accounts, ready=1, replicas=1, ns=NS):
    return {"kind": "Deployment",
            "metadata": {"name": agent, "namespace": ns,
                         "labels": {"app.kubernetes.io/managed-by": "sipfleet-operator",
                                    "app.kubernetes.io/component": "agent", "sipfleet.io/agent": agent},
                         "ownerReferences": [{"apiVersion": "sipfleet.io/v1alpha1", "kind": "SipAccount", "name": a,
                                              "uid": f"uid-{a}", "controller": False} for a in accounts]},
            "spec": {"replicas": replicas},
            "status": {"replicas": replicas, "readyReplicas": ready} if ready else {"replicas": replicas}}


def pod(name, agent, ready=True, restarts=0, node="sipfleet-node-0", waiting=None, unschedulable=None, ns=NS,
        last_terminated=None):
    conds = [{"type": "PodScheduled", "status": "True"}]
    if unschedulable:
        conds = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": unschedulable,
                  "lastTransitionTime": "2026-12-02T04:10:00Z"}]
        node = None
    else:
        conds.append({"type": "Ready", "status": "True" if ready else "False"})
    cs = {"name": "agent", "restartCount": restarts, "ready": ready,
          "state": {"waiting": {"reason": waiting, "message": "back-off 40s restarting failed container"}}
          if waiting else {"running": {"startedAt": "2026-12-02T04:00:02Z"}}}
    if last_terminated:
        cs["lastState"] = {"terminated": last_terminated}
    return {"kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": "2026-12-02T04:00:01Z",
                         "labels": {"app.kubernetes.io/managed-by": "sipfleet-operator",
                                    "app.kubernetes.io/component": "agent", "sipfleet.io/agent": agent}},
            "spec": {"nodeName": node} if node else {},
            "status": {"phase": "Running" if not unschedulable else "Pending", "podIP": "10.213.2.29",
                       "conditions": conds, **({} if unschedulable else {"containerStatuses": [cs]})}}
