"""The local cluster's node is a real one: kubelet, containerd, runc, CNI and kube-proxy built from Go modules,
running sipfleet's own images.

* the node registers, turns Ready, and the real node-lifecycle controller lifts the not-ready taint;
* the `kubernetes` Service has the apiserver as its endpoint, and a pod logs in through it (in-cluster config);
* a ClusterIP Service in front of a pod answers another pod (kube-proxy's rules in the cluster's netns);
* ``kubectl logs`` and ``kubectl exec`` reach the kubelet through the apiserver;
* Pod Security Admission ``restricted`` refuses a root pod and admits a compliant one;
* a container over its memory limit is OOM-killed by the kernel (cgroups) and restarted by the kubelet;
* a second cluster runs next to the session's one, and its ``down`` leaves the host as it found it, even after
  its kubelet and containerd were killed under a running pod (the shims they leave are stopped by PID).

Test pods run the agent image (Python and the kubernetes client in it) with their own command.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import uuid
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from sipfleet.localenv import hoststate, procs
from sipfleet.localenv.cluster import hostside
from sipfleet.localenv.pauseimage import DEFAULT_REF
from sipfleet.localenv.waiting import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

IMAGE = "sipfleet/agent:0.1.0"
RESTRICTED = {
    "pod": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
    "container": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                  "capabilities": {"drop": ["ALL"]}},
}


def pod(name: str, command: list[str], *, labels: dict | None = None, memory: str = "128Mi", restart: str = "Never",
        sa_token: bool = False) -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {"app": name}},
        "spec": {
            "restartPolicy": restart,
            "automountServiceAccountToken": sa_token,
            "enableServiceLinks": False,
            "securityContext": RESTRICTED["pod"],
            "containers": [{
                "name": "main", "image": IMAGE, "imagePullPolicy": "Never", "command": command,
                "securityContext": RESTRICTED["container"],
                "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"cpu": "500m", "memory": memory}},
            }],
        },
    }


def phase(core, ns: str, name: str) -> str | None:
    try:
        return core.read_namespaced_pod(name, ns).status.phase
    except ApiException:
        return None


def test_node_is_real_ready_and_untainted(cluster, k8s):
    core = client.CoreV1Api(k8s)
    (node,) = core.list_node().items
    info = node.status.node_info
    assert info.kubelet_version == "v1.35.4"
    assert info.container_runtime_version == "containerd://2.2.9"
    assert not [t for t in node.spec.taints or [] if t.key == "node.kubernetes.io/not-ready"]
    assert {a.type: a.address for a in node.status.addresses}["InternalIP"] == cluster.node_ip
    ep = client.DiscoveryV1Api(k8s).list_namespaced_endpoint_slice(
        "default", label_selector="kubernetes.io/service-name=kubernetes").items
    assert [e.addresses for s in ep for e in s.endpoints] == [[cluster.node_ip]]


def test_pods_reach_the_apiserver_and_each_other_through_services(cluster, k8s, namespace):
    core = client.CoreV1Api(k8s)
    login = ("from kubernetes import client, config; config.load_incluster_config(); "
             "print('version', client.VersionApi().get_code().git_version)")
    core.create_namespaced_pod(namespace, pod("login", ["python3", "-c", login], sa_token=True))
    core.create_namespaced_pod(namespace, pod("web", ["python3", "-m", "http.server", "8080"], restart="Always"))
    core.create_namespaced_service(namespace, {"metadata": {"name": "web"}, "spec": {
        "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}})
    wait_for(lambda: phase(core, namespace, "login") == "Succeeded", timeout=120, message="login pod done")
    assert "version v1.35.4" in core.read_namespaced_pod_log("login", namespace)

    svc_ip = core.read_namespaced_service("web", namespace).spec.cluster_ip
    fetch = (f"import urllib.request; print('status', urllib.request.urlopen('http://{svc_ip}/', timeout=5).status)")
    wait_for(lambda: client.DiscoveryV1Api(k8s).list_namespaced_endpoint_slice(
        namespace, label_selector="kubernetes.io/service-name=web").items[0].endpoints, timeout=60,
        message="web Service has an endpoint")
    core.create_namespaced_pod(namespace, pod("client", ["python3", "-c", fetch]))
    wait_for(lambda: phase(core, namespace, "client") in ("Succeeded", "Failed"), timeout=120, message="client done")
    assert "status 200" in core.read_namespaced_pod_log("client", namespace)


def test_kubectl_logs_and_exec(cluster, k8s, namespace):
    core = client.CoreV1Api(k8s)
    core.create_namespaced_pod(namespace, pod(
        "talker", ["python3", "-c", "import time; print('hello from the agent image', flush=True); time.sleep(600)"],
        restart="Always"))
    wait_for(lambda: phase(core, namespace, "talker") == "Running", timeout=120, message="talker running")
    wait_for(lambda: "hello from the agent image" in cluster.kubectl("logs", "-n", namespace, "talker").stdout,
             timeout=30, message="kubectl logs")
    res = cluster.kubectl("exec", "-n", namespace, "talker", "--", "python3", "-c",
                          "import os; print('uid', os.getuid()); open('/x', 'w')", check=False)
    assert "uid 65532" in res.stdout  # the image's USER, as the chart runs it
    assert res.returncode != 0 and "Read-only file system" in res.stderr  # readOnlyRootFilesystem, for real


def test_restricted_pod_security_is_enforced(cluster, k8s, namespace):
    core = client.CoreV1Api(k8s)
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    root = pod("root", ["python3", "-c", "pass"])
    root["spec"]["securityContext"] = {"runAsUser": 0}
    root["spec"]["containers"][0]["securityContext"] = {}
    with pytest.raises(ApiException) as e:
        core.create_namespaced_pod(namespace, root)
    assert e.value.status == 403 and "violates PodSecurity" in e.value.body
    core.create_namespaced_pod(namespace, pod("fine", ["python3", "-c", "print('ok')"]))
    wait_for(lambda: phase(core, namespace, "fine") == "Succeeded", timeout=120, message="compliant pod ran")


def test_memory_limit_is_enforced_by_the_kernel(cluster, k8s, namespace):
    core = client.CoreV1Api(k8s)
    hog = "import time; x = []\nwhile True:\n    x.append(bytearray(8 << 20)); time.sleep(0.01)"
    core.create_namespaced_pod(namespace, pod("hog", ["python3", "-c", hog], memory="64Mi", restart="Always"))

    def oom_restarted():
        st = core.read_namespaced_pod("hog", namespace).status.container_statuses or []
        term = st[0].last_state.terminated if st and st[0].last_state else None
        return st and st[0].restart_count >= 1 and term is not None and term.reason == "OOMKilled"

    wait_for(oom_restarted, timeout=180, interval=1, message="OOMKilled and restarted")


def _other_owners(cluster, tmp_path_factory) -> tuple:
    """State directories of the owners that run meanwhile: the session's cluster, the other pytest workers'
    sessions (``popen-gw*`` next to ours), and the image builder's cache (a worker may be building)."""
    from sipfleet.localenv.kubebin import cache_root

    base = tmp_path_factory.getbasetemp()
    workers = [d for d in base.parent.glob("popen-gw*") if d != base] if base.name.startswith("popen-gw") else []
    return (cluster.dir, *workers, cache_root() / "images")


