"""routeMode account: the drift paths of pjsua 2.15.1 really drift on the wire, the agent measures it
(inSync false) and a repair (re-create the account) puts the next REGISTER back through P; self-heal does that on
its own at the first drifted REGISTER; a re-register (token or debug hook) never drifts.
Also: a route change in the config takes the new route. Real Kamailio and pjsua2.

Drift is induced with ``POST /debug/drift`` (agent ``--debug-hooks``, off by default): setRegistration(False) then
(True) on the same account, the path that drifts in pjsua 2.15.1 (PJSIP issue 4066), or with an IP change while
a REGISTER is in flight."""

from __future__ import annotations

import signal
import time

import pytest

from sipfleet_agent.siplog import normalize_uri
from tests.fixtures.agent import registers

pytestmark = pytest.mark.lab


def _drifted(s: dict) -> bool:
    return s["route"].get("inSync") is False


def test_the_drift_hook_drifts_to_the_edge_and_sigusr1_repairs(clean_lab, agent_factory, agent_account):
    lab = clean_lab
    acc, user = agent_account("drift", selfHeal=False)
    agent = agent_factory([acc], expires=60)
    agent.wait_registered(user)

    # setRegistration(False) -> 200 -> setRegistration(True): the new registration client routes via E.
    t_drift = time.time()
    agent.post(f"/debug/drift?account={user}")
    rec = lab.wait_wire(lambda r: f":{user}@" in r.from_uri, node="E", method="REGISTER", since=t_drift, timeout=60)
    assert [normalize_uri(u) for u in rec.route] == [normalize_uri(lab.edge_uri())]
    st = agent.wait_status(user, _drifted, 60, "inSync false")
    assert [normalize_uri(u) for u in st["route"]["effective"]] == [normalize_uri(lab.edge_uri())]
    assert st["route"]["firstHop"] == f"udp:{lab.hostport('E')}"
    assert st["route"].get("lastDriftAt")

    # Repair on SIGUSR1: the next REGISTER goes through P again, on the wire.
    t_repair = time.time()
    agent.signal(signal.SIGUSR1)
    rec = lab.wait_wire(lambda r: f":{user}@" in r.from_uri and r.expires != "0", node="P", method="REGISTER",
                        since=t_repair, timeout=60)
    assert [normalize_uri(u) for u in rec.route] == [normalize_uri(lab.proxy_uri())]
    st = agent.wait_status(
        user,
        lambda s: s["route"].get("inSync") is True and (s["route"].get("lastRepair") or {}).get("result") == "repaired",
        60, "repaired",
    )
    rep = st["route"]["lastRepair"]
    assert rep["trigger"] == "user" and rep["method"] == "recreate-account"
    assert rep["durationMs"] > 0 and rep.get("driftSeenAt")
    assert st["route"]["firstHop"] == f"udp:{lab.hostport('P')}"
    agent.wait_registered(user)
    # After the repair no registration goes to E (the old client's un-REGISTER may still be on its way).
    late = [r for r in registers(lab, user, node="E", since=rec.at) if r.expires != "0"]
    assert late == [], late
    assert agent.metric("sipfleet_agent_drift_seen_total") >= 1
    assert agent.metric("sipfleet_agent_drift_repaired_total") >= 1
    assert agent.stop() == 0


def _fresh_registers_at(lab, user: str, node: str, since: float) -> list:
    return [r for r in registers(lab, user, node=node, since=since) if r.expires != "0"]


def test_reregister_token_and_hook_never_drift(clean_lab, agent_factory, agent_account):
    """What the sipfleet.io/reregister annotation does (reregisterToken) and POST /debug/reregister: an un-REGISTER
    and a REGISTER from a new registration client, both through P; nothing ever reaches E."""
    lab = clean_lab
    acc, user = agent_account("rereg", selfHeal=False)  # no self-heal: a drift would stay and show
    agent = agent_factory([acc], expires=60)
    agent.wait_registered(user)
    first = registers(lab, user, node="P")[-1]

    t0 = time.time()
    agent.write_config({**agent.config, "accounts": [dict(acc, reregisterToken="rr-1")]})
    st = agent.wait_status(user, lambda s: s["agent"].get("reregisterTokenAck") == "rr-1", 60, "token acked")
    unreg = lab.wait_wire(lambda r: f":{user}@" in r.from_uri and r.expires == "0", node="P", method="REGISTER",
                          since=t0, timeout=60)
    fresh = lab.wait_wire(lambda r: f":{user}@" in r.from_uri and r.expires != "0" and r.at >= unreg.at, node="P",
                          method="REGISTER", since=t0, timeout=60)
    assert fresh.call_id != first.call_id  # a new registration client
    assert [normalize_uri(u) for u in fresh.route] == [normalize_uri(lab.proxy_uri())]
    agent.wait_registered(user)

    t1 = time.time()
    agent.post(f"/debug/reregister?account={user}")
    lab.wait_wire(lambda r: f":{user}@" in r.from_uri and r.expires != "0" and r.call_id != fresh.call_id, node="P",
                  method="REGISTER", since=t1, timeout=60)
    st = agent.wait_registered(user)
    # give a drifted refresh the time to show (none may come), then check the whole wire since the first action
    agent.post(f"/debug/refresh?account={user}")
    lab.wait_wire(lambda r: f":{user}@" in r.from_uri, node="P", method="REGISTER", since=time.time() - 0.5, timeout=30)
    time.sleep(1.0)
    assert registers(lab, user, node="E", since=t0) == []
    st = agent.statuses(user)[-1]
    assert st["route"]["inSync"] is True and not st["route"].get("lastDriftAt") and st["route"].get("driftCount", 0) == 0
    assert all(s["route"].get("inSync") is not False for s in agent.statuses(user))
    assert agent.metric("sipfleet_agent_drift_seen_total") == 0
    assert agent.stop() == 0


