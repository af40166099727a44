"""Failures around the operator: an agent pod killed, and the operator itself SIGKILLed again and again in the
middle of reconciling. Deterministic agent names and the assignment ConfigMaps (the source of truth on
restart) mean no duplicate agents, and everything converges."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from sipfleet.api.models import MAX_ACCOUNTS_PER_AGENT
from sipfleet.localenv.waiting import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.lab]


def test_agent_pod_killed_is_recreated_and_reregisters(operator, sipacc, lab, lab_user):
    user, password = lab_user("kill")
    sipacc.secret("creds", user, password)
    sipacc.create("dave", sipacc.spec(lab, user, "creds"))
    sipacc.wait_condition("dave", "Ready", timeout=120)
    agent = sipacc.hosting_agent("dave")
    (pod,) = sipacc.agent_pods(agent)
    old = pod.metadata.name

    t0 = time.time()
    sipacc.core.delete_namespaced_pod(old, sipacc.ns, grace_period_seconds=0)
    # the operator notices the agent is gone: Registered becomes Unknown (AgentNotReporting), never stays True
    wait_for(lambda: sipacc.condition("dave", "Registered")["status"] != "True"
             or sipacc.get("dave")["status"]["agent"]["pod"] != old,
             timeout=60, message="Registered no longer vouched for by the dead pod")
    # recreated by the Deployment, registered again by the new pod
    def new_pod_registered():
        st = sipacc.get("dave")["status"]
        conds = {c["type"]: c["status"] for c in st["conditions"]}
        return st["agent"]["pod"] != old and conds["Registered"] == "True" and conds["Ready"] == "True"

    wait_for(new_pod_registered, timeout=120, interval=0.5, message="registered by the new pod")
    pods = [p for p in sipacc.agent_pods(agent) if not p.metadata.deletion_timestamp]
    assert len(pods) == 1 and pods[0].metadata.name != old
    regs = [r for r in lab.wire(since=t0, method="REGISTER", node="P") if f":{user}@" in r.from_uri]
    assert regs, "no new REGISTER through P"
    assert lab.contacts(user)
    assert sipacc.hosting_agent("dave") == agent  # same agent, same name


def _agent_pid(cluster, namespace: str, pod: str) -> int:
    """Host PID of the agent container of a pod (through the node's CRI)."""
    return cluster.container_pid(namespace, pod, "agent")


def test_agent_that_stops_reporting_is_not_trusted(operator, sipacc, cluster, lab, lab_user):
    """A frozen agent (SIGSTOP: probes time out, nothing is written) must not leave 'Registered' standing."""
    user, password = lab_user("stop")
    sipacc.secret("creds", user, password)
    sipacc.create("erin", sipacc.spec(lab, user, "creds"))
    sipacc.wait_condition("erin", "Ready", timeout=120)
    pod = sipacc.get("erin")["status"]["agent"]["pod"]
    pid = wait_for(lambda: _agent_pid(cluster, sipacc.ns, pod), timeout=30, message="agent pid",
                   ignore=(AssertionError, OSError, ValueError, RuntimeError))
    os.kill(pid, signal.SIGSTOP)
    try:
        body = sipacc.wait_condition("erin", "Registered", status="Unknown", reason="AgentNotReporting", timeout=90)
        conds = {c["type"]: c for c in body["status"]["conditions"]}
        assert conds["AgentReady"]["status"] == "False"
        assert conds["Ready"]["status"] == "False"
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:  # the kubelet may have restarted it (liveness): fine
            pass
    # back (same process, or restarted by its liveness probe): registered and vouched for again
    sipacc.wait_condition("erin", "Registered", timeout=120)
    sipacc.wait_condition("erin", "Ready", timeout=60)


def _check_no_duplicates(sipacc, names: list[str]) -> dict[str, str]:
    """Every account in exactly one assignment; agents and Deployments match one to one."""
    assignments = sipacc.agent_configmaps()
    where: dict[str, str] = {}
    for agent, a in assignments.items():
        assert len(a["accounts"]) <= MAX_ACCOUNTS_PER_AGENT
        for acc in a["accounts"]:
            assert acc["name"] not in where, f"{acc['name']} in {agent} and {where.get(acc['name'])}"
            where[acc["name"]] = agent
    assert sorted(where) == sorted(names)
    deployments = sorted(d.metadata.name for d in sipacc.agent_deployments())
    assert deployments == sorted(assignments), (deployments, sorted(assignments))
    return where


def test_operator_killed_mid_reconcile_ten_times(operator, sipacc, lab, lab_user):
    rng = random.Random(4066)
    users = [lab_user("k9") for _ in range(10)]
    secrets = []
    for i, (u, p) in enumerate(users):
        sipacc.secret(f"c{i}", u, p)
        secrets.append(f"c{i}")
    names = [f"acc{i}" for i in range(10)]
    operator.kill()
    try:
        created = 0
        for round_ in range(10):
            operator.start(wait=False)
            # changes land while the operator is starting / reconciling
            if created < len(names):
                for _ in range(2 if round_ < 5 else 0):
                    u, _p = users[created]
                    sipacc.create(names[created], sipacc.spec(lab, u, secrets[created]))
                    created += 1
            operator.wait_live(timeout=90)
            time.sleep(rng.uniform(0.05, 1.5))  # chaos: kill at a random point of the reconcile
            operator.kill()
        assert created == len(names)
    finally:
        if not operator.alive():
            operator.start()

    for n in names:
        sipacc.wait_condition(n, "Registered", timeout=120)
    where = _check_no_duplicates(sipacc, names)
    assert len(set(where.values())) == 1  # 10 accounts of one namespace: one agent pod (two workers)
    for agent in set(where.values()):
        wait_for(lambda: len([p for p in sipacc.agent_pods(agent) if not p.metadata.deletion_timestamp]) == 1,
                 timeout=60, message=f"exactly one pod for {agent}")
    for n in names:
        sipacc.wait_condition(n, "Ready", timeout=60)
    # no finalizer, however many operator instances came and went (nothing of ours holds a deletion)
    for n in names:
        assert not sipacc.get(n)["metadata"].get("finalizers")
