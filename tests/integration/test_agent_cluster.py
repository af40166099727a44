"""Cluster mode of the agent against the real kube-apiserver and the real SIP lab (no operator): the
assignment comes from a ConfigMap (watched), credentials from a Secret, status is merge-patched onto the
SipAccount's status subresource; a repair token in the ConfigMap is carried out and acknowledged."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from sipfleet.api.models import API_VERSION, GROUP, KIND, PLURAL, VERSION
from sipfleet.localenv.waiting import wait_for
from sipfleet_agent.siplog import normalize_uri
from tests.fixtures.agent import HTTP_PORT

pytestmark = [pytest.mark.lab, pytest.mark.cluster]



def _start_agent(cluster, objs, namespace: str, pod_ip: str, tmp_path, name: str, extra_env: dict, args: list):
    """``sipfleet-agent cluster`` on the host as pod ``<name>-pod`` would run it; (process, its stderr tail, the
    status of a SipAccount, asserting the agent still runs)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root"),
           "KUBECONFIG": str(cluster.kubeconfig), "SIPFLEET_AGENT_NAME": name, "POD_NAME": f"{name}-pod",
           "POD_NAMESPACE": namespace, "POD_IP": pod_ip, "PYTHONUNBUFFERED": "1", **extra_env}
    stderr_path = tmp_path / "agent.stderr"
    proc = subprocess.Popen([sys.executable, "-m", "sipfleet_agent.main", "cluster", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=open(stderr_path, "wb"), stdin=subprocess.DEVNULL)

    def tail() -> str:
        return "\n".join(stderr_path.read_text(errors="replace").splitlines()[-30:])

    def status(account: str) -> dict:
        assert proc.poll() is None, tail()
        obj = objs.get_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, account) or {}
        return obj.get("status") or {}

    return proc, tail, status


def _terminate(proc: subprocess.Popen) -> int | None:
    """SIGTERM the agent (it un-REGISTERs everything first) and its exit code; None when it had to be killed."""
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(30)
        return None

def test_cluster_mode_status_secret_and_repair_token(cluster, k8s, namespace, sipaccount_crd, lab, lab_user, tmp_path):
    import urllib.request

    from kubernetes import client

    core = client.CoreV1Api(k8s)
    objs = client.CustomObjectsApi(k8s)
    user, password = lab_user("k8s")
    core.create_namespaced_secret(namespace, {"metadata": {"name": "creds"}, "stringData": {"username": user, "password": password}})
    reg = {"expiresSeconds": 60, "retryIntervalSeconds": 5, "firstRetryIntervalSeconds": 1, "jitterSeconds": 0}
    spec = {
        "aor": lab.aor(user), "registrar": lab.registrar_uri(), "route": [lab.proxy_uri()], "routeMode": "account",
        "credentials": {"secretName": "creds"}, "registration": reg,
    }
    for name, secret in (("acc1", "creds"), ("acc2", "missing-secret")):
        body = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name},
                "spec": dict(spec, credentials={"secretName": secret}, aor=lab.aor(user if name == "acc1" else "nobody"))}
        objs.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)

    def account(name, secret, aor, **extra):
        return {"name": name, "namespace": namespace, "aor": aor, "registrar": lab.registrar_uri(),
                "route": [lab.proxy_uri()], "routeMode": "account", "registration": reg,
                "credentials": {"secretName": secret}, **extra}

    def assignment(**extra):
        return {"agent": "agent-k", "settings": {"httpPort": HTTP_PORT, "statusDebounceMs": 50},
                "accounts": [account("acc1", "creds", lab.aor(user), selfHeal=False, **extra),
                             account("acc2", "missing-secret", lab.aor("nobody"))]}

    core.create_namespaced_config_map(namespace, {"metadata": {"name": "agent-k"},
                                                  "data": {"assignment.json": json.dumps(assignment())}})
    pod_ip = lab.client_address()  # the agent runs on the host: a /32 of its own on the lab bridge
    # short watch rounds: the test sees several watch ends (bookmarks, re-watch) before its update
    proc, tail, status = _start_agent(cluster, objs, namespace, pod_ip, tmp_path, "agent-k",
                                      {"SIPFLEET_ASSIGNMENT_CONFIGMAP": "agent-k", "SIPFLEET_AGENT_WATCH_TIMEOUT": "2"},
                                      ["--debug-hooks"])
    stderr_path = tmp_path / "agent.stderr"  # where _start_agent sends the agent's stderr

    try:
        st = wait_for(lambda: (s := status("acc1")).get("registration", {}).get("state") == "Registered"
                      and s.get("route", {}).get("inSync") is True and s, timeout=90, interval=0.2,
                      message="acc1 Registered in status")
        assert st["agent"]["pod"] == "agent-k-pod" and st["agent"]["name"] == "agent-k"
        assert [normalize_uri(u) for u in st["route"]["effective"]] == [normalize_uri(lab.proxy_uri())]
        assert st["route"]["firstHop"] == f"udp:{lab.hostport('P')}"
        bad = wait_for(lambda: (s := status("acc2")).get("registration", {}).get("state") == "Failed" and s,
                       timeout=60, interval=0.2, message="acc2 Failed (no Secret)")
        assert "missing-secret" in bad["registration"]["reason"]
        assert password not in json.dumps(status("acc1")) + stderr_path.read_text(errors="replace")

        # Drift (account mode, setRegistration False/True: the debug hook), then a repair token through the ConfigMap.
        req = urllib.request.Request(f"http://{pod_ip}:{HTTP_PORT}/debug/drift?account=acc1", data=b"", method="POST")
        urllib.request.urlopen(req, timeout=20).read()
        wait_for(lambda: status("acc1").get("route", {}).get("inSync") is False, timeout=60, interval=0.2,
                 message="drift in status")
        # the watch has been re-established several times by now and must still work, without complaints
        assert "watch interrupted" not in stderr_path.read_text(errors="replace"), tail()
        t = time.time()
        core.patch_namespaced_config_map("agent-k", namespace,
                                         {"data": {"assignment.json": json.dumps(assignment(repairToken="tok-1"))}})
        st = wait_for(lambda: (s := status("acc1")).get("agent", {}).get("repairTokenAck") == "tok-1"
                      and s["route"].get("inSync") is True and s, timeout=60, interval=0.2, message="repair acked")
        rep = st["route"]["lastRepair"]
        assert rep["token"] == "tok-1" and rep["trigger"] == "operator" and rep["result"] == "repaired"
        rec = lab.wait_wire(lambda r: f":{user}@" in r.from_uri and r.expires != "0", node="P", method="REGISTER",
                            since=t, timeout=60)
        assert [normalize_uri(u) for u in rec.route] == [normalize_uri(lab.proxy_uri())]
        with urllib.request.urlopen(f"http://{pod_ip}:{HTTP_PORT}/readyz", timeout=10) as r:
            assert r.status == 200
    finally:
        rc = _terminate(proc)
        lab.release_client_address(pod_ip)
    assert rc == 0, tail()
    assert lab.contacts(user) == []


