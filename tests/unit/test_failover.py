"""Failover and return (issue 12 item 2), without pjsua2: the spec's rules, the pure plan (over on the active route's
path failure, the hysteresis of the return), the supervisor's probe on real loopback sockets, the component that
gives workers the active route, and what the operator's RouteInSync says."""

from __future__ import annotations

import re
import socket
import threading
import time
from datetime import datetime, timezone

import pytest
from pydantic import ValidationError

from sipfleet.api import models as m
from sipfleet.api import reasons
from sipfleet_agent import protocol as p
from sipfleet_agent.config import ResolvedAccount, Secretish
from sipfleet_agent.supervisor import failoverplan as fp
from sipfleet_agent.supervisor import routeprobe
from sipfleet_agent.supervisor.failover import Failover
from sipfleet_operator import conditions as c

P, E, F = "sip:10.0.0.1;lr", "sip:10.0.0.3;lr", "sip:10.0.0.4;lr"
BASE = {"aor": "sip:a@x.org", "registrar": "sip:x.org", "route": [P], "credentials": {"secretName": "s"}}


# ------------------------------------------------------------------ the spec


def test_fallback_routes_are_checked_and_name_the_entry():
    s = m.SipAccountSpec.model_validate({**BASE, "fallbackRoutes": [[E], [F, E]]})
    assert s.fallback_routes == [[E], [F, E]] and s.failover.return_after_probes == 3
    for bad, says in (([[P]], "fallbackRoutes[0] repeats the route"), ([[E], [E]], "fallbackRoutes[1] repeats"),
                      ([["sip:10.0.0.3"]], "fallbackRoutes[0] entry 'sip:10.0.0.3' is not a loose-routing URI"),
                      ([[E, E]], "fallbackRoutes[0] entries must be unique"), ([[]], "at least 1 item"),
                      ([[E], [F], ["sip:10.0.0.5;lr"], ["sip:10.0.0.6;lr"]], "at most 3 items")):
        with pytest.raises(ValidationError, match=re.escape(says)):
            m.SipAccountSpec.model_validate({**BASE, "fallbackRoutes": bad})
    with pytest.raises(ValidationError, match="fallbackRoutes need a primary route"):
        m.SipAccountSpec.model_validate({**BASE, "route": [], "routeMode": "account", "fallbackRoutes": [[E]]})


def test_accounts_share_a_worker_only_with_the_same_fallbacks_and_the_key_is_unchanged_without():
    def acc(**kw):
        return m.AgentAccount.model_validate({**BASE, "name": "a", "credentials": {"secretName": "s"}, **kw})

    assert acc().worker_key() == ("udp", (P,), "prevent")  # as before the feature
    assert acc(fallbackRoutes=[[E]]).worker_key() != acc(fallbackRoutes=[[F]]).worker_key()
    assert acc(fallbackRoutes=[[E]]).worker_key() != acc().worker_key()
    assert m.workers_needed([acc(name=f"a{i}", fallbackRoutes=[[E]]) for i in range(8)] + [acc(name="b")]) == 2


# ------------------------------------------------------------------ the plan

G = fp.Group(routes=((P,), (E,), (F,)), interval=10.0, return_after=3)


def test_a_path_failure_of_the_active_route_moves_one_step_and_a_late_one_does_not():
    ch = fp.on_path_failure(G, fp.State(), route=(P,), cause=reasons.DEAD_FLOW, detail="no answer", now=100.0)
    assert ch.event == fp.OVER and ch.state.active == 1 and ch.state.reason == reasons.DEAD_FLOW
    assert ch.state.next_probe == 110.0 and ch.state.failovers == 1 and "primary route" in ch.state.message
    late = fp.on_path_failure(G, ch.state, route=(P,), cause=reasons.FIRST_HOP_UNANSWERED, detail="", now=101.0)
    assert late.event is None and late.state == ch.state  # another account's report about P: still one step
    nxt = fp.on_path_failure(G, ch.state, route=(E,), cause=reasons.FIRST_HOP_UNREACHABLE, detail="", now=102.0)
    assert nxt.event == fp.OVER and nxt.state.active == 2 and nxt.state.failovers == 2
    last = fp.on_path_failure(G, nxt.state, route=(F,), cause=reasons.FIRST_HOP_UNANSWERED, detail="", now=103.0)
    assert last.event is None and last.state.active == 2  # nowhere to go from the last route


