"""Packing: the accounts of one namespace share agent pods of up to ``accountsPerAgent`` accounts (and 8 pjsua2
workers); one more account opens another pod; adding or removing one touches nobody else (on the wire: no other
account sends a REGISTER, no pod restarts); agent pods are sized by the operator's formula.

The first test runs its own operator with ``accountsPerAgent: 4`` (accounts of one route, which the agent before
issue 10, one pjsua2 process of 8 accounts, serves as well); the others use the session operator with the product
defaults (64 accounts per pod)."""

from __future__ import annotations

import time

import pytest

from sipfleet.localenv.waiting import wait_for
from sipfleet_operator import sizing

pytestmark = [pytest.mark.cluster, pytest.mark.lab, pytest.mark.slow]

AGENT_SELECTOR = "app.kubernetes.io/managed-by=sipfleet-operator"


def live_pods(sipacc) -> list:
    return [p for p in sipacc.agent_pods() if not p.metadata.deletion_timestamp]


def resources(pod) -> dict:
    r = pod.spec.containers[0].resources
    return {"requests": dict(r.requests or {}), "limits": dict(r.limits or {})}


def add(sipacc, lab, lab_user, name: str, **spec) -> str:
    u, p = lab_user("pk")
    sipacc.secret(f"{name}-creds", u, p)
    sipacc.create(name, sipacc.spec(lab, u, f"{name}-creds", **spec))
    return u


def test_accounts_per_agent_packs_and_one_more_opens_a_second_pod(own_operator, lab, lab_user):
    sipacc = own_operator({"SIPFLEET_ACCOUNTS_PER_AGENT": "4"})
    names = [f"p{i}" for i in range(5)]
    users = {n: add(sipacc, lab, lab_user, n) for n in names}
    for n in names:
        sipacc.wait_condition(n, "Registered", timeout=180)
    assignments = sipacc.agent_configmaps()
    assert sorted(len(a["accounts"]) for a in assignments.values()) == [1, 4]
    assert len(sipacc.agent_deployments()) == 2
    wait_for(lambda: len(live_pods(sipacc)) == 2, timeout=60, message="two agent pods")
    for pod in live_pods(sipacc):  # a shared pod of one worker: class 2, its accounts term bounded by 4
        assert resources(pod) == sizing.resources(2, 4, sizing.Sizing()), pod.metadata.name

    # remove one from the full pod: only it unregisters, nobody else sends a REGISTER, no pod restarts
    (full,) = [a for a, v in assignments.items() if len(v["accounts"]) == 4]
    victim = assignments[full]["accounts"][0]["name"]
    pods_before = {p.metadata.name for p in live_pods(sipacc)}
    templates = {d.metadata.name: d.metadata.annotations["sipfleet.io/template-hash"] for d in sipacc.agent_deployments()}
    t0 = time.time()
    sipacc.delete(victim)
    wait_for(lambda: not lab.contacts(users[victim]), timeout=60, message="victim unregistered at R")
    wait_for(lambda: victim not in [a["name"] for a in sipacc.agent_configmaps()[full]["accounts"]],
             timeout=30, message="victim gone from the assignment")
    # and one more: it joins the pod with room (the fullest), no third pod
    newcomer = add(sipacc, lab, lab_user, "late")
    sipacc.wait_condition("late", "Registered", timeout=120)
    assert sipacc.hosting_agent("late") == full
    others = {u for n, u in users.items() if n != victim}
    regs = lab.wire(since=t0, method="REGISTER", node="R")
    touched = {u for u in others for r in regs if f":{u}@" in r.from_uri}
    assert not touched, f"others re-registered: {sorted(touched)}"
    assert any(f":{newcomer}@" in r.from_uri for r in regs)
    assert {p.metadata.name for p in live_pods(sipacc)} == pods_before  # no pod restarted
    assert {d.metadata.name: d.metadata.annotations["sipfleet.io/template-hash"]
            for d in sipacc.agent_deployments()} == templates
    for n in names:
        if n != victim:
            assert sipacc.has_condition(n, "Registered")


