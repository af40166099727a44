"""One agent, many workers (standalone mode against the real lab): 64 accounts on 3 routes in 8 pjsua2 worker
processes; a killed or hung worker is restarted alone and only its accounts re-register; SIGTERM removes every
contact at R."""

from __future__ import annotations

import os
import signal
import time

from sipfleet_agent.siplog import normalize_uri
from tests.fixtures.agent import registers


def _routes(lab) -> dict:
    # (route, transport, routeMode) -> (first-hop node, how many accounts)
    return {
        "p-udp": ([lab.proxy_uri()], "udp", "account", "P", 24),
        "e-udp": ([lab.edge_uri()], "udp", "account", "E", 24),
        "p-tcp": ([lab.proxy_uri("tcp")], "tcp", "prevent", "P", 16),
    }


def _fleet(lab, agent_account, routes: dict) -> tuple[list[dict], dict]:
    accounts, expect = [], {}
    for tag, (route, transport, mode, node, n) in routes.items():
        for i in range(n):
            acc, user = agent_account(f"{tag[0]}{tag[2]}{i}", route=route, transport=transport, routeMode=mode)
            accounts.append(acc)
            expect[user] = (route, transport, node)
    return accounts, expect


def _wait_all_registered(agent, users, timeout=120.0):
    for u in users:
        agent.wait_registered(u, timeout=timeout)


def _worker_of(snapshot: dict) -> dict:
    return {a["name"]: a["worker"] for a in snapshot["accounts"]}


def test_sixty_four_accounts_on_three_routes_a_killed_worker_and_sigterm(lab, agent_factory, agent_account):
    routes = _routes(lab)
    accounts, expect = _fleet(lab, agent_account, routes)
    assert len(accounts) == 64
    t0 = time.time()
    agent = agent_factory(accounts, expires=60)
    _wait_all_registered(agent, expect)
    snap = agent.snapshot()
    workers = {w["id"]: w for w in snap["workers"]}
    assert len(workers) == 8 and sorted(len(w["accounts"]) for w in workers.values()) == [8] * 8
    assert len({w["pid"] for w in workers.values()}) == 8 and agent.proc.pid not in {w["pid"] for w in workers.values()}

    # Every account's REGISTER went through its own route, on the wire.
    for user, (route, transport, node) in expect.items():
        got = registers(lab, user, node=node, since=t0)
        assert got, f"{user}: no REGISTER at {node}"
        assert all([normalize_uri(u) for u in r.route] == [normalize_uri(x) for x in route] for r in got), \
            (user, [r.route for r in got])
        assert all(r.transport == transport for r in got), (user, transport, [r.transport for r in got])
        other = "E" if node == "P" else "P"
        assert registers(lab, user, node=other, since=t0) == [], f"{user}: a REGISTER reached {other}"
        assert lab.contacts(user), f"{user}: no contact at R"
    assert agent.metric("sipfleet_agent_registrations", 'state="Registered"') == 64.0

    # SIGKILL one worker: its 8 accounts re-register, the other 56 send nothing meanwhile.
    where = _worker_of(snap)
    victim = workers[where[next(u for u, e in expect.items() if e[2] == "E")]]
    mine = set(victim["accounts"])
    assert len(mine) == 8
    t_kill = time.time()
    os.kill(victim["pid"], signal.SIGKILL)
    for u in mine:
        agent.wait_status(u, lambda s: s["registration"]["state"] == "Failed"
                          and "SIGKILL" in (s["registration"].get("reason") or ""), 30, "Failed: worker killed")
    for u in mine:
        agent.wait_registered(u, timeout=60)
        assert [r for r in registers(lab, u, since=t_kill) if r.expires != "0"], f"{u} did not re-REGISTER"
    t_done = time.time()
    quiet = [u for u in expect if u not in mine and registers(lab, u, since=t_kill)]
    assert quiet == [], f"accounts of other workers sent REGISTERs after the kill: {quiet}"
    after = agent.snapshot()
    new_pids = {w["id"]: w["pid"] for w in after["workers"]}
    assert new_pids[victim["id"]] != victim["pid"]
    assert {i: p for i, p in new_pids.items() if i != victim["id"]} == \
        {i: w["pid"] for i, w in workers.items() if i != victim["id"]}
    assert _worker_of(after) == where, "an account moved to another worker"
    assert t_done - t_kill < 60
    assert "WorkerRestarted" in agent.stderr_text() and "SIGKILL" in agent.stderr_text()

    # SIGTERM: every contact of all 64 accounts is removed at R before the agent exits 0.
    assert agent.stop(timeout=60) == 0, agent.stderr_tail()
    left = [u for u in expect if lab.contacts(u)]
    assert left == [], f"contacts left at R: {left}"
    for w in after["workers"]:
        assert not os.path.exists(f"/proc/{w['pid']}") or _zombie(w["pid"]), f"worker {w['pid']} still running"


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].startswith("Z")
    except OSError:
        return True


def test_a_hung_worker_is_detected_and_restarted_alone(lab, agent_factory, agent_account):
    accounts, users = [], []
    for i in range(10):
        acc, user = agent_account(f"hang{i}")
        accounts.append(acc)
        users.append(user)
    agent = agent_factory(accounts, expires=60, settings={"heartbeatTimeoutSeconds": 4})
    _wait_all_registered(agent, users)
    snap = agent.snapshot()
    workers = {w["id"]: w for w in snap["workers"]}
    assert sorted(len(w["accounts"]) for w in workers.values()) == [2, 8]
    victim = next(w for w in workers.values() if len(w["accounts"]) == 2)
    t_stop = time.time()
    os.kill(victim["pid"], signal.SIGSTOP)
    try:
        for u in victim["accounts"]:
            st = agent.wait_status(u, lambda s: s["registration"]["state"] == "Failed"
                                   and "hung" in (s["registration"].get("reason") or ""), 30, "Failed: hung")
            assert u in st["registration"]["reason"] and "no heartbeat" in st["registration"]["reason"]
        for u in victim["accounts"]:
            agent.wait_registered(u, timeout=60)
    finally:
        if os.path.exists(f"/proc/{victim['pid']}") and not _zombie(victim["pid"]):
            os.kill(victim["pid"], signal.SIGCONT)  # only if the agent did not kill it (the test fails then)
    detected = time.time() - t_stop
    assert detected < 30
    others = [u for u in users if u not in victim["accounts"]]
    assert [u for u in others if registers(lab, u, since=t_stop)] == []
    snap = agent.snapshot()
    assert {w["id"]: w["pid"] for w in snap["workers"]}[victim["id"]] != victim["pid"]

    # Adding one account and removing another touches only their workers' accounts: nobody else re-REGISTERs.
    new_acc, new_user = agent_account("hangnew")
    big = next(w for w in snap["workers"] if len(w["accounts"]) == 8)
    gone = big["accounts"][0]
    keep = [a for a in accounts if a["name"] != gone] + [new_acc]
    t_change = time.time()
    agent.write_config({**agent.config, "accounts": keep})
    agent.wait_registered(new_user, timeout=60)
    deadline = time.monotonic() + 60
    while lab.contacts(gone):
        assert time.monotonic() < deadline, "removed account still registered"
        time.sleep(0.2)
    where = {a["name"]: a["worker"] for a in agent.snapshot()["accounts"]}
    assert where[new_user] == big["id"], "the new account did not join the fullest worker with room"
    assert gone not in where
    assert [u for u in users if u != gone and registers(lab, u, since=t_change)] == []
    assert agent.stop() == 0
    assert [u for u in users + [new_user] if lab.contacts(u)] == []
