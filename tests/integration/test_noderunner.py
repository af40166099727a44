"""The node runner against the real control plane: real kube-scheduler, controller-manager (Deployment,
ReplicaSet, garbage collector, service accounts, kube-root-ca.crt) and kube-apiserver (TokenRequest,
Node authorizer). Pods run as local processes; nothing is mocked.
"""

from __future__ import annotations

import http.client
import json
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from sipfleet.localenv.noderunner import log_path
from sipfleet.localenv.noderunner.kube import kubeconfig_server
from sipfleet.localenv.noderunner.process import proc_alive, proc_start_time
from sipfleet.localenv.waiting import wait_for

pytestmark = pytest.mark.cluster

PY = sys.executable


def _pod(core: client.CoreV1Api, ns: str, name: str):
    try:
        return core.read_namespaced_pod(name, ns)
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def _cond(pod, typ: str) -> str | None:
    for c in (pod.status.conditions or []) if pod and pod.status else []:
        if c.type == typ:
            return c.status
    return None


def _pid(pod) -> int:
    cid = pod.status.container_statuses[0].container_id
    assert cid and cid.startswith("sipfleet://"), cid
    return int(cid.split("://", 1)[1])


def _log(cluster, ns: str, pod: str, container: str, previous: bool = False) -> str:
    p = log_path(cluster.pods_dir, ns, pod, container, previous=previous)
    return p.read_text(errors="replace") if p.exists() else ""


def test_deployment_pod_is_scheduled_runs_ready_and_is_garbage_collected(cluster, k8s, namespace):
    apps = client.AppsV1Api(k8s)
    core = client.CoreV1Api(k8s)
    labels = {"app": "web"}
    apps.create_namespaced_deployment(namespace, {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [{
                        "name": "web",
                        "image": "docker.io/library/busybox:1.36",
                        "command": [PY, "-m", "http.server", "--bind", "$(POD_IP)", "8080"],
                        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                        "ports": [{"name": "http", "containerPort": 8080}],
                        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 2},
                        "livenessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 5,
                                          "timeoutSeconds": 5, "failureThreshold": 6},
                    }],
                },
            },
        },
    })

    def ready_pod():
        pods = core.list_namespaced_pod(namespace, label_selector="app=web").items
        if len(pods) != 1:
            return None
        p = pods[0]
        if p.status.phase == "Running" and _cond(p, "Ready") == "True" and p.status.pod_ip:
            return p
        return None

    pod = wait_for(ready_pod, timeout=120, interval=0.5, message="the Deployment's pod Running and Ready")
    assert pod.spec.node_name, "the scheduler bound the pod to a node"
    node = client.CoreV1Api(k8s).read_node(pod.spec.node_name)
    assert node.status.node_info.kubelet_version == "v1.35.4"
    assert _cond(pod, "PodScheduled") == "True"
    assert pod.metadata.owner_references[0].kind == "ReplicaSet"
    ip = pod.status.pod_ip
    assert ip.startswith("127.") and ip != "127.0.0.1"
    assert [i.ip for i in pod.status.pod_ips] == [ip]
    assert pod.status.host_ip == "127.0.0.1"
    cs = pod.status.container_statuses[0]
    assert cs.ready and cs.started and cs.restart_count == 0 and cs.state.running is not None

    # the container really serves on its pod IP
    conn = http.client.HTTPConnection(ip, 8080, timeout=10)
    conn.request("GET", "/")
    assert conn.getresponse().status == 200
    conn.close()

    pid = _pid(pod)
    start = proc_start_time(pid)
    assert start is not None and proc_alive(pid, start)

    apps.delete_namespaced_deployment("web", namespace, propagation_policy="Background")
    wait_for(lambda: not core.list_namespaced_pod(namespace, label_selector="app=web").items,
             timeout=120, interval=0.5, message="the pod garbage-collected and removed")
    wait_for(lambda: not proc_alive(pid, start), timeout=30, interval=0.2, message=f"pid {pid} gone")