def test_self_heal_acts_on_the_first_drifted_register_while_busy(clean_lab, agent_factory, agent_account):
    """selfHeal is on by default. The drift hook keeps the account busy while its REGISTER drifts (the path where
    self-heal used to wait for the next refresh): the agent re-creates the account the moment the drift is seen,
    the operator is not involved (there is none), and the next REGISTER goes through P."""
    lab = clean_lab
    acc, user = agent_account("heal")
    assert "selfHeal" not in acc
    agent = agent_factory([acc], expires=60)
    agent.wait_registered(user)

    t0 = time.time()
    agent.post(f"/debug/drift?account={user}")
    drifted = lab.wait_wire(lambda r: f":{user}@" in r.from_uri and r.expires != "0", node="E", method="REGISTER",
                            since=t0, timeout=60)
    back = lab.wait_wire(lambda r: f":{user}@" in r.from_uri and r.expires != "0" and r.call_id != drifted.call_id
                         and r.at >= drifted.at, node="P", method="REGISTER", since=t0, timeout=30)
    assert [normalize_uri(u) for u in back.route] == [normalize_uri(lab.proxy_uri())]
    st = agent.wait_status(
        user, lambda s: s["route"].get("inSync") is True and (s["route"].get("lastRepair") or {}).get("result") == "repaired",
        30, "self-heal repaired")
    rep = st["route"]["lastRepair"]
    assert rep["trigger"] == "self-heal" and rep.get("driftSeenAt") and rep["durationMs"] > 0
    assert st["route"]["driftCount"] == 1 and st["route"]["selfHealCount"] == 1
    agent.wait_registered(user)
    # only the drifted registration client went to E (its REGISTER and, at most, the answer to R's challenge)
    at_e = [r for r in registers(lab, user, node="E", since=t0) if r.expires != "0"]
    assert {r.call_id for r in at_e} == {drifted.call_id}, at_e
    assert _fresh_registers_at(lab, user, "E", back.at) == []
    print(f"\nwire: drifted REGISTER at E -> REGISTER via P {1000 * (back.at - drifted.at):.1f} ms; "
          f"agent-measured {rep['durationMs']} ms")
    assert agent.metric("sipfleet_agent_repairs_total", 'trigger="self-heal"') == 1
    assert agent.metric("sipfleet_agent_drift_repaired_total") == 1
    assert agent.stop() == 0


def test_ip_change_during_an_inflight_register_drifts_and_self_heal_repairs(clean_lab, agent_factory, agent_account):
    lab = clean_lab
    acc, user = agent_account("ipc")
    agent = agent_factory([acc], expires=60, self_heal=True)
    agent.wait_registered(user)

    # Keep the next REGISTER in flight at R, then announce an IP change (pjsua's EBUSY retry path).
    lab.inject("R", "delay:1500")
    t0 = time.time()
    agent.post(f"/debug/refresh?account={user}")
    inflight = lab.wait_wire(lambda r: f":{user}@" in r.from_uri, node="P", method="REGISTER", since=t0, timeout=60)
    agent.post("/debug/ip-change")
    rec = lab.wait_wire(lambda r: f":{user}@" in r.from_uri, node="E", method="REGISTER", since=t0, timeout=60)
    assert [normalize_uri(u) for u in rec.route] == [normalize_uri(lab.edge_uri())]
    lab.inject("R", "normal")

    # Self-heal: the agent saw the drift and re-created the account on its own.
    st = agent.wait_status(
        user,
        lambda s: s["route"].get("inSync") is True
        and (s["route"].get("lastRepair") or {}).get("trigger") == "self-heal"
        and s["route"]["lastRepair"].get("result") == "repaired",
        90, "self-heal repair",
    )
    assert st["route"].get("lastDriftAt")
    assert any(_drifted(s) for s in agent.statuses(user)) or st["route"]["lastRepair"].get("driftSeenAt")
    # The re-created account's REGISTER (a new registration client: a new Call-ID) goes through P.
    back = lab.wait_wire(lambda r: f":{user}@" in r.from_uri and r.expires != "0"
                         and r.call_id not in (inflight.call_id, rec.call_id),
                         node="P", method="REGISTER", since=t0, timeout=60)
    assert [normalize_uri(u) for u in back.route] == [normalize_uri(lab.proxy_uri())]
    agent.wait_registered(user)
    assert agent.stop() == 0


