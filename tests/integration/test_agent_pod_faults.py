"""Agent pods on the real node under real faults: the kernel's memory limit, and what a person does with
kubectl (logs, exec).

An operator of its own (debug hooks on for its agents, a 192 MiB memory limit per agent pod) watches a namespace
of its own. The agent's ``POST /debug/allocate`` (off by default) makes it hold memory until the kernel's cgroup
OOM killer ends it; the kubelet restarts the container, and the account registers again through P.
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid

import pytest

from sipfleet.localenv.operator_process import OperatorProcess
from sipfleet.localenv.waiting import wait_for
from tests.fixtures.operator import SipAccounts

pytestmark = [pytest.mark.cluster, pytest.mark.lab, pytest.mark.slow]

LIMITS = {"requests": {"cpu": "50m", "memory": "96Mi"}, "limits": {"cpu": "500m", "memory": "192Mi"}}


@pytest.fixture
def faults_env(cluster, k8s, sipaccount_crd, tmp_path):
    ns = f"pf-{uuid.uuid4().hex[:6]}"  # not op-*: the session's operator does not watch it
    accs = SipAccounts(k8s, cluster, ns)
    accs.core.create_namespace({"metadata": {"name": ns, "labels": {
        "sipfleet.io/test": "faults", "pod-security.kubernetes.io/enforce": "restricted"}}})
    op = OperatorProcess(cluster.kubeconfig, tmp_path / "operator.log", namespaces=ns, extra_env={
        "SIPFLEET_AGENT_DEBUG_HOOKS": "true", "SIPFLEET_AGENT_RESOURCES": json.dumps(LIMITS)})
    op.start()
    try:
        yield accs, op
    finally:
        for obj in accs.custom.list_namespaced_custom_object("sipfleet.io", "v1alpha1", ns, "sipaccounts")["items"]:
            accs.delete(obj["metadata"]["name"])
        wait_for(lambda: not accs.custom.list_namespaced_custom_object("sipfleet.io", "v1alpha1", ns,
                                                                       "sipaccounts")["items"],
                 timeout=120, message="accounts deleted while their operator runs")
        op.stop()
        accs.core.delete_namespace(ns)


def _agent_pod(accs: SipAccounts, name: str):
    pod_name = accs.get(name)["status"]["agent"]["pod"]
    return accs.core.read_namespaced_pod(pod_name, accs.ns)


def test_oom_killed_agent_is_restarted_and_registers_again(faults_env, lab, lab_user):
    accs, _op = faults_env
    user, password = lab_user("oom")
    accs.secret("oom-sip", user, password)
    accs.create("oom", accs.spec(lab, user, "oom-sip"))
    accs.wait_condition("oom", "Ready", timeout=180)
    pod = _agent_pod(accs, "oom")
    assert pod.spec.containers[0].resources.limits["memory"] == "192Mi"

    # kubectl logs and exec into the agent pod, as a person would
    logs = accs.kubectl("logs", pod.metadata.name).stdout
    assert "oom" in logs and "Authorization" not in logs and password not in logs
    out = accs.kubectl("exec", pod.metadata.name, "--", "python3", "-c", "import os; print(os.getuid())").stdout
    assert out.strip() == "65532"

    t0 = time.time()
    url = f"http://{pod.status.pod_ip}:8080/debug/allocate?mib=48"
    for _ in range(12):  # 48 MiB at a time until the kernel steps in (at most 576 MiB asked for)
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=5).read()
        except OSError:
            break  # the agent is gone
        time.sleep(0.2)

    def oom_killed_and_restarted():
        st = accs.core.read_namespaced_pod(pod.metadata.name, accs.ns).status.container_statuses[0]
        term = st.last_state.terminated if st.last_state else None
        return st.restart_count >= 1 and term is not None and term.reason == "OOMKilled" and st.ready

    wait_for(oom_killed_and_restarted, timeout=180, interval=1, message="agent OOMKilled, restarted and Ready")
    accs.wait_condition("oom", "Registered", timeout=120)
    wait_for(lambda: [r for r in lab.wire(since=t0, method="REGISTER", node="P") if f":{user}@" in r.from_uri],
             timeout=60, message="a REGISTER through P from the restarted agent")
    assert _agent_pod(accs, "oom").metadata.name == pod.metadata.name  # the same pod: the container restarted
    assert lab.contacts(user)