@pytest.fixture
def short_state_dir():
    """A state directory short enough for containerd's sockets (a unix socket path has at most 104 bytes; pytest's
    per-worker ``tmp_path`` under /tmp/pytest-of-<user>/pytest-<n>/popen-gw<k>/ is not), removed afterwards."""
    d = Path(tempfile.mkdtemp(prefix="sf-side-", dir="/tmp"))
    yield d / "side"
    shutil.rmtree(d, ignore_errors=True)


def test_a_second_cluster_runs_alongside_and_leaves_the_host_as_it_found_it(cluster, short_state_dir, tmp_path_factory):
    from sipfleet.localenv.cluster import LocalCluster

    skip = _other_owners(cluster, tmp_path_factory)
    side = short_state_dir
    before = hoststate.snapshot(exclude=skip, own_cluster=side)  # the session's cluster (and other sessions) go on meanwhile
    other = LocalCluster(f"side-{uuid.uuid4().hex[:4]}", state_dir=side, die_with_parent=True)
    foreign = None
    try:
        other.up(timeout=240)
        net = other.net
        # what is other's is compared whole; another owner's objects (by sipfleet's names) are left out
        foreign = hoststate.others([other.name, other.netns, net.host_link, net.host_link_peer, f"10.213.{net.slot}."])
        assert other.node_ready() and cluster.node_ready()
        assert other.node_ip != cluster.node_ip and other.netns != cluster.netns
        nodes = json.loads(other.kubectl("get", "nodes", "-o", "json").stdout)["items"]
        assert [n["metadata"]["name"] for n in nodes] == ["sipfleet-node-0"]
        during = hoststate.diff(before, hoststate.snapshot(exclude=skip, own_cluster=side), foreign=foreign)
        assert any(other.netns in d for d in during) and any(f"kubelet in {other.netns}" in d for d in during)
        # a run killed before its own down: a pod runs, then containerd and the kubelet die (their shims do not)
        core = client.CoreV1Api(other.api_client())
        sleeper = pod("left", ["/pause"])
        sleeper["spec"]["containers"][0]["image"] = DEFAULT_REF
        wait_for(lambda: core.read_namespaced_service_account("default", "default"), timeout=60,
                 interval=0.5, ignore=(ApiException,), message="ServiceAccount default")
        core.create_namespaced_pod("default", sleeper)
        wait_for(lambda: phase(core, "default", "left") == "Running", timeout=60, message="pod left Running")
        shims = hostside.shim_pids(other.layout.containerd_socket)
        assert shims
        for r in other.records():
            if r.name in ("kubelet", "containerd"):
                os.kill(r.pid, signal.SIGKILL)
        wait_for(lambda: not any(procs.is_alive(r) for r in other.records() if r.name in ("kubelet", "containerd")),
                 timeout=20, message="kubelet and containerd gone")
        assert hostside.shim_pids(other.layout.containerd_socket) == shims  # they outlive containerd
    finally:
        problems = other.down(purge=True)
    assert problems and all(p.startswith(("processes left in the cluster's cgroups", "containerd shims outlived"))
                            for p in problems), problems
    assert hostside.shim_pids(other.layout.containerd_socket) == []
    assert hoststate.diff(before, hoststate.snapshot(exclude=skip, own_cluster=side), foreign=foreign) == []
    assert cluster.node_ready()  # the session's cluster did not notice


