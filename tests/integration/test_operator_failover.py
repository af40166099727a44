"""Failover as a user sees it (issue 12 item 2): a SipAccount in prevent mode (the default) with P as its route and E
as its fallback route, run by the operator in an agent pod on the local cluster's real kubelet; P partitioned, then
healed. The account's conditions, ``status.route.active`` and events follow, and the wire shows each REGISTER
taking the route status says is active (the agent's UDP dead-flow probing is on through the operator's setting)."""

from __future__ import annotations

import time

import pytest

from sipfleet.api import keys
from sipfleet.kubectl.fmt import parse_time
from sipfleet.localenv.waiting import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.lab]


def _registers(lab, user: str, since: float, node: str) -> list:
    return [r for r in lab.wire(since=since, method="REGISTER", node=node) if f":{user}@" in r.from_uri
            and r.expires != "0"]


def _active(sipacc, name: str) -> dict:
    return ((sipacc.get(name).get("status") or {}).get("route") or {}).get("active") or {}


def test_a_prevent_mode_account_fails_over_to_its_fallback_route_and_back(own_operator, lab, lab_user):
    sipacc = own_operator({"SIPFLEET_AGENT_UDP_DEAD_FLOW_SECONDS": "3"})
    user, password = lab_user("fover")
    sipacc.secret("creds", user, password)
    p_uri, e_uri = lab.proxy_uri(), lab.edge_uri()
    sipacc.create("fay", sipacc.spec(lab, user, "creds", fallbackRoutes=[[e_uri]],
                                     failover={"probeIntervalSeconds": 1, "returnAfterProbes": 3}))
    sipacc.wait_condition("fay", "Ready", timeout=180)
    sipacc.wait_condition("fay", "RouteInSync", reason="InSync", timeout=30)
    assert _active(sipacc, "fay")["index"] == 0

    t_cut = time.time()
    lab.partition("P")
    try:
        st = sipacc.wait_condition("fay", "RouteInSync", reason="FailedOver", timeout=60)
        cond = next(c for c in st["status"]["conditions"] if c["type"] == "RouteInSync")
        assert e_uri in cond["message"], cond
        assert st["status"]["route"]["active"]["index"] == 1 and st["status"]["route"]["active"]["reason"] == "DeadFlow"
        assert st["status"]["route"]["effective"] == [e_uri]
        assert next(c for c in st["status"]["conditions"] if c["type"] == "Ready")["status"] == "True"
        assert _registers(lab, user, t_cut, "E"), "no REGISTER through E"
        wait_for(lambda: [e for e in sipacc.events("fay") if e.reason == keys.EVENT_FAILED_OVER], timeout=30,
                 message="a FailedOver event")
        over = min(r.at for r in _registers(lab, user, t_cut, "E")) - t_cut
    finally:
        t_heal = time.time()
        lab.heal("P")

    sipacc.wait_condition("fay", "RouteInSync", reason="InSync", timeout=60)
    active = _active(sipacc, "fay")
    assert active["index"] == 0 and active["reason"] == "Primary" and active["failovers"] == 1
    decided = parse_time(active["since"]).timestamp()  # P also gets retransmissions left from the outage
    assert _registers(lab, user, decided, "P"), "no REGISTER through P after the return"
    wait_for(lambda: [e for e in sipacc.events("fay") if e.reason == keys.EVENT_FAILED_BACK], timeout=30,
             message="a FailedBack event")
    ev = next(e for e in sipacc.events("fay") if e.reason == keys.EVENT_FAILED_OVER)
    assert ev.type == "Warning" and e_uri in ev.message
    print(f"cluster failover: first REGISTER via E {over:.1f} s after P was cut off; back on P "
          f"{min(r.at for r in _registers(lab, user, decided, 'P')) - t_heal:.1f} s after the heal")
