"""The chart-installed operator survives its own restarts under the demo's fleet (issue 8's "done when").

The demo's fleet is alice and bob (shared), carol (dedicated, same route: the mix that made every restart
crash-loop) and dave (routeMode account). The operator pod is deleted five times and the release upgraded twice
(a changed pod template, so a new pod); after each restart a new account must become Registered, the operator
pod must not restart on its own (no crash loop), no agent is duplicated, and the demo's four accounts send no
REGISTER (they are never touched by a restart).
"""

from __future__ import annotations

import time

import pytest
from kubernetes import client

from sipfleet.api import models as m
from sipfleet.localenv.waiting import wait_for
from tests.fixtures.chart import CHART, ensure_crd, pods, ready, restricted
from tests.fixtures.operator import SipAccounts

pytestmark = [pytest.mark.cluster, pytest.mark.lab, pytest.mark.slow]

RELEASE = "sfr"
LONG = {"expiresSeconds": 3600, "retryIntervalSeconds": 5, "firstRetryIntervalSeconds": 1, "jitterSeconds": 1}
OPERATOR = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=operator"


def _operator_pod(core, namespace: str, not_named: set[str]):
    """The one Ready operator pod that is none of ``not_named``; it has not restarted."""
    live = [p for p in pods(core, namespace, OPERATOR) if not p.metadata.deletion_timestamp]
    fresh = [p for p in live if p.metadata.name not in not_named and ready(p)]
    if len(fresh) != 1 or len(live) != 1:
        return None
    restarts = sum(cs.restart_count for cs in fresh[0].status.container_statuses or [])
    assert restarts == 0, f"operator pod {fresh[0].metadata.name} restarted {restarts} times (crash loop?)"
    return fresh[0]


def test_demo_fleet_survives_operator_pod_deletions_and_upgrades(cluster, k8s, helm, namespace, lab, lab_user):
    core = client.CoreV1Api(k8s)
    accs = SipAccounts(k8s, cluster, namespace)
    ensure_crd(cluster)
    restricted(cluster, namespace)
    users: dict[str, str] = {}

    def add(name: str, **spec) -> None:
        user, password = lab_user(name[:4])
        users[name] = user
        accs.secret(f"{name}-sip", user, password)
        # an hour's registration: no refresh can fall into the test and pass for a re-REGISTER
        accs.create(name, accs.spec(lab, user, f"{name}-sip", **{"registration": LONG, **spec}))

    helm("install", RELEASE, str(CHART), "--namespace", namespace, "--set", f"watchNamespaces={{{namespace}}}")
    try:
        seen = {wait_for(lambda: _operator_pod(core, namespace, set()), timeout=120,
                         message="operator pod Ready").metadata.name}
        add("alice")
        add("bob")
        add("carol", agent={"dedicated": True})
        add("dave", routeMode="account")
        for n in ("alice", "bob", "carol", "dave"):
            accs.wait_condition(n, "Ready", timeout=180)
        agents_before = {a: sorted(x["name"] for x in v["accounts"]) for a, v in accs.agent_configmaps().items()}
        assert len(agents_before) == 2  # alice, bob and dave share a pod (a worker per mode); carol alone
        t0 = time.time()

        restarts = [("delete", i) for i in range(5)] + [("upgrade", i) for i in range(2)]
        for kind, i in restarts:
            if kind == "delete":
                (old,) = [p for p in pods(core, namespace, OPERATOR) if not p.metadata.deletion_timestamp]
                core.delete_namespaced_pod(old.metadata.name, namespace)
            else:
                helm("upgrade", RELEASE, str(CHART), "--namespace", namespace, "--reuse-values",
                     "--set-string", f"podAnnotations.sipfleet\\.io/test-upgrade={i}")
            pod = wait_for(lambda: _operator_pod(core, namespace, seen), timeout=180,
                           message=f"a new operator pod Ready after {kind} {i}")
            seen.add(pod.metadata.name)
            name = f"new-{kind}-{i}"
            # alternating modes keep the shared pod at two workers (its size class: no roll of its pod, which
            # would re-register the demo's accounts; docs/operations.md, agent pod resources)
            add(name, routeMode="account" if len(seen) % 2 else "prevent")
            accs.wait_condition(name, "Ready", timeout=120)

        # every account in exactly one agent; the shared agent took the new ones as it had room
        agents = {a: sorted(x["name"] for x in v["accounts"]) for a, v in accs.agent_configmaps().items()}
        placed = [n for names in agents.values() for n in names]
        assert len(placed) == len(set(placed)) == 4 + len(restarts)
        assert sorted(d.metadata.name for d in accs.agent_deployments()) == sorted(agents)
        for a in agents_before:
            assert set(agents_before[a]) <= set(agents[a]), (a, agents_before[a], agents[a])
        # the demo's accounts were never touched: no REGISTER from them since the first restart
        regs = lab.wire(since=t0, method="REGISTER", node="R")
        resent = sorted(n for n in ("alice", "bob", "carol", "dave") if any(f":{users[n]}@" in r.from_uri for r in regs))
        assert not resent, f"re-registered across operator restarts: {resent}"
        for n in users:
            assert accs.has_condition(n, "Ready"), n
    finally:
        for obj in accs.custom.list_namespaced_custom_object(m.GROUP, m.VERSION, namespace, m.PLURAL)["items"]:
            accs.delete(obj["metadata"]["name"])
        wait_for(lambda: not accs.custom.list_namespaced_custom_object(m.GROUP, m.VERSION, namespace,
                                                                       m.PLURAL)["items"],
                 timeout=120, message="accounts deleted while the operator runs")
        helm("uninstall", RELEASE, "--namespace", namespace, "--wait", "--timeout", "120s", check=False)