def test_route_change_in_the_config_takes_the_new_route(lab, agent_factory, agent_account):
    acc, user = agent_account("chg")
    other, user2 = agent_account("keep")
    agent = agent_factory([acc, other], expires=60)
    agent.wait_registered(user)
    agent.wait_registered(user2)

    # New route: E then P (two hops). The REGISTER must carry exactly that route, not the Service-Route.
    t0 = time.time()
    new_route = [lab.edge_uri(), lab.proxy_uri()]
    changed = dict(acc, route=new_route)
    other_changed = dict(other, route=new_route)  # one agent = one route: both accounts move
    agent.write_config({**agent.config, "accounts": [changed, other_changed]})
    rec = lab.wait_wire(lambda r: f":{user}@" in r.from_uri and r.expires != "0", node="E", method="REGISTER",
                        since=t0, timeout=60)
    assert [normalize_uri(u) for u in rec.route] == [normalize_uri(u) for u in new_route]
    hop2 = lab.wait_wire(lambda r: f":{user}@" in r.from_uri and r.call_id == rec.call_id, node="P",
                         method="REGISTER", since=t0, timeout=60)
    assert [normalize_uri(u) for u in hop2.route] == [normalize_uri(lab.proxy_uri())]
    st = agent.wait_status(
        user, lambda s: s["route"]["desired"][:2] == new_route and s["route"].get("inSync") is True
        and s["registration"]["state"] == "Registered", 60, "new route in sync")
    assert [normalize_uri(u) for u in st["route"]["effective"]] == [normalize_uri(u) for u in new_route]
    assert st["route"]["firstHop"] == f"udp:{lab.hostport('E')}"
    assert agent.stop() == 0


def test_a_changed_account_is_recreated_and_the_others_are_not_touched(lab, agent_factory, agent_account, tmp_path):
    acc, user = agent_account("mod")
    other, user2 = agent_account("calm")
    agent = agent_factory([acc, other], expires=60)
    agent.wait_registered(user)
    agent.wait_registered(user2)
    t0 = time.time()
    changed = dict(acc, incomingCalls={"policy": "ring"}, registration={**acc["registration"], "retryIntervalSeconds": 6})
    agent.write_config({**agent.config, "accounts": [changed, other]})
    lab.wait_wire(lambda r: f":{user}@" in r.from_uri and r.expires != "0", node="P", method="REGISTER",
                  since=t0, timeout=60)
    agent.wait_registered(user)
    # Account removed from the config: unregistered and forgotten; the other one still untouched.
    agent.write_config({**agent.config, "accounts": [other]})
    deadline = time.monotonic() + 60
    while lab.contacts(user):
        assert time.monotonic() < deadline, "removed account still registered"
        time.sleep(0.2)
    assert registers(lab, user2, since=t0) == [], "the unchanged account re-REGISTERed"
    assert agent.stop() == 0


def test_prevent_mode_route_change_restarts_only_that_worker(lab, agent_factory, agent_account):
    # The global outbound proxy is per pjsua2 process: the account moves to a worker started with the new route;
    # the agent process and the other account's worker carry on untouched.
    acc, user = agent_account("pre", routeMode="prevent")
    other, user2 = agent_account("stay")
    agent = agent_factory([acc], expires=60)
    agent.wait_registered(user)
    agent.write_config({**agent.config, "accounts": [acc, other]})
    agent.wait_registered(user2)
    pid_before = {w["id"]: w["pid"] for w in agent.snapshot()["workers"]}
    assert len(pid_before) == 2
    t0 = time.time()
    agent.write_config({**agent.config, "accounts": [dict(acc, route=[lab.edge_uri()]), other]})
    rec = lab.wait_wire(lambda r: f":{user}@" in r.from_uri and r.expires != "0", node="E", method="REGISTER",
                        since=t0, timeout=60)
    assert [normalize_uri(u) for u in rec.route] == [normalize_uri(lab.edge_uri())]
    agent.wait_status(user, lambda s: s["registration"]["state"] == "Registered" and s["route"].get("inSync") is True
                      and s["route"].get("firstHop") == f"udp:{lab.hostport('E')}", 60, "Registered via E")
    assert agent.proc.poll() is None
    snap = agent.snapshot()
    by_account = {a["name"]: a["worker"] for a in snap["accounts"]}
    pids = {w["id"]: w["pid"] for w in snap["workers"]}
    assert pids[by_account[user2]] == pid_before[by_account[user2]], "the other account's worker was restarted"
    assert registers(lab, user2, since=t0) == [], "the other account re-REGISTERed"
    assert agent.stop() == 0
    assert lab.contacts(user) == [] and lab.contacts(user2) == []