def test_cluster_mode_killed_worker_event_and_only_its_account_re_registers(cluster, k8s, namespace, sipaccount_crd,
                                                                           lab, lab_user, tmp_path):
    import urllib.request

    from kubernetes import client

    from tests.fixtures.agent import registers

    core = client.CoreV1Api(k8s)
    objs = client.CustomObjectsApi(k8s)
    reg = {"expiresSeconds": 60, "retryIntervalSeconds": 5, "firstRetryIntervalSeconds": 1, "jitterSeconds": 0}
    users = {}
    accounts = []
    for name, route in (("acc-p", lab.proxy_uri()), ("acc-e", lab.edge_uri())):  # two routes: two workers
        user, password = lab_user(name.replace("-", ""))
        users[name] = user
        core.create_namespaced_secret(namespace, {"metadata": {"name": f"creds-{name}"},
                                                  "stringData": {"username": user, "password": password}})
        spec = {"aor": lab.aor(user), "registrar": lab.registrar_uri(), "route": [route], "routeMode": "account",
                "credentials": {"secretName": f"creds-{name}"}, "registration": reg}
        objs.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, {
            "apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name}, "spec": spec})
        accounts.append({"name": name, "namespace": namespace, **spec})
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "agent-w"}, "data": {"assignment.json": json.dumps(
        {"agent": "agent-w", "settings": {"httpPort": HTTP_PORT, "statusDebounceMs": 50}, "accounts": accounts})}})
    pod_ip = lab.client_address()
    proc, tail, status = _start_agent(cluster, objs, namespace, pod_ip, tmp_path, "agent-w", {}, [])

    def snapshot():
        with urllib.request.urlopen(f"http://{pod_ip}:{HTTP_PORT}/status", timeout=10) as r:
            return json.loads(r.read())

    try:
        for name in users:
            wait_for(lambda n=name: (s := status(n)).get("registration", {}).get("state") == "Registered"
                     and s.get("route", {}).get("inSync") is True, timeout=90, interval=0.2, message=f"{name} Registered")
        snap = snapshot()
        where = {a["name"]: a["worker"] for a in snap["accounts"]}
        pids = {w["id"]: w["pid"] for w in snap["workers"]}
        assert len(pids) == 2 and where["acc-p"] != where["acc-e"]
        since = status("acc-e")["registration"]["registeredSince"]
        t_kill = time.time()
        os.kill(pids[where["acc-e"]], signal.SIGKILL)

        def restarted_event():
            evs = core.list_namespaced_event(namespace, field_selector="involvedObject.name=acc-e").items
            return [e for e in evs if e.reason == "WorkerRestarted"]

        ev = wait_for(restarted_event, timeout=30, interval=0.3, message="WorkerRestarted event")[0]
        assert ev.type == "Warning" and "SIGKILL" in ev.message and "acc-e" in ev.message, ev.message
        assert ev.involved_object.kind == KIND and ev.involved_object.api_version == f"{GROUP}/{VERSION}"
        wait_for(lambda: (s := status("acc-e")).get("registration", {}).get("state") == "Registered"
                 and s["registration"].get("registeredSince") != since, timeout=60, interval=0.2,
                 message="acc-e registered again")
        assert [r for r in registers(lab, users["acc-e"], node="E", since=t_kill) if r.expires != "0"]
        assert registers(lab, users["acc-p"], since=t_kill) == [], "the other worker's account re-REGISTERed"
        assert {w["id"]: w["pid"] for w in snapshot()["workers"]}[where["acc-p"]] == pids[where["acc-p"]]
        assert [e for e in core.list_namespaced_event(namespace, field_selector="involvedObject.name=acc-p").items
                if e.reason == "WorkerRestarted"] == []
    finally:
        rc = _terminate(proc)
        lab.release_client_address(pod_ip)
    assert rc == 0, tail()
    assert all(lab.contacts(u) == [] for u in users.values())


