"""Placement is pure: one group per namespace (and dedicated), capacity in accounts and workers, deterministic
names, no moves of placed accounts unless they must."""

from __future__ import annotations

import random

from sipfleet.api import models as m
from sipfleet_operator import placement as p

P = "sip:127.0.20.1;lr"
ROUTE0 = ("udp", (P,), "prevent")


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


def route(i: int) -> p.WorkerKey:
    return ("udp", (f"sip:127.0.21.{i};lr",), "prevent")


def fill(n: int, k: p.GroupKey | None = None, fleet=None, shape=ROUTE0, limit=m.MAX_ACCOUNTS_PER_AGENT, prefix="acc"):
    fleet = dict(fleet or {})
    k = k or key()
    for i in range(n):
        fleet = p.place(fleet, k, f"{prefix}-{i:03d}", shape, limit).fleet
    return fleet


def sizes(fleet) -> list[int]:
    return sorted(len(a.accounts) for a in fleet.values())


def test_sixty_five_accounts_open_a_second_agent():
    fleet = fill(65)
    assert sizes(fleet) == [1, 64]
    assert all(a.workers <= m.MAX_WORKERS_PER_AGENT for a in fleet.values())
    assert max(a.workers for a in fleet.values()) == 8


def test_accounts_per_agent_limits_each_agent():
    assert sizes(fill(20, limit=8)) == [4, 8, 8]
    assert sizes(fill(5, limit=4)) == [1, 4]
    assert sizes(fill(3, limit=1)) == [1, 1, 1]


def test_eight_routes_with_one_account_each_fill_an_agent():
    fleet: dict = {}
    k = key()
    for i in range(8):
        fleet = p.place(fleet, k, f"r{i}", route(i)).fleet
    (agent,) = fleet.values()
    assert agent.workers == 8 and len(agent.accounts) == 8
    # a ninth route needs a ninth worker: another agent
    plan = p.place(fleet, k, "r8", route(8))
    assert plan.created and plan.fleet[plan.agent].accounts == ("r8",)
    # an account of a route the full agent runs fits its worker
    plan2 = p.place(plan.fleet, k, "r0b", route(0))
    assert plan2.agent == agent.name and plan2.fleet[agent.name].workers == 8


def test_transport_route_and_mode_share_an_agent_namespaces_do_not():
    fleet: dict = {}
    k = key()
    for i, shape in enumerate([ROUTE0, ("tcp", ("sip:127.0.20.1;lr;transport=tcp",), "prevent"),
                               ("udp", ("sip:127.0.20.9;lr",), "prevent"), ("udp", (P,), "account")]):
        fleet = p.place(fleet, k, f"a{i}", shape).fleet
    (agent,) = fleet.values()
    assert agent.workers == 4 and len(agent.accounts) == 4
    plan = p.place(fleet, key(ns="other"), "a0", ROUTE0)
    assert plan.created and len(plan.fleet) == 2
    assert key(ns="other").id != k.id


def test_names_are_deterministic_and_well_formed():
    a, b = fill(9, limit=8), fill(9, limit=8)
    assert a == b
    k = key()
    assert sorted(a) == [p.agent_name(k, 0), p.agent_name(k, 1)]
    assert p.agent_name(k, 0) == f"sipfleet-agent-{k.id}-0"
    assert len(k.id) == 8
    assert k == key(route=("sip:127.0.20.9;lr",), transport="udp", mode="account")  # the key is the namespace


def test_dedicated_accounts_are_alone():
    fleet = fill(3)
    plan = p.place(fleet, key(name="vip", dedicated=True), "vip", ROUTE0)
    assert plan.created
    assert plan.fleet[plan.agent].accounts == ("vip",)
    plan2 = p.place(plan.fleet, key(name="vip2", dedicated=True), "vip2", ROUTE0)
    assert plan2.agent != plan.agent and plan2.fleet[plan2.agent].accounts == ("vip2",)


def test_placing_again_is_a_noop():
    fleet = fill(5)
    plan = p.place(fleet, key(), "acc-003", ROUTE0)
    assert plan.noop and plan.fleet == fleet


def test_new_account_goes_to_fullest_agent_with_room_and_nobody_moves():
    fleet = fill(16, limit=8)  # two full agents
    fleet = p.remove(fleet, "default", "acc-000").fleet  # agent 0 has room for one
    k = key()
    fleet = p.place(fleet, k, "new-1", ROUTE0, 8).fleet  # goes to the agent with 7
    assert "new-1" in fleet[p.agent_name(k, 0)].accounts
    before = {n: set(a.accounts) for n, a in fleet.items()}
    plan = p.place(fleet, k, "new-2", ROUTE0, 8)  # all full: new agent 2
    assert plan.created == {p.agent_name(k, 2)}
    for n, accs in before.items():
        assert accs <= set(plan.fleet[n].accounts)