def test_sixty_five_accounts_with_the_default_open_a_second_pod(operator, sipacc, lab):
    """The product default, 64 accounts per pod: placement objects and pods only (whether 64 accounts register in
    one pod is the agent's part, issue 10)."""
    import secrets

    creds = [(f"pd{i:02d}x{secrets.token_hex(3)}", secrets.token_urlsafe(10)) for i in range(65)]
    lab.add_users(creds)
    for i, (u, p) in enumerate(creds):
        sipacc.secret(f"d{i:02d}-creds", u, p)
        sipacc.create(f"d{i:02d}", sipacc.spec(lab, u, f"d{i:02d}-creds"))
    wait_for(lambda: sorted(len(a["accounts"]) for a in sipacc.agent_configmaps().values()) == [1, 64],
             timeout=120, message="two assignments, of 64 and 1")
    wait_for(lambda: len(sipacc.agent_deployments()) == 2 and len(live_pods(sipacc)) == 2, timeout=120,
             message="two agent Deployments and pods")
    by_agent = {p.metadata.labels["sipfleet.io/agent"]: p for p in live_pods(sipacc)}
    for agent, assignment in sipacc.agent_configmaps().items():
        workers = 8 if len(assignment["accounts"]) == 64 else 2
        assert resources(by_agent[agent]) == sizing.resources(workers, 64, sizing.Sizing()), agent
    dep = {d.metadata.name: d for d in sipacc.agent_deployments()}
    assert sorted(d.metadata.annotations["sipfleet.io/size-class"] for d in dep.values()) == ["2", "8"]


def test_other_routes_and_modes_share_the_pod_and_a_route_change_keeps_it(operator, sipacc, lab, lab_user):
    """Needs the agent of issue 10 (workers per transport, route and routeMode in one pod)."""
    udp = [add(sipacc, lab, lab_user, f"u{i}") for i in range(3)]
    tcp = add(sipacc, lab, lab_user, "tcp", transport="tcp", route=[lab.proxy_uri("tcp")])
    acct = add(sipacc, lab, lab_user, "acct", routeMode="account")
    names = ["u0", "u1", "u2", "tcp", "acct"]
    for n in names:
        sipacc.wait_condition(n, "Registered", timeout=180)
    (agent,) = sipacc.agent_configmaps()
    assert {a["name"] for a in sipacc.agent_configmaps()[agent]["accounts"]} == set(names)
    (pod,) = live_pods(sipacc)
    assert resources(pod) == sizing.resources(4, 64, sizing.Sizing())  # three workers: class 4

    # u0 moves to TCP: it stays in the pod (its worker changes), the pod is not replaced, nobody else re-registers
    t0 = time.time()
    body = sipacc.get("u0")
    sipacc.custom.patch_namespaced_custom_object(
        "sipfleet.io", "v1alpha1", sipacc.ns, "sipaccounts", "u0",
        {"spec": {"transport": "tcp", "route": [lab.proxy_uri("tcp")]}})
    assert body["spec"]["transport"] == "udp"
    wait_for(lambda: next(a for a in sipacc.agent_configmaps()[agent]["accounts"] if a["name"] == "u0")["transport"]
             == "tcp", timeout=60, message="u0's assignment says tcp")
    wait_for(lambda: any(f":{udp[0]}@" in r.from_uri and r.transport.lower() == "tcp"
                         for r in lab.wire(since=t0, method="REGISTER", node="P")),
             timeout=120, message="u0 registers over TCP through P")
    sipacc.wait_condition("u0", "Registered", timeout=120)
    assert [p.metadata.name for p in live_pods(sipacc)] == [pod.metadata.name]
    regs = lab.wire(since=t0, method="REGISTER", node="R")
    touched = {u for u in (udp[1], udp[2], tcp, acct) for r in regs if f":{u}@" in r.from_uri}
    assert not touched, f"others re-registered: {sorted(touched)}"