def test_crashing_container_restarts_with_kubernetes_backoff(cluster, k8s, namespace):
    core = client.CoreV1Api(k8s)
    core.create_namespaced_pod(namespace, {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "crasher"},
        "spec": {
            "terminationGracePeriodSeconds": 2,
            "containers": [{
                "name": "crash",
                "image": "sipfleet/testbox",
                "command": ["/bin/sh", "-c", "echo run-$(date +%s%N); exit 1"],
            }],
        },
    })

    def restarted_twice():
        p = _pod(core, namespace, "crasher")
        if not p or not p.status.container_statuses:
            return None
        cs = p.status.container_statuses[0]
        return p if cs.restart_count >= 2 else None

    # real back-off: restart 1 after 10 s, restart 2 after another 20 s
    pod = wait_for(restarted_twice, timeout=120, interval=1, message="restartCount >= 2")
    cs = pod.status.container_statuses[0]
    assert pod.status.phase == "Running"  # restartPolicy Always: never terminal
    assert cs.last_state.terminated is not None
    assert cs.last_state.terminated.exit_code == 1
    assert cs.last_state.terminated.reason == "Error"

    def in_backoff():
        p = _pod(core, namespace, "crasher")
        w = p.status.container_statuses[0].state.waiting
        return w if w is not None and w.reason == "CrashLoopBackOff" else None

    waiting = wait_for(in_backoff, timeout=60, interval=0.3, message="waiting in CrashLoopBackOff")
    assert "back-off" in waiting.message and "crasher" in waiting.message
    assert "run-" in _log(cluster, namespace, "crasher", "crash")
    assert "run-" in _log(cluster, namespace, "crasher", "crash", previous=True)
    def backoff_event():
        evs = core.list_namespaced_event(namespace, field_selector="involvedObject.name=crasher").items
        return [e for e in evs if e.reason == "BackOff" and e.source and e.source.component == "kubelet"]

    wait_for(backoff_event, timeout=30, interval=0.5, message="a kubelet BackOff event for crasher")
    # kubectl logs -p goes apiserver -> the runner's kubelet log endpoint
    res = cluster.kubectl("logs", "-n", namespace, "crasher", "-c", "crash", "-p")
    assert "run-" in res.stdout


PROBE_SCRIPT = textwrap.dedent("""
    import json, os, pathlib
    from kubernetes import client, config
    out = {k: os.environ.get(k) for k in (
        "SECRET_GREETING", "POD_NAME", "POD_NAMESPACE", "POD_UID", "POD_IP", "NODE_NAME", "SA_NAME",
        "FROM_CM_colour", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "EXPANDED")}
    out["secret_file"] = pathlib.Path("/run/sipfleet-test/secret/greeting").read_text()
    sa = pathlib.Path("/var/run/secrets/kubernetes.io/serviceaccount")
    out["token_len"] = len((sa / "token").read_text())
    out["sa_namespace"] = (sa / "namespace").read_text()
    out["ca_has_cert"] = "BEGIN CERTIFICATE" in (sa / "ca.crt").read_text()
    config.load_incluster_config()
    review = client.AuthenticationV1Api().create_self_subject_review(
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    out["whoami"] = review.status.user_info.username
    print("RESULT " + json.dumps(out), flush=True)
""")


