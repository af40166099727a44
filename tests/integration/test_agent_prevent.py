"""routeMode prevent (the route is pjsua's global outbound proxy): none of the known drift paths drifts.
Every REGISTER goes through P, E never sees one, the agent never reports inSync false.
Real Kamailio (failure injection, nodes stopped and started) and pjsua2."""

from __future__ import annotations

import time

import pytest

from sipfleet_agent.siplog import normalize_uri
from tests.fixtures.agent import registers

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def _never_drifted(agent, user: str) -> None:
    statuses = agent.statuses(user)
    assert statuses
    bad = [s for s in statuses if s["route"].get("inSync") is False or s["route"].get("lastDriftAt")]
    assert bad == [], bad[:1]


def _wait_fresh_register_at_p(lab, user: str, since: float, transport: str = "udp"):
    rec = lab.wait_wire(lambda r: f":{user}@" in r.from_uri and r.expires != "0", node="P", method="REGISTER",
                        since=since, timeout=90)
    assert [normalize_uri(u) for u in rec.route] == [normalize_uri(lab.proxy_uri(transport))]
    assert rec.transport == transport
    return rec


def test_prevent_udp_survives_every_drift_path(clean_lab, agent_factory, agent_account):
    lab = clean_lab
    acc, user = agent_account("prv", routeMode="prevent")
    agent = agent_factory([acc], expires=5)
    agent.wait_registered(user)
    t0 = time.time()

    # 1. setRegistration(False) -> 200 -> setRegistration(True) (drifts in account mode; the debug hook)
    t = time.time()
    agent.post(f"/debug/drift?account={user}")
    lab.wait_wire(lambda r: f":{user}@" in r.from_uri and r.expires == "0", node="P", method="REGISTER",
                  since=t, timeout=60)
    _wait_fresh_register_at_p(lab, user, time.time())
    agent.wait_registered(user)

    # 2. handleIpChange while a REGISTER is in flight (drifts in account mode)
    lab.inject("R", "delay:1500")
    t = time.time()
    agent.post(f"/debug/refresh?account={user}")
    lab.wait_wire(lambda r: f":{user}@" in r.from_uri, node="P", method="REGISTER", since=t, timeout=60)
    agent.post("/debug/ip-change")
    lab.inject("R", "normal")
    _wait_fresh_register_at_p(lab, user, time.time())
    agent.wait_registered(user)

    # 3. refreshes answered 408, then 503, then OK
    lab.inject("R", "408")
    agent.wait_status(user, lambda s: s["registration"]["state"] == "Failed" and s["registration"]["code"] == 408,
                      60, "Failed 408")
    lab.inject("R", "503")
    agent.wait_status(user, lambda s: s["registration"]["state"] == "Failed" and s["registration"]["code"] == 503,
                      60, "Failed 503")
    lab.inject("R", "normal")
    agent.wait_registered(user)
    _wait_fresh_register_at_p(lab, user, time.time())

    # 4. registrar down, then up
    lab.stop_node("R")
    agent.wait_status(user, lambda s: s["registration"]["state"] == "Failed", 90, "Failed while R is down")
    lab.start_node("R")
    t = time.time()
    agent.wait_registered(user, timeout=90)
    _wait_fresh_register_at_p(lab, user, t)

    # 5. proxy down (REGISTERs go unanswered), then up
    sent = agent.metric("sipfleet_agent_registers_sent_total")
    lab.stop_node("P")
    deadline = time.monotonic() + 60
    while agent.metric("sipfleet_agent_registers_sent_total") < sent + 2:
        assert time.monotonic() < deadline, "no REGISTER attempted while P was down"
        time.sleep(0.2)
    t = time.time()
    lab.start_node("P")
    _wait_fresh_register_at_p(lab, user, t)
    agent.wait_registered(user, timeout=90)

    assert registers(lab, user, node="E", since=t0) == []
    _never_drifted(agent, user)
    st = agent.latest(user)
    assert st["route"]["firstHop"] == f"udp:{lab.hostport('P')}"
    assert agent.metric("sipfleet_agent_drift_seen_total") == 0
    assert agent.stop() == 0


def test_prevent_tcp_proxy_restart_does_not_drift(clean_lab, agent_factory, agent_account):
    lab = clean_lab
    acc, user = agent_account("tcp", routeMode="prevent", transport="tcp")
    agent = agent_factory([acc], expires=30)
    st = agent.wait_registered(user)
    assert st["route"]["firstHop"] == f"tcp:{lab.hostport('P')}"
    t0 = time.time()
    _wait_fresh_register_at_p(lab, user, t0 - 60, transport="tcp")

    # The TCP proxy process is killed: the connection drops, re-registration fails until P is back.
    lab.stop_node("P")
    agent.wait_status(user, lambda s: s["registration"]["state"] == "Failed", 90, "Failed while P is down")
    t = time.time()
    lab.start_node("P")
    _wait_fresh_register_at_p(lab, user, t, transport="tcp")
    agent.wait_registered(user, timeout=90)

    # A quick restart (down and up before the agent notices a failure) too.
    t = time.time()
    lab.restart_node("P")
    agent.post(f"/debug/refresh?account={user}")
    _wait_fresh_register_at_p(lab, user, t, transport="tcp")
    agent.wait_registered(user, timeout=90)

    assert registers(lab, user, node="E", since=t0) == []
    _never_drifted(agent, user)
    assert agent.latest(user)["route"]["firstHop"] == f"tcp:{lab.hostport('P')}"
    assert agent.stop() == 0
