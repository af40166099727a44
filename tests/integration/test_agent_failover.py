"""Failover and return (issue 12 item 2): a standalone agent (supervisor and pjsua2 workers) whose accounts register
through P with E as their fallback route (``spec.fallbackRoutes``), against the lab; P then partitioned (every packet
in and out of its netns dropped, nftables), later healed.

Checked on the wire, over UDP, TCP and TLS: while P is cut off the worker's dead-flow detection (UDP: its OPTIONS
probes, ``udpDeadFlowSeconds``, go unanswered; TCP and TLS: the kernel closes the connection after
``deadFlowSeconds``), the
supervisor moves every account to a worker whose route is E (prevent mode: its global outbound proxy; account
mode: the account's proxy) and E receives their REGISTERs with ``Route: <E;lr>``; status says ``route.active``
index 1, reason DeadFlow, and the route in sync (a failover is not drift). While failed over the supervisor probes P
with OPTIONS (Call-ID ``sipfleet-probe-``); after the heal P sees ``returnAfterProbes`` answered probes in a row
before the first REGISTER through P again (the hysteresis), and status says index 0, reason Primary. The failover
and return times are printed (the bench ``sipfleet bench failover`` measures them with more accounts).
"""

from __future__ import annotations

import json
import time

import pytest

from sipfleet.kubectl.fmt import parse_time
from sipfleet_agent.siplog import routes_equal  # as URIs: pjsip puts ;transport before ;lr
from tests.fixtures.agent import registers

pytestmark = pytest.mark.lab

BOUND_S = 3  # udpDeadFlowSeconds: a probe every second, dead after 3 s unanswered
PROBE_S = 1
RETURN_AFTER = 3


def _active(agent, user: str) -> dict:
    return (agent.latest(user) or {}).get("route", {}).get("active", {})


def _on(agent, user: str, index: int, timeout: float) -> dict:
    return agent.wait_status(
        user, lambda s: s["registration"]["state"] == "Registered" and s["route"].get("inSync") is True
        and s["route"].get("active", {}).get("index") == index, timeout, f"registered on route {index}")


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_accounts_fail_over_to_the_fallback_route_and_return_once_the_primary_answers(clean_lab, agent_factory,
                                                                                       agent_account, transport):
    lab = clean_lab
    p_uri, e_uri = lab.proxy_uri(transport), lab.edge_uri(transport)
    failover = {"probeIntervalSeconds": PROBE_S, "returnAfterProbes": RETURN_AFTER}
    # TLS: verified against the lab's CA, the supervisor's probe of P included
    tls = {"tls": {"caFile": str(lab.tls.ca_crt)}} if transport == "tls" else {}
    accs, users = [], []
    for prefix, mode in (("fop", "prevent"), ("fop", "prevent"), ("foa", "account")):
        acc, user = agent_account(prefix, routeMode=mode, route=[p_uri], fallbackRoutes=[[e_uri]], failover=failover,
                                  transport=transport, **tls)
        accs.append(acc)
        users.append(user)
    # UDP: the worker's OPTIONS probes; TCP: the kernel closes the connection nothing acknowledges (ETIMEDOUT)
    agent = agent_factory(accs, expires=None, settings={"udpDeadFlowSeconds": BOUND_S, "deadFlowSeconds": BOUND_S})
    for u in users:
        st = _on(agent, u, 0, 60)
        assert st["route"]["active"]["reason"] == "Primary" and st["route"]["active"]["route"] == [p_uri]
        assert routes_equal(st["route"]["effective"], [p_uri])
    assert all(registers(lab, u, node="P") for u in users)
    assert not any(registers(lab, u, node="E") for u in users)

    # --- P cut off: over to E
    t_cut = time.time()
    lab.partition("P")
    try:
        for u in users:
            st = _on(agent, u, 1, 60)
            assert st["route"]["active"]["reason"] == "DeadFlow", st["route"]["active"]
            assert st["route"]["active"]["route"] == [e_uri]
            assert routes_equal(st["route"]["effective"], [e_uri]) and routes_equal(st["route"]["desired"][:1], [e_uri])
        via_e = {u: registers(lab, u, node="E", since=t_cut) for u in users}
        assert all(via_e.values()), via_e
        assert all(routes_equal(r.route[:1], [e_uri]) for rs in via_e.values() for r in rs), via_e
        over = min(r.at for rs in via_e.values() for r in rs) - t_cut
        over_all = max(min(r.at for r in rs) for rs in via_e.values()) - t_cut
        assert "failed over" in agent.stderr_text()
        # while failed over the supervisor probes P (unanswered: P is cut off), every PROBE_S
        time.sleep(3 * PROBE_S)
        assert _active(agent, users[0])["index"] == 1, "returned while P was still cut off"
    finally:
        t_heal = time.time()
        lab.heal("P")

    # --- P back: after RETURN_AFTER answered probes, back to P
    for u in users:
        st = _on(agent, u, 0, 60)
        assert st["route"]["active"]["reason"] == "Primary" and st["route"]["active"]["failovers"] == 1
        assert routes_equal(st["route"]["effective"], [p_uri])
    # the return was decided when status says (P also gets the retransmissions, left from the outage, of
    # transactions the workers begun then): RETURN_AFTER probes reached P between the heal and that moment
    decided = parse_time(_active(agent, users[0])["since"]).timestamp()
    probes = [r for r in lab.wire(since=t_heal, node="P", method="OPTIONS") if r.call_id.startswith("sipfleet-probe-")]
    answered_before = {r.call_id for r in probes if r.at < decided}  # one probe: its retransmissions share a Call-ID
    assert len(answered_before) >= RETURN_AFTER, (probes, decided)
    via_p = {u: registers(lab, u, node="P", since=decided) for u in users}
    assert all(via_p.values()), via_p
    back = min(r.at for rs in via_p.values() for r in rs) - t_heal
    assert "failed back" in agent.stderr_text()

    _, body = agent.get("/metrics")
    text = body.decode()
    assert f'sipfleet_agent_failovers_total{{direction="over"}} {float(len(users))}' in text, text
    assert f'sipfleet_agent_failovers_total{{direction="back"}} {float(len(users))}' in text
    assert "sipfleet_agent_accounts_on_fallback 0.0" in text
    assert 'sipfleet_agent_primary_probes_total{result="answered"}' in text
    print(json.dumps({"transport": transport, "failover_first_register_via_E_s": round(over, 2), "failover_all_accounts_s": round(over_all, 2),
                      "return_first_register_via_P_s": round(back, 2),
                      "probes_at_P_before_return": len(answered_before)}))
    assert agent.stop() == 0