def test_env_volumes_and_in_cluster_login(cluster, k8s, namespace):
    core = client.CoreV1Api(k8s)
    greeting = f"hello-{uuid.uuid4().hex[:8]}"
    core.create_namespaced_secret(namespace, {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "greeting"},
        "stringData": {"greeting": greeting},
    })
    core.create_namespaced_config_map(namespace, {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"colour": "blue"},
    })
    field = lambda path: {"valueFrom": {"fieldRef": {"fieldPath": path}}}  # noqa: E731
    core.create_namespaced_pod(namespace, {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "inspector"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "main",
                "image": "busybox",
                "command": [PY, "-c", PROBE_SCRIPT],
                "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "FROM_CM_"}],
                "env": [
                    {"name": "SECRET_GREETING", "valueFrom": {"secretKeyRef": {"name": "greeting", "key": "greeting"}}},
                    {"name": "OPTIONAL_MISSING", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "x", "optional": True}}},
                    {"name": "POD_NAME", **field("metadata.name")},
                    {"name": "POD_NAMESPACE", **field("metadata.namespace")},
                    {"name": "POD_UID", **field("metadata.uid")},
                    {"name": "POD_IP", **field("status.podIP")},
                    {"name": "NODE_NAME", **field("spec.nodeName")},
                    {"name": "SA_NAME", **field("spec.serviceAccountName")},
                    {"name": "EXPANDED", "value": "$(POD_NAME)@$(POD_NAMESPACE)"},
                ],
                "volumeMounts": [{"name": "secret", "mountPath": "/run/sipfleet-test/secret"}],
            }],
            "volumes": [{"name": "secret", "secret": {"secretName": "greeting"}}],
        },
    })

    def finished():
        p = _pod(core, namespace, "inspector")
        return p if p and p.status.phase in ("Succeeded", "Failed") else None

    pod = wait_for(finished, timeout=120, interval=0.5, message="the inspector pod to finish")
    # the mount point the runner created on the host is empty there (the secret was mounted privately)
    host_mount = Path("/run/sipfleet-test/secret")
    assert not (host_mount / "greeting").exists()
    for d in (host_mount, host_mount.parent):
        try:
            d.rmdir()
        except OSError:
            pass
    text = _log(cluster, namespace, "inspector", "main")
    assert pod.status.phase == "Succeeded", text
    line = next(ln for ln in text.splitlines() if ln.startswith("RESULT "))
    assert line in cluster.kubectl("logs", "-n", namespace, "inspector").stdout
    out = json.loads(line[len("RESULT "):])
    assert out["SECRET_GREETING"] == greeting
    assert out["secret_file"] == greeting
    assert out["POD_NAME"] == "inspector"
    assert out["POD_NAMESPACE"] == namespace
    assert out["POD_UID"] == pod.metadata.uid
    assert out["POD_IP"] == pod.status.pod_ip
    assert out["NODE_NAME"] == pod.spec.node_name
    assert out["SA_NAME"] == "default"
    assert out["FROM_CM_colour"] == "blue"
    assert out["EXPANDED"] == f"inspector@{namespace}"
    assert out["KUBERNETES_SERVICE_HOST"] == "127.0.0.1"
    assert out["KUBERNETES_SERVICE_PORT"] == str(kubeconfig_server(str(cluster.kubeconfig))[1])
    assert out["token_len"] > 100 and out["ca_has_cert"] and out["sa_namespace"] == namespace
    # the in-cluster client logged in with the pod's own (bound) service-account token
    assert out["whoami"] == f"system:serviceaccount:{namespace}:default"
    cs = pod.status.container_statuses[0]
    assert cs.state.terminated.exit_code == 0 and cs.state.terminated.reason == "Completed"
    assert _cond(pod, "Ready") == "False"



def test_probes_exec_readiness_startup_and_liveness_restart(cluster, k8s, namespace):
    core = client.CoreV1Api(k8s)
    script = (
        "cd /srv-data && rm -f ready alive.txt && touch alive.txt && "
        "(sleep 2; touch ready) & (sleep 8; rm -f /srv-data/alive.txt) & "
        f"exec {PY} -m http.server --bind $POD_IP --directory /srv-data 8080"
    )
    core.create_namespaced_pod(namespace, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probed"},
        "spec": {
            "terminationGracePeriodSeconds": 3,
            "containers": [{
                "name": "main",
                "image": "busybox",
                "command": ["/bin/sh", "-c", script],
                "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                "volumeMounts": [{"name": "data", "mountPath": "/srv-data"}],
                "startupProbe": {"httpGet": {"path": "/alive.txt", "port": 8080}, "periodSeconds": 1,
                                 "failureThreshold": 30},
                # exec runs inside the container's mount namespace: /srv-data/ready exists only there
                "readinessProbe": {"exec": {"command": ["test", "-f", "/srv-data/ready"]}, "periodSeconds": 1},
                "livenessProbe": {"httpGet": {"path": "/alive.txt", "port": 8080}, "periodSeconds": 2,
                                  "failureThreshold": 2},
            }],
            "volumes": [{"name": "data", "emptyDir": {}}],
        },
    })

    def ready():
        p = _pod(core, namespace, "probed")
        return p if p and _cond(p, "Ready") == "True" else None

    pod = wait_for(ready, timeout=90, interval=0.3, message="probed Ready (exec readiness probe)")
    cs = pod.status.container_statuses[0]
    assert cs.started and cs.ready
    assert not Path("/srv-data/ready").exists()

    def restarted_by_liveness():
        p = _pod(core, namespace, "probed")
        cs = p.status.container_statuses[0]
        t = cs.last_state.terminated if cs.last_state else None
        return p if cs.restart_count >= 1 and t is not None else None

    pod = wait_for(restarted_by_liveness, timeout=120, interval=0.5, message="a liveness restart")
    t = pod.status.container_statuses[0].last_state.terminated
    assert "liveness probe" in (t.message or "")
    # after the restart it becomes ready again (the startup probe passes first)
    wait_for(ready, timeout=90, interval=0.3, message="probed Ready again after the restart")
    for d in (Path("/srv-data"),):
        try:
            d.rmdir()
        except OSError:
            pass