def test_fullest_with_room_is_preferred_then_no_new_worker():
    k = key()
    fleet = {
        p.agent_name(k, 0): p.Agent(p.agent_name(k, 0), k).with_accounts("ab", {"a": ROUTE0, "b": ROUTE0}),
        p.agent_name(k, 1): p.Agent(p.agent_name(k, 1), k).with_accounts("cdefg", {x: ROUTE0 for x in "cdefg"}),
    }
    assert p.place(fleet, k, "z", ROUTE0).agent == p.agent_name(k, 1)
    fleet2 = {
        p.agent_name(k, 0): p.Agent(p.agent_name(k, 0), k).with_accounts("ab", {"a": route(1), "b": route(1)}),
        p.agent_name(k, 1): p.Agent(p.agent_name(k, 1), k).with_accounts("cd", {"c": route(2), "d": route(2)}),
    }
    assert p.place(fleet2, k, "z", route(2)).agent == p.agent_name(k, 1)  # equally full: the one with its worker


def test_smallest_free_index_is_reused():
    k = key()
    fleet = fill(17, limit=8)  # agents 0, 1, 2
    for i in range(8):
        fleet = p.remove(fleet, "default", f"acc-{i:03d}").fleet  # empties agent 0
    assert p.agent_name(k, 0) not in fleet
    fleet = p.place(fleet, k, "q", ROUTE0, 8).fleet  # agent 2 has room (1 account): fullest with room
    assert "q" in fleet[p.agent_name(k, 2)].accounts
    for i in range(6):
        fleet = p.place(fleet, k, f"r{i}", ROUTE0, 8).fleet
    plan = p.place(fleet, k, "s", ROUTE0, 8)
    assert plan.created == {p.agent_name(k, 0)}


def test_remove_last_account_removes_agent():
    fleet = fill(1)
    plan = p.remove(fleet, "default", "acc-000")
    assert plan.removed and not plan.fleet
    assert p.remove(plan.fleet, "default", "acc-000").noop


def test_route_change_stays_while_the_workers_fit():
    fleet = fill(9)
    (name,) = fleet
    plan = p.place(fleet, key(), "acc-008", route(5))
    assert plan.agent == name and plan.changed == {name} and not plan.created and not plan.removed
    assert plan.fleet[name].shape_map["acc-008"] == route(5) and plan.fleet[name].workers == 2  # 8 of route 0, 1 of route 5


def test_route_change_moves_only_when_the_agent_would_need_a_ninth_worker():
    fleet: dict = {}
    k = key()
    for i in range(8):
        fleet = p.place(fleet, k, f"r{i}", route(i)).fleet
    fleet = p.place(fleet, k, "r0b", route(0)).fleet
    (name,) = fleet
    # r0b moving to route 1 keeps 8 workers: stays
    assert p.place(fleet, k, "r0b", route(1)).agent == name
    # r0b moving to a ninth route would need 9: it moves, alone, and nobody else does
    plan = p.place(fleet, k, "r0b", route(9))
    assert plan.agent != name and plan.created and plan.fleet[name].accounts == tuple(f"r{i}" for i in range(8))
    # r1 (alone in its worker) moving to a ninth route replaces its worker: stays
    assert p.place(fleet, k, "r1", route(9)).agent == name


def test_lowering_the_limit_moves_nobody():
    fleet = fill(20)  # one agent of 20
    (name,) = fleet
    plan = p.place(fleet, key(), "acc-005", ROUTE0, 8)
    assert plan.noop
    plan = p.place(fleet, key(), "acc-005", route(3), 8)  # even a route change stays
    assert plan.agent == name
    plan = p.place(fleet, key(), "newcomer", ROUTE0, 8)
    assert plan.created  # the full-by-the-new-limit agent takes nobody new


