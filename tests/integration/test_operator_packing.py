"""Packing: accounts that share namespace, route, transport and route mode share agent pods (at most 8 per
pjsua2 process); removing one touches nobody else; another route gets an agent of its own."""

from __future__ import annotations

import time

import pytest

from sipfleet.localenv.waiting import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.lab, pytest.mark.slow]


def test_twenty_accounts_share_three_agents(operator, sipacc, lab, lab_user):
    users = [lab_user("pk") for _ in range(20)]
    names = [f"p{i:02d}" for i in range(20)]
    for name, (u, p) in zip(names, users):
        sipacc.secret(f"{name}-creds", u, p)
        sipacc.create(name, sipacc.spec(lab, u, f"{name}-creds"))
    for name in names:
        sipacc.wait_condition(name, "Registered", timeout=180)
    assignments = sipacc.agent_configmaps()
    assert sorted(len(a["accounts"]) for a in assignments.values()) == [4, 8, 8]
    assert len(sipacc.agent_deployments()) == 3
    wait_for(lambda: len([p for p in sipacc.agent_pods() if not p.metadata.deletion_timestamp]) == 3,
             timeout=60, message="three agent pods")

    # delete one: only it unregisters; nobody else sends a REGISTER (no re-registration of the others)
    victim, victim_user = names[0], users[0][0]
    host = sipacc.hosting_agent(victim)
    pods_before = {p.metadata.name for p in sipacc.agent_pods()}
    t0 = time.time()
    sipacc.delete(victim)
    wait_for(lambda: not lab.contacts(victim_user), timeout=60, message="victim unregistered at R")
    wait_for(lambda: victim not in [a["name"] for a in sipacc.agent_configmaps()[host]["accounts"]],
             timeout=30, message="victim gone from the assignment")
    # the un-REGISTER (Expires 0) is the only REGISTER since the delete
    others = {u for u, _ in users[1:]}
    regs = [r for r in lab.wire(since=t0, method="REGISTER", node="R")]
    touched = {u for u in others for r in regs if f":{u}@" in r.from_uri}
    assert not touched, f"others re-registered: {sorted(touched)}"
    assert {p.metadata.name for p in sipacc.agent_pods()} == pods_before  # no pod restarted
    for name in names[1:]:
        assert sipacc.has_condition(name, "Registered")
    for u, _ in users[1:4]:
        assert lab.contacts(u)

    # another route (TCP to P): its own agent
    u, p = lab_user("pkt")
    sipacc.secret("tcp-creds", u, p)
    sipacc.create("tcp", sipacc.spec(lab, u, "tcp-creds", transport="tcp", route=[lab.proxy_uri("tcp")]))
    sipacc.wait_condition("tcp", "Registered", timeout=120)
    tcp_agent = sipacc.hosting_agent("tcp")
    assert tcp_agent not in assignments
    assert [a["name"] for a in sipacc.agent_configmaps()[tcp_agent]["accounts"]] == ["tcp"]