def test_missing_secret_is_a_config_error_until_it_appears(cluster, k8s, namespace):
    core = client.CoreV1Api(k8s)
    core.create_namespaced_pod(namespace, {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "needs-secret"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "main",
                "image": "busybox",
                "command": ["/bin/sh", "-c", 'echo "value=$VALUE"'],
                "env": [{"name": "VALUE", "valueFrom": {"secretKeyRef": {"name": "late", "key": "v"}}}],
            }],
        },
    })

    def config_error():
        p = _pod(core, namespace, "needs-secret")
        if not p or not p.status.container_statuses:
            return None
        w = p.status.container_statuses[0].state.waiting
        return w if w is not None and w.reason == "CreateContainerConfigError" else None

    waiting = wait_for(config_error, timeout=60, interval=0.3, message="CreateContainerConfigError")
    assert '"late"' in waiting.message and "not found" in waiting.message
    assert _pod(core, namespace, "needs-secret").status.phase == "Pending"

    core.create_namespaced_secret(namespace, {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "late"}, "stringData": {"v": "arrived"},
    })
    wait_for(lambda: _pod(core, namespace, "needs-secret").status.phase == "Succeeded", timeout=60, interval=0.5,
             message="the pod to run once the secret exists")
    assert "value=arrived" in _log(cluster, namespace, "needs-secret", "main")


def test_unknown_image_waits_with_a_clear_reason(cluster, k8s, namespace):
    core = client.CoreV1Api(k8s)
    core.create_namespaced_pod(namespace, {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "mystery"},
        "spec": {"containers": [{"name": "main", "image": "registry.example/mystery:2.0"}]},
    })

    def image_error():
        p = _pod(core, namespace, "mystery")
        if not p or not p.status.container_statuses:
            return None
        w = p.status.container_statuses[0].state.waiting
        return (p, w) if w is not None and w.reason in ("ErrImagePull", "ImagePullBackOff") else None

    pod, waiting = wait_for(image_error, timeout=60, interval=0.3, message="an image pull error")
    assert "registry.example/mystery:2.0" in waiting.message
    assert "image table" in waiting.message
    assert pod.status.phase == "Pending"
    cs = pod.status.container_statuses[0]
    assert cs.restart_count == 0 and not cs.ready and not cs.container_id


