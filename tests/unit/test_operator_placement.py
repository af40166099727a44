"""Placement is pure: grouping, capacity, deterministic names, no moves of placed accounts."""

from __future__ import annotations

import random

from sipfleet.api import models as m
from sipfleet_operator import placement as p

P = "sip:127.0.20.1;lr"


def spec(route=(P,), transport="udp", mode="prevent", dedicated=False) -> m.SipAccountSpec:
    return m.SipAccountSpec(
        aor="sip:a@example.com",
        registrar="sip:127.0.20.2",
        route=list(route),
        transport=transport,
        route_mode=mode,
        credentials={"secretName": "s"},
        agent={"dedicated": dedicated},
    )


def key(ns="default", name="x", **kw) -> p.GroupKey:
    return p.GroupKey.for_spec(ns, name, spec(**kw))


def fill(n: int, k: p.GroupKey | None = None, fleet=None):
    fleet = dict(fleet or {})
    k = k or key()
    for i in range(n):
        fleet = p.place(fleet, k, f"acc-{i:03d}").fleet
    return fleet


def test_twenty_accounts_with_one_route_share_three_agents():
    fleet = fill(20)
    assert len(fleet) == 3
    assert sorted(len(a.accounts) for a in fleet.values()) == [4, 8, 8]
    assert all(len(a.accounts) <= m.MAX_ACCOUNTS_PER_AGENT for a in fleet.values())


def test_names_are_deterministic_and_well_formed():
    a, b = fill(9), fill(9)
    assert a == b
    k = key()
    assert sorted(a) == [p.agent_name(k, 0), p.agent_name(k, 1)]
    assert p.agent_name(k, 0) == f"sipfleet-agent-{k.id}-0"
    assert len(k.id) == 8


def test_group_key_separates_namespace_transport_route_mode():
    base = key()
    others = [
        key(ns="other"),
        key(transport="tcp", route=("sip:127.0.20.1;lr;transport=tcp",)),
        key(route=("sip:127.0.20.9;lr",)),
        key(mode="account"),
    ]
    assert len({base.id, *(o.id for o in others)}) == 5
    fleet = p.place({}, base, "a").fleet
    for i, k in enumerate(others):
        plan = p.place(fleet, k, "a" if k.namespace != "default" else f"b{i}")
        assert plan.created, k
        fleet = plan.fleet
    assert len(fleet) == 5


def test_dedicated_accounts_are_alone():
    fleet = fill(3)
    plan = p.place(fleet, key(name="vip", dedicated=True), "vip")
    assert plan.created
    assert plan.fleet[plan.agent].accounts == ("vip",)
    plan2 = p.place(plan.fleet, key(name="vip2", dedicated=True), "vip2")
    assert plan2.agent != plan.agent and plan2.fleet[plan2.agent].accounts == ("vip2",)


def test_placing_again_is_a_noop():
    fleet = fill(5)
    plan = p.place(fleet, key(), "acc-003")
    assert plan.noop and plan.fleet == fleet


def test_new_account_goes_to_fullest_agent_with_room_and_nobody_moves():
    fleet = fill(16)  # two full agents
    fleet = p.remove(fleet, "default", "acc-000").fleet  # agent 0 has room for one
    k = key()
    fleet = p.place(fleet, k, "new-1").fleet  # goes to the agent with 7
    assert "new-1" in fleet[p.agent_name(k, 0)].accounts
    before = {n: set(a.accounts) for n, a in fleet.items()}
    plan = p.place(fleet, k, "new-2")  # all full: new agent 2
    assert plan.created == {p.agent_name(k, 2)}
    for n, accs in before.items():
        assert accs <= set(plan.fleet[n].accounts)


def test_fullest_with_room_is_preferred():
    k = key()
    fleet = {
        p.agent_name(k, 0): p.Agent(p.agent_name(k, 0), k, ("a", "b")),
        p.agent_name(k, 1): p.Agent(p.agent_name(k, 1), k, ("c", "d", "e", "f", "g")),
    }
    assert p.place(fleet, k, "z").agent == p.agent_name(k, 1)


def test_smallest_free_index_is_reused():
    k = key()
    fleet = fill(17)  # agents 0, 1, 2
    for i in range(8):
        fleet = p.remove(fleet, "default", f"acc-{i:03d}").fleet  # empties agent 0
    assert p.agent_name(k, 0) not in fleet
    fleet = p.place(fleet, k, "q").fleet  # agent 2 has room (1 account): fullest with room
    assert "q" in fleet[p.agent_name(k, 2)].accounts
    for i in range(6):
        fleet = p.place(fleet, k, f"r{i}").fleet
    plan = p.place(fleet, k, "s")
    assert plan.created == {p.agent_name(k, 0)}


def test_remove_last_account_removes_agent():
    fleet = fill(1)
    plan = p.remove(fleet, "default", "acc-000")
    assert plan.removed and not plan.fleet
    assert p.remove(plan.fleet, "default", "acc-000").noop


def test_route_change_moves_the_account_only():
    fleet = fill(9)
    other = key(route=("sip:127.0.20.9;lr",))
    plan = p.place(fleet, other, "acc-008")
    assert plan.created and plan.agent in plan.fleet
    assert p.find(plan.fleet, "default", "acc-008") == plan.agent
    assert plan.removed == {p.agent_name(key(), 1)}  # acc-008 was alone in agent 1


def test_reconstruct_round_trip_and_duplicates():
    fleet = fill(12)
    stored = [(a.name, a.key, a.accounts) for a in fleet.values()]
    r = p.reconstruct(stored)
    assert r.fleet == fleet and not r.dirty and not r.displaced
    k = key()
    dup = stored + [(p.agent_name(k, 5), k, ("acc-000", "lonely"))]
    r = p.reconstruct(dup)
    assert r.dirty == {p.agent_name(k, 5)}
    assert r.fleet[p.agent_name(k, 5)].accounts == ("lonely",)
    assert p.find(r.fleet, "default", "acc-000") == p.agent_name(k, 0)


def test_reconstruct_over_capacity_displaces():
    k = key()
    names = tuple(f"x{i}" for i in range(10))
    r = p.reconstruct([(p.agent_name(k, 0), k, names)])
    assert len(r.fleet[p.agent_name(k, 0)].accounts) == 8
    assert r.displaced == {("default", "x8"), ("default", "x9")}


def test_random_churn_keeps_invariants():
    rng = random.Random(7)
    keys = [key(), key(route=("sip:127.0.20.9;lr",)), key(ns="b")]
    fleet: dict = {}
    present: dict[tuple[str, str], p.GroupKey] = {}
    for step in range(600):
        if present and rng.random() < 0.4:
            ref = rng.choice(sorted(present))
            before = {n: set(a.accounts) for n, a in fleet.items()}
            fleet = p.remove(fleet, *ref).fleet
            del present[ref]
            for n, a in fleet.items():  # nobody else moved
                assert set(a.accounts) == before[n] - {ref[1]}
        else:
            k = rng.choice(keys)
            name = f"a{step}"
            fleet = p.place(fleet, k, name).fleet
            present[(k.namespace, name)] = k
        for a in fleet.values():
            assert 0 < len(a.accounts) <= a.key.capacity
        placed = [(a.namespace, n) for a in fleet.values() for n in a.accounts]
        assert sorted(placed) == sorted(present)
        for k in keys:
            agents = [a for a in fleet.values() if a.key == k]
            needed = -(-sum(len(a.accounts) for a in agents) // 8)
            assert len(agents) >= needed