def test_the_return_needs_answers_in_a_row_and_one_unanswered_probe_starts_again():
    st = fp.on_path_failure(G, fp.State(), route=(P,), cause=reasons.DEAD_FLOW, detail="", now=0.0).state
    assert not fp.probe_due(st, 9.0) and fp.probe_due(st, 10.0)
    now, events = 10.0, []
    for answered in (True, True, False, True, True, True):
        assert fp.probe_due(st, now)
        st = fp.probe_started(st)
        assert not fp.probe_due(st, now + 100)  # one probe in flight at a time
        ch = fp.on_probe(G, st, answered=answered, now=now + 1)
        st, now = ch.state, now + 11
        events.append(ch.event)
    assert events == [None, None, None, None, None, fp.BACK]
    assert st.active == 0 and st.reason == reasons.PRIMARY and st.failovers == 1 and not fp.probe_due(st, 1e9)
    assert fp.probe_timeout(G) == 4.0 and fp.probe_timeout(fp.Group(((P,), (E,)), 1.0, 1)) == 1.0


def test_no_probe_on_the_primary():
    assert not fp.probe_due(fp.State(), 1e9)
    assert fp.on_probe(G, fp.State(), answered=True, now=1.0).event is None


# ------------------------------------------------------------------ the probe, on loopback