def test_agents_of_an_older_operator_keep_their_names_and_take_new_accounts():
    legacy = p.legacy_key_id("default", "udp", [P], "prevent", None)
    old_name = f"sipfleet-agent-{legacy}-0"
    k = key()
    fleet = {old_name: p.Agent(old_name, k).with_accounts(["a", "b"], {"a": ROUTE0, "b": ROUTE0})}
    plan = p.place(fleet, k, "c", route(4))
    assert plan.agent == old_name
    fleet = fill(62, fleet=plan.fleet)
    # 58 accounts of route 0 would need 8 workers next to c's: 56 (7 workers) + c fill it
    assert len(fleet[old_name].accounts) == 2 + 1 + 54 and fleet[old_name].workers == 8
    assert set(fleet) == {old_name, p.agent_name(k, 0)}  # index 0 of today's id: another name
    assert len(fleet[p.agent_name(k, 0)].accounts) == 8


def test_reconstruct_round_trip_and_duplicates():
    fleet = fill(12, limit=8)
    stored = [(a.name, a.key, a.accounts, a.shape_map) for a in fleet.values()]
    r = p.reconstruct(stored)
    assert r.fleet == fleet and not r.dirty and not r.displaced
    k = key()
    dup = stored + [(p.agent_name(k, 5), k, ("acc-000", "lonely"), {})]
    r = p.reconstruct(dup)
    assert r.dirty == {p.agent_name(k, 5)}
    assert r.fleet[p.agent_name(k, 5)].accounts == ("lonely",)
    assert p.find(r.fleet, "default", "acc-000") == p.agent_name(k, 0)


def test_reconstruct_over_the_hard_limits_displaces():
    k = key()
    names = tuple(f"x{i:02d}" for i in range(70))
    r = p.reconstruct([(p.agent_name(k, 0), k, names, {n: ROUTE0 for n in names})])
    assert len(r.fleet[p.agent_name(k, 0)].accounts) == 64
    assert r.displaced == {("default", f"x{i}") for i in range(64, 70)}
    routes = tuple(f"y{i}" for i in range(10))
    r = p.reconstruct([(p.agent_name(k, 1), k, routes, {n: route(i) for i, n in enumerate(routes)})])
    assert r.fleet[p.agent_name(k, 1)].workers == 8
    assert r.displaced == {("default", "y8"), ("default", "y9")}
    # unknown worker keys count as one worker each
    r = p.reconstruct([(p.agent_name(k, 2), k, names[:10], {})])
    assert len(r.fleet[p.agent_name(k, 2)].accounts) == 8 and len(r.displaced) == 2


def test_random_churn_keeps_invariants():
    rng = random.Random(7)
    namespaces = ["default", "b"]
    shapes = [ROUTE0, route(1), route(2), ("udp", (P,), "account")] + [route(i) for i in range(3, 12)]
    fleet: dict = {}
    present: dict[tuple[str, str], p.WorkerKey] = {}
    for step in range(1500):
        limit = rng.choice([8, 64, 64, 64, 20])
        r = rng.random()
        before = {n: set(a.accounts) for n, a in fleet.items()}
        if present and r < 0.35:
            ref = rng.choice(sorted(present))
            fleet = p.remove(fleet, *ref).fleet
            del present[ref]
            for n, a in fleet.items():  # nobody else moved
                assert set(a.accounts) == before[n] - {ref[1]}
        elif present and r < 0.5:  # a route change: only that account may move, and only when it must
            ref = rng.choice(sorted(present))
            shape = rng.choice(shapes)
            where = p.find(fleet, *ref)
            plan = p.place(fleet, p.GroupKey(ref[0]), ref[1], shape, limit)
            if plan.agent != where:
                assert not fleet[where].fits(ref[1], shape, m.MAX_ACCOUNTS_PER_AGENT)
            fleet = plan.fleet
            present[ref] = shape
            for n, a in fleet.items():
                assert set(a.accounts) - {ref[1]} == before.get(n, set()) - {ref[1]}
        else:
            ns, shape, name = rng.choice(namespaces), rng.choice(shapes), f"a{step}"
            plan = p.place(fleet, p.GroupKey(ns), name, shape, limit)
            assert len(plan.fleet[plan.agent].accounts) <= limit  # joins only agents with room under the limit
            fleet = plan.fleet
            present[(ns, name)] = shape
        for a in fleet.values():
            assert 0 < len(a.accounts) <= a.key.capacity
            assert a.workers <= m.MAX_WORKERS_PER_AGENT
            assert a.shape_map == {n: present[(a.namespace, n)] for n in a.accounts}
        placed = [(a.namespace, n) for a in fleet.values() for n in a.accounts]
        assert sorted(placed) == sorted(present)
        stored = [(a.name, a.key, a.accounts, a.shape_map) for a in fleet.values()]
        assert p.reconstruct(stored).fleet == fleet