def test_components_restart_in_place_and_keep_their_state(cluster, k8s, namespace):
    core = client.CoreV1Api(k8s)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "kept"}, "data": {"k": "v"}})
    core.create_namespaced_pod(namespace, pod("sleeper", ["sleep", "3600"]))
    wait_for(lambda: phase(core, namespace, "sleeper") == "Running", timeout=60, message="sleeper Running")
    uid = core.read_namespaced_pod("sleeper", namespace).metadata.uid
    pids = {r.name: r.pid for r in cluster.records()}
    took = {}
    for name, kill in (("etcd", True), ("kube-apiserver", False), ("kube-controller-manager", True),
                       ("containerd", False), ("kubelet", True)):
        took[name] = cluster.restart_component(name, kill=kill)
    print("\nrestart to ready (s):", {k: round(v, 1) for k, v in took.items()})
    after = {r.name: r.pid for r in cluster.records()}
    assert all(after[n] != pids[n] for n in took) and after["kube-scheduler"] == pids["kube-scheduler"]
    assert core.read_namespaced_config_map("kept", namespace).data == {"k": "v"}  # etcd kept its data
    assert cluster.node_ready()
    p = wait_for(lambda: (x := core.read_namespaced_pod("sleeper", namespace)).status.phase == "Running" and x,
                 timeout=60, message="sleeper still Running")
    assert p.metadata.uid == uid and sum(cs.restart_count for cs in p.status.container_statuses) == 0
    with pytest.raises(Exception, match="not running"):
        cluster.restart_component("kube-nothing")