def _responder(kind: str, code: int | None):
    """A loopback SIP peer that answers each OPTIONS with ``code`` (None: never), echoing the Call-ID."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    if kind != "udp":
        s.listen(4)
    seen: list[bytes] = []

    def answer(data: bytes) -> bytes:
        call_id = next(x for x in data.decode().split("\r\n") if x.startswith("Call-ID:"))
        return f"SIP/2.0 {code} Whatever\r\n{call_id}\r\nContent-Length: 0\r\n\r\n".encode()

    def run() -> None:
        if kind == "udp":
            while True:
                data, src = s.recvfrom(65535)
                seen.append(data)
                if code is not None:
                    s.sendto(answer(data), src)
        while True:
            conn, _ = s.accept()
            data = conn.recv(65535)
            seen.append(data)
            if code is not None:
                conn.sendall(answer(data))

    threading.Thread(target=run, daemon=True).start()
    return s, seen


@pytest.mark.parametrize("kind", ["udp", "tcp"])
def test_the_probe_reports_any_final_answer_and_none_without_one(kind):
    s, seen = _responder(kind, 404)
    route = [f"sip:127.0.0.1:{s.getsockname()[1]};lr"]
    assert routeprobe.probe(route=route, registrar="sip:x.org", transport=kind, local_address="127.0.0.1",
                            timeout=2.0) == 404
    req = seen[0].decode()
    assert req.startswith("OPTIONS sip:x.org SIP/2.0\r\n") and f"Route: <{route[0]}>\r\n" in req
    assert f"Via: SIP/2.0/{kind.upper()} 127.0.0.1:" in req and "Call-ID: sipfleet-probe-" in req
    quiet, quiet_seen = _responder(kind, None)
    t0 = time.monotonic()
    assert routeprobe.probe(route=[f"sip:127.0.0.1:{quiet.getsockname()[1]};lr"], registrar="sip:x.org",
                            transport=kind, local_address="127.0.0.1", timeout=1.2) is None
    assert time.monotonic() - t0 < 3
    if kind == "udp":
        assert len(quiet_seen) >= 2  # retransmitted at T1


def test_a_refused_connection_is_no_answer_and_other_calls_answers_do_not_count():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    assert routeprobe.probe(route=[f"sip:127.0.0.1:{port};lr"], registrar="sip:x.org", transport="tcp",
                            local_address="127.0.0.1", timeout=1.0) is None
    assert routeprobe.final_status(b"SIP/2.0 200 OK\r\nCall-ID: sipfleet-probe-abc\r\n\r\n", "abc") == 200
    assert routeprobe.final_status(b"SIP/2.0 200 OK\r\nCall-ID: sipfleet-probe-zzz\r\n\r\n", "abc") is None
    assert routeprobe.final_status(b"SIP/2.0 100 Trying\r\nCall-ID: sipfleet-probe-abc\r\n\r\n", "abc") is None
    assert routeprobe.first_hop(["sips:p.example.org;lr"], "tls") == ("p.example.org", 5061)
    assert routeprobe.first_hop(["sip:[fd00::1]:5070;lr"], "udp")[:2] == ("fd00::1", 5070)


# ------------------------------------------------------------------ the supervisor's component


class Edge:
    def __init__(self):
        self.events = []

    def event(self, key, name, type_, reason, message, count=1):
        self.events.append((name, type_, reason, message))


def _resolved(name: str, **kw) -> ResolvedAccount:
    spec = m.AgentAccount.model_validate({**BASE, "name": name, "credentials": {"secretName": "s"}, **kw})
    return ResolvedAccount(spec, Secretish("u", "pw"))


def test_the_component_moves_a_group_gives_workers_the_active_route_and_returns():
    clock = [0.0]
    answers: list[int | None] = []
    edge = Edge()
    fo = Failover(edge, "127.0.0.1", clock=lambda: clock[0], prober=lambda **kw: answers.append(kw) or 200)
    a, b = (_resolved(n, fallbackRoutes=[[E]], failover={"probeIntervalSeconds": 1, "returnAfterProbes": 2})
            for n in ("a", "b"))
    alone = _resolved("c")
    fo.configure([a, b, alone])
    assert fo.effective(a) is a and fo.effective(alone) is alone
    doc = {"registration": {"state": "Registered"}, "route": {"mode": "prevent", "inSync": True}}
    assert fo.annotate(a.key, doc)["route"]["active"] == {"index": 0, "route": [P], "reason": "Primary", "failovers": 0}
    assert fo.annotate(alone.key, doc) is doc

    assert fo.on_path_failed(p.PathFailed(None, "a", [P], reasons.DEAD_FLOW, "no answer")) == [(None, "a"), (None, "b")]
    moved = fo.effective(b)
    assert moved.spec.route == [E] and moved.spec.fallback_routes == [] and moved.worker_key() != b.worker_key()
    m.AgentAccount.model_validate(moved.spec.model_dump(mode="json"))  # what the worker validates
    assert [e[2] for e in edge.events] == ["FailedOver", "FailedOver"] and edge.events[0][1] == "Warning"
    assert "registering through fallback route 1 (sip:10.0.0.3;lr)" in edge.events[0][3]
    active = fo.annotate(b.key, doc)["route"]["active"]
    assert active["index"] == 1 and active["reason"] == "DeadFlow" and active["route"] == [E] and active["since"]
    assert fo.on_path_failed(p.PathFailed(None, "b", [P], reasons.DEAD_FLOW, "")) == []  # late: already moved

    back = []
    for _ in range(10):  # one probe per interval, each answered: back after the second answer
        clock[0] += 1.0
        back = fo.tick()
        if back:
            break
        deadline = time.monotonic() + 5
        while not fo._results and time.monotonic() < deadline:
            time.sleep(0.01)
    assert back == [(None, "a"), (None, "b")] and len(answers) == 2
    assert answers[0]["route"] == [P] and answers[0]["local_address"] == "127.0.0.1"
    assert fo.effective(a) is a and [e[2] for e in edge.events][-2:] == ["FailedBack", "FailedBack"]
    fams = {f.name: f for f in fo.collect()}
    assert {s.labels["direction"]: s.value for s in fams["sipfleet_agent_failovers"].samples
            if s.name.endswith("_total")} == {"over": 2, "back": 2}
    assert fams["sipfleet_agent_accounts_on_fallback"].samples[0].value == 0

    fo.configure([alone])  # the group left: forgotten
    assert fo.on_path_failed(p.PathFailed(None, "a", [P], reasons.DEAD_FLOW, "")) == []


def test_path_failed_travels_the_protocol():
    msg = p.PathFailed("ns", "a", [P], reasons.FIRST_HOP_UNANSWERED, "408 Request Timeout")
    assert p.decode(p.encode(msg)) == msg


# ------------------------------------------------------------------ the operator


def test_route_in_sync_on_a_fallback_route_says_failed_over():
    st = m.SipAccountStatus(
        registration=m.RegistrationStatus(state="Registered", code=200),
        route=m.RouteStatus(mode="prevent", desired=[E], effective=[E], in_sync=True, first_hop="udp:10.0.0.3:5060",
                            active=m.ActiveRoute(index=1, route=[E], reason="DeadFlow",
                                                 message="the primary route (sip:10.0.0.1;lr) failed: DeadFlow")),
        agent=m.AgentRef(name="sipfleet-agent-x-0", pod="sipfleet-agent-x-0-abc"))
    pod = c.PodState(name="sipfleet-agent-x-0-abc", phase="Running", ready=True, ever_ready=True)
    conds = {x.type: x for x in c.compute(c.Inputs(generation=1, placed_in="sipfleet-agent-x-0", credentials_problem=None,
                                                   pod=pod, status=st, paused=False),
                                          datetime(2026, 1, 1, tzinfo=timezone.utc))}
    rs = conds["RouteInSync"]
    assert rs.status == "True" and rs.reason == "FailedOver"
    assert "fallback route 1 (sip:10.0.0.3;lr)" in rs.message and "DeadFlow" in rs.message
    assert conds["Ready"].status == "True"
