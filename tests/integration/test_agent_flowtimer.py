"""RFC 5626 outbound and its flow timer (issue 12 item 3): a standalone agent (pjsua2 2.15.1) with
``registration.outbound`` registers directly with the lab's scripted registrar S, which offers outbound
(``Require: outbound``, ``Flow-Timer: 5`` in its 2xx).

Checked on the wire at S: the REGISTER's Contact carries ``;ob``, and over TCP ``reg-id=1`` and a ``+sip.instance``
(pjsua asks for outbound only over TCP and TLS; without ``outbound``: none of them); the agent reports ``flowTimerSeconds: 5``; the flow is kept alive (CRLF CRLF pings from pjsua at 0.8-1.0
times the Flow-Timer; over TCP S answers each with a pong) and, over UDP, watched with OPTIONS although
``udpDeadFlowSeconds`` is off. S then partitioned: the agent notices the dead flow (UDP: ``DeadFlow`` within the
Flow-Timer + 10 s; TCP: the unacknowledged ping makes the kernel close the connection within ``deadFlowSeconds``,
``TransportLost``) long before the 300 s refresh. The times are printed.
"""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.lab

FLOW_TIMER = 5
SCRIPT = f"200 expires=300 header='Require: outbound' header='Flow-Timer: {FLOW_TIMER}'"
REGISTRATION = {"retryIntervalSeconds": 5, "firstRetryIntervalSeconds": 1, "jitterSeconds": 0}


def _from(records, address: str) -> list:
    return [r for r in records if r.src.startswith(f"{address}:")]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_a_registrar_offering_outbound_gets_a_flow_kept_alive_and_watched(clean_lab, agent_factory, agent_account,
                                                                          transport):
    lab = clean_lab
    lab.scripted.script(SCRIPT)
    acc, user = agent_account("obf", registrar=lab.scripted.uri(transport), transport=transport, route=[],
                              registration={**REGISTRATION, "outbound": True})
    t0 = time.time()
    agent = agent_factory([acc], expires=None, settings={"deadFlowSeconds": 6})  # udpDeadFlowSeconds stays 0
    agent.wait_status(user, lambda s: s["registration"]["state"] == "Registered"
                      and s["registration"].get("flowTimerSeconds") == FLOW_TIMER, 30, "registered with a flow timer")
    reg = [r for r in lab.scripted.requests(since=t0) if f":{user}@" in r.from_uri][0]
    assert ";ob>" in reg.contact, reg.contact
    if transport == "tcp":
        assert ";reg-id=1" in reg.contact and '+sip.instance="<urn:uuid:' in reg.contact, reg.contact
    else:  # pjsua asks for outbound only over TCP and TLS (pjsua_acc.c): over UDP the Contact has ;ob alone
        assert "reg-id" not in reg.contact and "+sip.instance" not in reg.contact, reg.contact

    time.sleep(3 * FLOW_TIMER)
    pings = _from(lab.scripted.requests(since=t0, method="KEEPALIVE"), agent.address)
    assert len(pings) >= 2, pings  # every 4-5 s
    assert all(r.transport == transport for r in pings)
    if transport == "tcp":
        assert all(r.answer == "pong" for r in pings), pings
    options = _from(lab.scripted.requests(since=t0, method="OPTIONS"), agent.address)
    if transport == "udp":  # every (5 + 10) / 3 s: watched although udpDeadFlowSeconds is 0
        assert len(options) >= 2, options
    assert agent.latest(user)["registration"].get("nextAttemptReason") is None

    reason = "DeadFlow" if transport == "udp" else "TransportLost"
    lab.partition("S")
    try:
        t_cut, noticed = time.monotonic(), None
        while noticed is None and time.monotonic() - t_cut < 60:
            if agent.latest(user)["registration"].get("nextAttemptReason") == reason:
                noticed = time.monotonic() - t_cut
            time.sleep(0.2)
        print(f"{transport}, Flow-Timer {FLOW_TIMER} s: dead flow noticed {noticed} s after S was cut off")
        assert noticed is not None, (agent.latest(user), agent.stderr_tail())
    finally:
        lab.heal("S")
    assert agent.stop() == 0


def test_without_outbound_the_contact_asks_for_nothing(clean_lab, agent_factory, agent_account):
    lab = clean_lab
    lab.scripted.script("200 expires=300")
    acc, user = agent_account("nob", registrar=lab.scripted.uri(), route=[])
    t0 = time.time()
    agent = agent_factory([acc], expires=None)
    st = agent.wait_registered(user)
    assert st["registration"].get("flowTimerSeconds") is None
    reg = [r for r in lab.scripted.requests(since=t0) if f":{user}@" in r.from_uri][0]
    assert "reg-id" not in reg.contact and "+sip.instance" not in reg.contact, reg.contact
    assert agent.stop() == 0
