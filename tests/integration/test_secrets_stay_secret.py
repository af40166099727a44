"""Secrets stay secret under faults (issue 13 item 6): after a small fleet went through a wrong password, a killed
pjsua2 worker, a rotated password and a deleted agent pod, no password - as text or as base64 - appears anywhere
but in its Secret: not in the operator's log, the agents' container logs (the current and the previous run, as
the kubelet wrote them), Events, SipAccounts (spec and status), ConfigMaps, Pods, Deployments or ReplicaSets.

The scan proves it reads the right things: each account's username is found in the agents' logs and in the
SipAccounts, so a scan that read nothing would fail.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import time
from pathlib import Path

import pytest
from kubernetes import client

from sipfleet.localenv.waiting import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.lab, pytest.mark.slow]


def forms(password: str) -> set[str]:
    """The password as text and base64 (with and without padding), never shorter than 8 characters."""
    b64 = base64.b64encode(password.encode()).decode()
    return {password, b64, b64.rstrip("=")}


def children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def ns_pid(host_pid: int) -> int:
    """The PID a host process has in its innermost PID namespace (the pod's)."""
    for line in Path(f"/proc/{host_pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    raise AssertionError(f"no NSpid for {host_pid}")


def worker_host_pid(cluster, namespace: str, pod, account: str) -> int:
    """The host PID of the pjsua2 worker that hosts ``account`` in agent pod ``pod`` (its /status says the
    worker's PID in the pod; the supervisor's descendants on the host are matched by their PID there)."""
    import urllib.request

    with urllib.request.urlopen(f"http://{pod.status.pod_ip}:8080/status", timeout=10) as r:
        snap = json.loads(r.read())
    worker = {a["name"]: a["worker"] for a in snap["accounts"]}[account]
    in_pod = {w["id"]: w["pid"] for w in snap["workers"]}[worker]
    sup = cluster.container_pid(namespace, pod.metadata.name)
    todo, seen = [sup], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += children(p)
    (host,) = [p for p in seen if ns_pid(p) == in_pod]
    return host


def test_no_password_leaves_its_secret_under_faults(operator, sipacc, lab, lab_user, cluster, k8s, op_namespace):
    core, apps = client.CoreV1Api(k8s), client.AppsV1Api(k8s)
    ns = op_namespace
    users: dict[str, str] = {}
    passwords: set[str] = set()
    for name in ("sa", "sb"):
        user, password = lab_user(name)
        users[name] = user
        passwords.add(password)
        sipacc.secret(f"{name}-sip", user, password)
        sipacc.create(name, sipacc.spec(lab, user, f"{name}-sip"))
    # a password R does not know: challenged, refused
    user, _ = lab_user("sw")
    wrong = "Wrong-" + secrets.token_urlsafe(12)
    users["sw"], passwords = user, passwords | {wrong}
    sipacc.secret("sw-sip", user, wrong)
    sipacc.create("sw", sipacc.spec(lab, user, "sw-sip"))
    for name in ("sa", "sb"):
        sipacc.wait_condition(name, "Registered", timeout=180)
    sipacc.wait_condition("sw", "Registered", status="False", timeout=120)

    logs: list[str] = [Path(operator.log_path).read_text(errors="replace")]

    def agent_logs() -> None:
        for pod in sipacc.agent_pods():
            for previous in (False, True):
                try:
                    path = cluster.container_log(pod.metadata.name, ns, previous=previous)
                except Exception:  # noqa: BLE001 - no previous run
                    continue
                logs.append(path.read_text(errors="replace"))

    # a killed worker: the supervisor restarts it, its accounts register again
    (pod,) = [p for p in sipacc.agent_pods() if not p.metadata.deletion_timestamp]
    since = sipacc.get("sa")["status"]["registration"].get("registeredSince")
    os.kill(worker_host_pid(cluster, ns, pod, "sa"), signal.SIGKILL)
    wait_for(lambda: sipacc.get("sa")["status"]["registration"].get("registeredSince") not in (None, since),
             timeout=90, interval=0.3, message="sa registered again after its worker was killed")

    # a rotated password: R and the Secret change together
    rotated = "Rotated-" + secrets.token_urlsafe(12)
    passwords.add(rotated)
    lab.add_user(users["sa"], rotated)
    core.patch_namespaced_secret("sa-sip", ns, {"stringData": {"password": rotated}})
    sipacc.wait_condition("sa", "Registered", timeout=120)

    # a deleted agent pod (its logs read first: the kubelet removes them with the pod)
    agent_logs()
    core.delete_namespaced_pod(pod.metadata.name, ns)
    wait_for(lambda: [p for p in sipacc.agent_pods() if p.metadata.name != pod.metadata.name
                      and p.status.phase == "Running"], timeout=120, message="a new agent pod")
    t_new = time.time()
    for name in ("sa", "sb"):
        wait_for(lambda n=name: [r for r in lab.wire(since=t_new, method="REGISTER", node="R")
                                 if f":{users[n]}@" in r.from_uri], timeout=120, message=f"{name} at R again")
        sipacc.wait_condition(name, "Registered", timeout=120)
    agent_logs()
    logs.append(Path(operator.log_path).read_text(errors="replace"))

    def dump(items) -> list[str]:
        return [json.dumps(k8s.sanitize_for_serialization(i), sort_keys=True) for i in items]

    objects = {
        "events": dump(core.list_namespaced_event(ns).items),
        "sipaccounts": [json.dumps(o) for o in client.CustomObjectsApi(k8s).list_namespaced_custom_object(
            "sipfleet.io", "v1alpha1", ns, "sipaccounts")["items"]],
        "configmaps": dump(core.list_namespaced_config_map(ns).items),
        "pods": dump(core.list_namespaced_pod(ns).items),
        "deployments": dump(apps.list_namespaced_deployment(ns).items),
        "replicasets": dump(apps.list_namespaced_replica_set(ns).items),
        "logs": logs,
    }
    # the scan reads real material: every username is in the agents' logs and in the SipAccounts
    for name, user in users.items():
        assert any(user in text for text in logs), f"{name}'s username is in no log: the scan reads nothing"
        assert any(user in text for text in objects["sipaccounts"]), name
    assert len(objects["events"]) >= 2 and objects["configmaps"] and objects["pods"]
    leaks = [f"{where}: {form[:4]}..." for where, texts in objects.items() for text in texts
             for p in passwords for form in forms(p) if form in text]
    assert leaks == [], f"a password outside its Secret: {leaks}"
