"""The worker plan: stable (no account moves unless it must), keyed, bounded, and its diff."""

from __future__ import annotations

import random

from sipfleet_agent.supervisor.plan import Plan, WorkerSlot, diff, plan_workers

P = ("udp", ("sip:p;lr",), "account")
E = ("udp", ("sip:e;lr",), "account")
PP = ("udp", ("sip:p;lr",), "prevent")


def acc(i: int) -> tuple:
    return ("ns", f"a{i:02d}")


def wanted(n: int, key=P, start: int = 0) -> dict:
    return {acc(i): key for i in range(start, start + n)}


def mapping(plan: Plan) -> dict:
    return {a: w.id for w in plan.workers.values() for a in w.accounts}


def test_accounts_fill_workers_of_their_key_eight_at_a_time():
    plan = plan_workers({}, {**wanted(20), **wanted(3, E, 20), **wanted(1, PP, 23)})
    sizes = sorted((w.key[1][0], w.key[2], len(w.accounts)) for w in plan.workers.values())
    assert sizes == [("sip:e;lr", "account", 3), ("sip:p;lr", "account", 4), ("sip:p;lr", "account", 8),
                     ("sip:p;lr", "account", 8), ("sip:p;lr", "prevent", 1)]
    assert set(plan.workers) == {0, 1, 2, 3, 4} and plan.unplaced == ()
    for w in plan.workers.values():
        assert all(wanted_key == w.key for a, wanted_key in
                   {**wanted(20), **wanted(3, E, 20), **wanted(1, PP, 23)}.items() if a in w.accounts)


def test_adding_or_removing_an_account_moves_no_other_account():
    rng = random.Random(7)
    want = wanted(40)
    plan = plan_workers({}, want)
    for step in range(200):
        before = mapping(plan)
        if rng.random() < 0.5 and want:
            del want[rng.choice(sorted(want))]
        else:
            want[("ns", f"n{step:03d}")] = rng.choice([P, E, PP])
        if sum(-(-list(want.values()).count(k) // 8) for k in {P, E, PP}) > 8:
            continue  # more than the API admits
        plan = plan_workers(plan.workers, want)
        after = mapping(plan)
        moved = [a for a in before if a in after and before[a] != after[a]]
        if not plan.unplaced and len(plan.workers) < 8:
            assert moved == [], (step, moved)
        assert all(len(w.accounts) <= 8 for w in plan.workers.values())
        assert set(after) | set(plan.unplaced) == set(want)


def test_a_rekeyed_account_moves_alone_and_an_emptied_worker_is_dropped():
    plan = plan_workers({}, {**wanted(8), acc(8): PP})
    assert mapping(plan)[acc(8)] == 1
    changed = {**wanted(8), acc(8): E}  # its prevent route changed
    new = plan_workers(plan.workers, changed)
    assert {a: w for a, w in mapping(new).items() if a != acc(8)} == {a: 0 for a in wanted(8)}
    assert new.workers[1].key == E
    assert [(c.id, c.action) for c in diff(plan.workers, new.workers)] == [(0, "keep"), (1, "restart")]
    gone = plan_workers(new.workers, wanted(8))
    assert list(gone.workers) == [0]
    assert [(c.id, c.action, sorted(c.removed)) for c in diff(new.workers, gone.workers)] == [
        (0, "keep", []), (1, "stop", [acc(8)])]


def test_new_accounts_go_to_the_fullest_worker_with_room_then_a_new_lowest_id():
    prev = {0: WorkerSlot(0, P, frozenset(wanted(3).keys())), 2: WorkerSlot(2, P, frozenset(wanted(6, P, 3)))}
    plan = plan_workers(prev, {**wanted(9), acc(50): P, acc(51): P, acc(52): E})
    assert mapping(plan)[acc(50)] == 2 and mapping(plan)[acc(51)] == 2  # 6 + 2: the fullest with room
    assert mapping(plan)[acc(52)] == 1
    ch = {c.id: c for c in diff(prev, plan.workers)}
    assert ch[1].action == "start" and ch[2].added == frozenset({acc(50), acc(51)}) and ch[0].action == "keep"


def test_fragmented_workers_are_compacted_only_when_an_account_fits_nowhere():
    # eight workers: P in 0..3 with 2 accounts each, E/PP/... in 4..7 full
    keys = [("udp", (f"sip:r{i};lr",), "account") for i in range(4)]
    prev = {i: WorkerSlot(i, P, frozenset({("ns", f"p{i}a"), ("ns", f"p{i}b")})) for i in range(4)}
    for j, k in enumerate(keys):
        prev[4 + j] = WorkerSlot(4 + j, k, frozenset({("ns", f"k{j}-{m}") for m in range(8)}))
    want = {a: w.key for w in prev.values() for a in w.accounts}
    same = plan_workers(prev, want)
    assert mapping(same) == {a: w.id for w in prev.values() for a in w.accounts}
    newkey = ("tcp", ("sip:x;lr",), "account")
    plan = plan_workers(prev, {**want, ("ns", "fresh"): newkey})
    assert plan.unplaced == ()
    moved = [a for a, w in mapping(plan).items() if a in mapping(same) and mapping(same)[a] != w]
    assert sorted(moved) == [("ns", "p0a"), ("ns", "p0b")]  # only the emptiest P worker's accounts
    assert plan.workers[0].key == newkey
    full = plan_workers(plan.workers, {**want, ("ns", "fresh"): newkey,
                                       **{("ns", f"z{i}"): ("tls", ("sip:z;lr",), "account") for i in range(17)}})
    # P compacted into one worker: 6 workers in use, 2 free for 17 accounts of a new key: one is left over
    assert full.unplaced == (("ns", "z9"),) and len(full.workers) == 8