def test_runner_restart_adopts_pods_and_sigterm_stops_them(cluster, k8s, namespace, tmp_path):
    """A second node runner (own node, tainted so nothing else lands there): killed with SIGKILL its pod's
    process survives; the next runner stops it and restarts the container (restartCount 1, same pod IP); a
    runner with another --pod-subnet gives the pod a new IP; SIGTERM stops the runner and its processes."""
    import os
    import random
    import signal
    import subprocess

    from sipfleet.localenv.noderunner import stop_recorded_processes

    core = client.CoreV1Api(k8s)
    node = f"h2-test-{uuid.uuid4().hex[:6]}"
    state = tmp_path / "node"
    subnet = f"127.0.{random.randint(230, 254)}"
    taint = {"key": "sipfleet.io/test-node", "value": node, "effect": "NoSchedule"}
    cmd = [PY, "-m", "sipfleet.localenv.noderunner", "--kubeconfig", str(cluster.kubeconfig), "--node-name", node,
           "--state-dir", str(state), "--pod-subnet", subnet,
           "--register-with-taints", f"{taint['key']}={taint['value']}:{taint['effect']}"]
    log = tmp_path / "runner.log"
    runners: list[subprocess.Popen] = []

    def start_runner() -> subprocess.Popen:
        with open(log, "ab") as out:
            r = subprocess.Popen(cmd, stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True)
        runners.append(r)
        return r

    def cleanup():
        for r in runners:
            if r.poll() is None:
                r.terminate()
                try:
                    r.wait(30)
                except subprocess.TimeoutExpired:
                    r.kill()
                    r.wait()
        stop_recorded_processes(state, grace=2)
        try:
            core.delete_namespaced_pod("adoptee", namespace, grace_period_seconds=0)
        except ApiException:
            pass
        try:
            core.delete_node(node)
        except ApiException:
            pass

    try:
        runner = start_runner()

        def node_ready():
            try:
                n = core.read_node(node)
            except ApiException:
                return None
            ready = [c for c in n.status.conditions or [] if c.type == "Ready" and c.status == "True"]
            return n if ready else None

        n = wait_for(node_ready, timeout=60, interval=0.3, message=f"node {node} Ready")
        assert [(t.key, t.effect) for t in n.spec.taints or []] == [(taint["key"], taint["effect"])]
        assert n.status.allocatable["cpu"] == "2" and n.status.allocatable["pods"] == "110"
        lease = wait_for(lambda: client.CoordinationV1Api(k8s).read_namespaced_lease(node, "kube-node-lease"),
                         timeout=60, interval=0.3, message="the node's Lease")
        assert lease.spec.holder_identity == node and lease.spec.renew_time is not None

        core.create_namespaced_pod(namespace, {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "adoptee"},
            "spec": {
                "nodeName": node,
                "tolerations": [{**taint, "operator": "Equal"}],
                "terminationGracePeriodSeconds": 2,
                "containers": [{"name": "main", "image": "busybox",
                                "command": ["/bin/sh", "-c", "echo started; exec sleep 600"]}],
            },
        })

        def running(restarts: int):
            def check():
                p = _pod(core, namespace, "adoptee")
                if not p or not p.status.container_statuses:
                    return None
                cs = p.status.container_statuses[0]
                return p if cs.state.running and cs.restart_count == restarts and p.status.phase == "Running" else None
            return check

        pod = wait_for(running(0), timeout=60, interval=0.3, message="adoptee running")
        pid1, ip1 = _pid(pod), pod.status.pod_ip
        assert ip1.startswith(subnet + ".")
        st1 = proc_start_time(pid1)
        pids = json.loads((state / "pids.json").read_text())
        assert [p["pid"] for p in pids["processes"]] == [pid1]

        runner.send_signal(signal.SIGKILL)
        runner.wait(30)
        assert proc_alive(pid1, st1), "a container process outlives a SIGKILLed runner"

        runner = start_runner()
        pod = wait_for(running(1), timeout=60, interval=0.3, message="adoptee restarted by the new runner")
        pid2 = _pid(pod)
        assert pid2 != pid1 and not proc_alive(pid1, st1)
        assert pod.status.pod_ip == ip1
        assert pod.status.container_statuses[0].last_state.terminated.reason == "Unknown"
        st2 = proc_start_time(pid2)
        assert proc_alive(pid2, st2)

        # a runner with another pod subnet re-addresses the pod (the status keeps exactly one pod IP)
        runner.send_signal(signal.SIGKILL)
        runner.wait(30)
        subnet2 = f"127.0.{random.choice([n for n in range(230, 255) if f'127.0.{n}' != subnet])}"
        cmd[cmd.index("--pod-subnet") + 1] = subnet2
        runner = start_runner()
        pod = wait_for(running(2), timeout=60, interval=0.3, message="adoptee restarted in the new subnet")
        assert not proc_alive(pid2, st2)
        pid3 = _pid(pod)
        assert pod.status.pod_ip.startswith(subnet2 + ".")
        assert [i.ip for i in pod.status.pod_ips] == [pod.status.pod_ip]
        st3 = proc_start_time(pid3)

        runner.send_signal(signal.SIGTERM)
        assert runner.wait(60) == 0
        assert not proc_alive(pid3, st3), "SIGTERM to the runner stops its pods' processes"
        assert json.loads((state / "pids.json").read_text())["processes"] == []
        assert os.path.exists(log_path(state, namespace, "adoptee", "main", previous=True))
    finally:
        cleanup()