def test_cluster_mode_refuses_credentials_that_would_inject_headers(cluster, k8s, namespace, sipaccount_crd, lab,
                                                                   lab_user, tmp_path):
    """The agent checks a Secret's credentials itself (the operator should have refused them already): a username
    with CR/LF is CredentialsInvalid in status, nothing of it is sent, and the agent goes on serving the others."""
    from kubernetes import client

    core, objs = client.CoreV1Api(k8s), client.CustomObjectsApi(k8s)
    user, password = lab_user("ok")
    bad_user = f"{user}x\r\nX-Injected: yes"
    reg = {"expiresSeconds": 60, "retryIntervalSeconds": 5, "firstRetryIntervalSeconds": 1, "jitterSeconds": 0}
    accounts = []
    for name, username in (("good", user), ("inj", bad_user)):
        core.create_namespaced_secret(namespace, {"metadata": {"name": f"creds-{name}"},
                                                  "stringData": {"username": username, "password": password}})
        spec = {"aor": lab.aor(user), "registrar": lab.registrar_uri(), "route": [lab.proxy_uri()],
                "routeMode": "account", "credentials": {"secretName": f"creds-{name}"}, "registration": reg}
        objs.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, {
            "apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name}, "spec": spec})
        accounts.append({"name": name, "namespace": namespace, **spec})
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "agent-i"}, "data": {"assignment.json": json.dumps(
        {"agent": "agent-i", "settings": {"httpPort": HTTP_PORT, "statusDebounceMs": 50}, "accounts": accounts})}})
    pod_ip = lab.client_address()
    t0 = time.time()
    proc, tail, status = _start_agent(cluster, objs, namespace, pod_ip, tmp_path, "agent-i",
                                      {"SIPFLEET_ASSIGNMENT_CONFIGMAP": "agent-i"}, [])
    try:
        wait_for(lambda: status("good").get("registration", {}).get("state") == "Registered", timeout=90,
                 interval=0.2, message="the good account Registered")
        bad = wait_for(lambda: (s := status("inj")).get("registration", {}).get("state") == "Failed" and s,
                       timeout=60, interval=0.2, message="the injecting account Failed")
        reason = bad["registration"]["reason"]
        assert "CredentialsInvalid" in reason and "creds-inj" in reason and "username" in reason, reason
        assert "X-Injected" not in reason and password not in reason
        sent = lab.wire(since=t0)
        assert not [r for r in sent if "X-Injected" in json.dumps(r.__dict__, default=str)], "injected on the wire"
        assert len([r for r in sent if r.method == "REGISTER" and f":{user}@" in r.from_uri]) >= 1  # only the good one
        assert proc.poll() is None, tail()
    finally:
        rc = _terminate(proc)
        lab.release_client_address(pod_ip)
    assert rc == 0, tail()
