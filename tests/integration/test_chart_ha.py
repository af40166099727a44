"""Operator HA (issue 13 item 3): the chart with ``replicaCount: 2`` runs two operator pods that peer through kopf;
exactly one acts. When the active pod is deleted, and when its process is SIGKILLed, the fleet goes on: a new
account is Registered after each, nothing is placed twice (one agent per slot, every account in exactly one
assignment), and the accounts that were there send no REGISTER because of the takeover.

The takeover times are printed (measured, never asserted).
"""

from __future__ import annotations

import os
import signal
import time
from datetime import datetime, timezone

import pytest
from kubernetes import client

from sipfleet.localenv.waiting import wait_for
from sipfleet_operator.peering import is_active
from tests.fixtures.chart import CHART, ensure_crd, pods, ready, restricted
from tests.fixtures.operator import SipAccounts

pytestmark = [pytest.mark.cluster, pytest.mark.lab, pytest.mark.slow]

RELEASE = "sfha"
OPERATOR = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=operator"
LONG = {"expiresSeconds": 3600, "retryIntervalSeconds": 5, "firstRetryIntervalSeconds": 1, "jitterSeconds": 1}


def active_pods(k8s, namespace: str) -> list[str]:
    """The replicas kopf lets act, read from the namespace's KopfPeering as kopf reads it."""
    try:
        obj = client.CustomObjectsApi(k8s).get_namespaced_custom_object("kopf.dev", "v1", namespace,
                                                                       "kopfpeerings", "sipfleet")
    except client.ApiException:
        return []
    status = obj.get("status") or {}
    now = datetime.now(timezone.utc)
    return sorted(i for i, p in status.items() if isinstance(p, dict)
                  and is_active(status, i, int(p.get("priority", 0)), now))


def engine_running(log: str) -> bool:
    """From an operator's log: its engine was started and not stopped since. Two replicas starting together may
    each find itself alone for a moment (kopf has the same window), so a standby may have started its engine once
    and stopped it when it saw the other; it must not run one now."""
    started, stopped = log.rfind('"engine started'), log.rfind('"engine stopped')
    return started > stopped


def test_two_replicas_one_acts_and_the_other_takes_over(cluster, k8s, helm, namespace, lab, lab_user):
    core = client.CoreV1Api(k8s)
    accs = SipAccounts(k8s, cluster, namespace)
    ensure_crd(cluster)
    restricted(cluster, namespace)
    users: dict[str, str] = {}

    def add(name: str) -> None:
        user, password = lab_user(name[:4])
        users[name] = user
        accs.secret(f"{name}-sip", user, password)
        accs.create(name, accs.spec(lab, user, f"{name}-sip", registration=LONG))

    def operator_pods() -> list:
        return [p for p in pods(core, namespace, OPERATOR) if not p.metadata.deletion_timestamp]

    def one_active() -> str | None:
        live = {p.metadata.name for p in operator_pods() if ready(p)}
        act = active_pods(k8s, namespace)
        return act[0] if len(live) == 2 and len(act) == 1 and act[0] in live else None

    helm("install", RELEASE, str(CHART), "--namespace", namespace, "--set", f"watchNamespaces={{{namespace}}}",
         "--set", "replicaCount=2", "--set", "peering.lifetimeSeconds=10")
    try:
        first = wait_for(one_active, timeout=180, interval=0.5, message="two operator pods Ready, one active")
        add("a1")
        add("a2")
        for n in ("a1", "a2"):
            accs.wait_condition(n, "Ready", timeout=180)
        (standby,) = [p.metadata.name for p in operator_pods() if p.metadata.name != first]
        assert "engine started" in core.read_namespaced_pod_log(first, namespace)
        assert not engine_running(core.read_namespaced_pod_log(standby, namespace)), "the standby has an engine"
        t0 = time.time()

        # 1. the active pod is deleted (SIGTERM: kopf leaves the peering as it exits)
        core.delete_namespaced_pod(first, namespace)
        t_del = time.monotonic()
        add("b1")
        accs.wait_condition("b1", "Ready", timeout=120)
        took_delete = time.monotonic() - t_del
        second = wait_for(one_active, timeout=120, interval=0.5, message="two pods again, one active")

        # 2. the active operator's process is SIGKILLed (no goodbye: the peer is given up after its lifetime,
        # unless the kubelet restarts it sooner)
        os.kill(cluster.container_pid(namespace, second), signal.SIGKILL)
        t_kill = time.monotonic()
        add("c1")
        accs.wait_condition("c1", "Ready", timeout=120)
        took_kill = time.monotonic() - t_kill
        print(f"\nHA takeover: active pod deleted -> new account Ready {took_delete:.1f} s; "
              f"active process SIGKILLed -> new account Ready {took_kill:.1f} s")

        agents = {a: sorted(x["name"] for x in v["accounts"]) for a, v in accs.agent_configmaps().items()}
        placed = [n for names in agents.values() for n in names]
        assert sorted(placed) == sorted(users), agents  # each account in exactly one assignment
        assert sorted(d.metadata.name for d in accs.agent_deployments()) == sorted(agents)
        regs = lab.wire(since=t0, method="REGISTER", node="R")
        resent = [n for n in ("a1", "a2") if any(f":{users[n]}@" in r.from_uri for r in regs)]
        assert not resent, f"re-registered across the takeovers: {resent}"
        for n in users:
            assert accs.has_condition(n, "Ready"), n
        wait_for(one_active, timeout=120, interval=0.5, message="one active replica at the end")
    finally:
        helm("uninstall", RELEASE, "--namespace", namespace, "--wait", "--timeout", "120s", check=False)
