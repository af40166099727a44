"""The worker's pure modules, without pjsua2: event loop (fake clock), route meter (recorded pjsip TX/RX log
lines), registration state machine and retry watchdog, repair policy, assignment plan; and the pod's metric sums."""

from __future__ import annotations

from sipfleet.api import reasons

import subprocess
import sys
from types import SimpleNamespace

import pytest

from sipfleet.api.models import AgentAccount, RegistrationStatus, RouteStatus
from sipfleet_agent.config import ResolvedAccount, Secretish
from sipfleet_agent.siplog import parse_rx_response, parse_tx_request
from sipfleet_agent.supervisor.metricsagg import WorkerMetrics
from sipfleet_agent.worker import assignplan, regstate, repair
from sipfleet_agent.worker.eventloop import EventLoop, LoopClosed, Wait
from sipfleet_agent.worker.routemeter import RouteMeter, aor_key


def test_pure_modules_and_the_supervisor_do_not_import_pjsua2():
    mods = ["sipfleet_agent.worker.eventloop", "sipfleet_agent.worker.routemeter", "sipfleet_agent.worker.regstate",
            "sipfleet_agent.worker.repair", "sipfleet_agent.worker.assignplan", "sipfleet_agent.worker.retrypolicy",
            "sipfleet_agent.supervisor.runtime",
            "sipfleet_agent.supervisor.standalone", "sipfleet_agent.k8s.edge", "sipfleet_agent.main"]
    code = "import sys\n" + "".join(f"import {m}\n" for m in mods) + "print('pjsua2' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


# ------------------------------------------------------------------------------------------------ event loop


def test_timers_run_when_due_in_order_and_cancelled_ones_do_not():
    clock = Clock()
    loop = EventLoop(clock)
    ran: list[str] = []
    loop.call_later(2.0, ran.append, "b")
    loop.call_later(1.0, ran.append, "a1")
    loop.call_later(1.0, ran.append, "a2")
    t = loop.call_later(1.5, ran.append, "cancelled")
    loop.cancel(t)
    loop.call_later(0.5, lambda: 1 / 0)  # a failing timer ends only itself
    loop.turn()
    assert ran == []
    clock.t += 1.0
    loop.turn()
    assert ran == ["a1", "a2"]
    clock.t += 5
    loop.turn()
    assert ran == ["a1", "a2", "b"]


def test_tasks_resume_on_their_predicate_or_timeout_and_submitted_calls_resolve_futures():
    clock = Clock()
    loop = EventLoop(clock)
    flag = {"v": False}
    steps: list[str] = []

    def task():
        steps.append("start")
        yield Wait(10.0, lambda: flag["v"])
        steps.append("pred")
        yield Wait(3.0)
        steps.append("timeout")

    loop.spawn(task())
    loop.turn()
    assert steps == ["start"]
    flag["v"] = True
    loop.turn()
    assert steps == ["start", "pred"]
    clock.t += 2.9
    loop.turn()
    assert steps == ["start", "pred"]
    clock.t += 0.2
    loop.turn()
    assert steps == ["start", "pred", "timeout"] and loop.tasks == []
    errors: list = []

    def bad():
        yield Wait(0.0)
        raise RuntimeError("boom")

    loop.spawn(bad(), on_error=errors.append)
    loop.turn()
    assert [str(e) for e in errors] == ["boom"] and loop.tasks == []
    ok, fail = loop.submit(lambda a, b: a + b, 2, 3), loop.submit(lambda: 1 / 0)
    loop.turn()
    assert ok.result(0) == 5 and isinstance(fail.exception(0), ZeroDivisionError)
    loop.close()
    with pytest.raises(LoopClosed):
        loop.submit(lambda: 1).result(0)


# ------------------------------------------------------------------------------------------------ route meter


def tx(route: str, dest: str = "127.0.20.1:5060", call_id: str = "cid-1", cseq: int = 1, transport: str = "UDP",
       user: str = "alice", expires: int = 300) -> str:
    return (
        f"TX 506 bytes Request msg REGISTER/cseq={cseq} (tdta0x1) to {transport} {dest}:\n"
        "REGISTER sip:127.0.20.2:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.20.200:36381;rport;branch=z9hG4bKPj{cseq}\r\n"
        + (f"Route: {route}\r\n" if route else "")
        + f"From: <sip:{user}@lab.sipfleet.test>;tag=t\r\n"
        f"To: <sip:{user}@lab.sipfleet.test>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} REGISTER\r\n"
        f"Contact: <sip:alice@127.0.20.200:36381;ob>\r\nExpires: {expires}\r\nContent-Length:  0\r\n\r\n\n--end msg--"
    )


def rx(code: int, call_id: str, cseq: int = 1) -> str:
    return (f"RX 300 bytes Response msg {code}/REGISTER/cseq={cseq} (rdata0x1) from UDP 127.0.20.1:5060:\n"
            f"SIP/2.0 {code} X\r\nCall-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n\r\n--end msg--")


P = "sip:127.0.20.1:5060;lr"


def test_route_meter_in_sync_drift_retransmission_and_first_hop():
    m = RouteMeter([P], "udp")
    route = RouteStatus(mode="account", desired=[P])
    o = m.observe_tx(parse_tx_request(tx(f"<{P}>")), route)
    assert o.kind == "register" and o.in_sync is True and not o.drift_started
    assert o.changes == {"in_sync": True, "effective": [P], "first_hop": "udp:127.0.20.1:5060",
                         "request_uri": "sip:127.0.20.2:5060"}
    route = route.model_copy(update=o.changes)
    assert m.observe_tx(parse_tx_request(tx(f"<{P}>")), route).kind == "retransmission"
    same = m.observe_tx(parse_tx_request(tx(f"<{P}>", cseq=2)), route)
    assert same.kind == "register" and same.changes == {}
    off = m.observe_tx(parse_tx_request(tx("<sip:127.0.20.3:5060;lr>", dest="127.0.20.3:5060", cseq=3)), route)
    assert off.in_sync is False and off.drift_started
    route = route.model_copy(update=off.changes)
    again = m.observe_tx(parse_tx_request(tx("<sip:127.0.20.3:5060;lr>", dest="127.0.20.3:5060", cseq=4)), route)
    assert again.in_sync is False and not again.drift_started  # a drift starts once
    # Same Route header but sent elsewhere than the IP-literal first hop: not in sync either.
    assert m.in_sync(parse_tx_request(tx(f"<{P}>", dest="127.0.20.9:5060", cseq=5))) is False
    assert m.in_sync(parse_tx_request(tx("", cseq=6))) is False


def test_route_meter_late_register_of_a_deleted_client_and_the_unregister_answer():
    m = RouteMeter([P], "udp")
    route = RouteStatus(mode="account", desired=[P])
    m.observe_tx(parse_tx_request(tx(f"<{P}>", call_id="old")), route)
    m.retire()  # re-creating the account
    unreg = m.observe_tx(parse_tx_request(tx(f"<{P}>", call_id="old", cseq=2, expires=0)), route)
    assert unreg.kind == "unregister" and m.unreg_sent and m.unreg_call_id == "old"
    assert not m.observe_rx(parse_rx_response(rx(401, "old", 2)))  # a challenge is no answer
    m.observe_tx(parse_tx_request(tx(f"<{P}>", call_id="old", cseq=3, expires=0)), route)  # answering it
    assert m.observe_rx(parse_rx_response(rx(200, "old", 3)))
    assert not m.unreg_done  # the REGISTER of cseq 1 (asking for a binding) was never answered: not quiet yet
    assert m.observe_rx(parse_rx_response(rx(200, "old", 1))) is False and m.unreg_done
    m.retiring = False  # the new pjsua account exists
    late = m.observe_tx(parse_tx_request(tx("<sip:127.0.20.3:5060;lr>", call_id="old", cseq=4)), route)
    assert late.kind == "stale-client"  # says nothing about the current route
    fresh = m.observe_tx(parse_tx_request(tx(f"<{P}>", call_id="new", cseq=1)), route)
    assert fresh.kind == "register" and fresh.in_sync is True


def test_a_recreate_waits_for_a_drifted_register_still_in_its_challenge():
    """The flake this fixes: a drifted REGISTER was challenged while its account was re-created; its answer to the
    challenge (asking for a binding, via E) went out after the un-REGISTER was answered and reached R after the new
    client's REGISTER through P."""
    m = RouteMeter([P], "udp")
    route = RouteStatus(mode="account", desired=[P])
    m.observe_tx(parse_tx_request(tx("<sip:127.0.20.3:5060;lr>", dest="127.0.20.3:5060", call_id="old", cseq=7)), route)
    assert not m.observe_rx(parse_rx_response(rx(401, "old", 7)))  # challenged: still waiting
    m.retire()
    m.observe_tx(parse_tx_request(tx(f"<{P}>", call_id="old", cseq=8, expires=0)), route)
    assert m.observe_rx(parse_rx_response(rx(200, "old", 8))) and m.unreg_answered
    assert not m.unreg_done  # cseq 7's challenge may still be answered
    retry = m.observe_tx(parse_tx_request(tx("<sip:127.0.20.3:5060;lr>", dest="127.0.20.3:5060", call_id="old",
                                             cseq=9)), route)
    assert retry.kind == "stale-client" and not m.unreg_done
    m.observe_rx(parse_rx_response(rx(200, "old", 9)))
    assert m.unreg_done
    # an answered REGISTER before the retire does not hold a re-create up
    q = RouteMeter([P], "udp")
    q.observe_tx(parse_tx_request(tx(f"<{P}>", call_id="c", cseq=1)), route)
    q.observe_rx(parse_rx_response(rx(200, "c", 1)))
    q.retire()
    q.observe_tx(parse_tx_request(tx(f"<{P}>", call_id="c", cseq=2, expires=0)), route)
    assert q.observe_rx(parse_rx_response(rx(200, "c", 2))) and q.unreg_done


def test_an_account_is_registering_until_its_register_has_a_final_answer():
    """What a removed account waits for (.leaving): pjsua sends no un-REGISTER while a REGISTER is in flight."""
    m = RouteMeter([P], "udp")
    route = RouteStatus(mode="account", desired=[P])
    assert not m.registering and not m.knows("c")
    m.observe_tx(parse_tx_request(tx(f"<{P}>", call_id="c", cseq=1)), route)
    assert m.registering and m.knows("c") and not m.knows("other")
    assert not m.observe_rx(parse_rx_response(rx(401, "c", 1))) and m.registering  # a challenge: still in flight
    m.observe_tx(parse_tx_request(tx(f"<{P}>", call_id="c", cseq=2)), route)  # answering it
    m.observe_rx(parse_rx_response(rx(200, "c", 2)))
    assert not m.registering
    m.observe_tx(parse_tx_request(tx(f"<{P}>", call_id="c", cseq=3)), route)
    m.settled()  # pjsua's own outcome (a 408 it made: no answer on the wire)
    assert not m.registering
    m.observe_tx(parse_tx_request(tx(f"<{P}>", call_id="c", cseq=4, expires=0)), route)
    assert not m.registering  # an un-REGISTER asks for no binding
    m.observe_tx(parse_tx_request(tx(f"<{P}>", call_id="c", cseq=5)), route)
    m.retire()
    assert not m.registering and m.retired_busy and m.knows("c")  # now the retired client's


def test_aor_key_ignores_display_and_default_port():
    assert aor_key("sip:alice@lab.sipfleet.test") == aor_key("sip:alice@lab.sipfleet.test:5060")
    assert aor_key("sip:alice@lab.sipfleet.test") != aor_key("sip:bob@lab.sipfleet.test")


# ------------------------------------------------------------------------------------------------ registration


def test_registration_state_machine():
    reg, route = RegistrationStatus(state="Registering"), RouteStatus(mode="account", desired=[P])
    ok = regstate.on_reg_state(reg, route, code=200, reason="OK", expiration=60, src="127.0.20.1:5060",
                               service_route=["sip:e;lr"], configured_route=[P], now="T1", expires_at="X1")
    assert ok.registration == {"state": "Registered", "code": 200, "reason": "OK", "expires_seconds": 60,
                               "registered_since": "T1", "expires_at": "X1", "failure_reason": None}
    assert ok.route == {"service_route": ["sip:e;lr"], "response_from": "127.0.20.1:5060", "desired": [P, "sip:e;lr"]}
    assert not ok.failed
    reg = reg.model_copy(update=ok.registration)
    route = route.model_copy(update=ok.route)
    refresh = regstate.on_reg_state(reg, route, code=200, reason="OK", expiration=60, src="127.0.20.1:5060",
                                    service_route=["sip:e;lr"], configured_route=[P], now="T2", expires_at="X1")
    assert refresh.registration is None and refresh.route is None  # the same grant changes nothing
    moved = regstate.on_reg_state(reg, route, code=200, reason="OK", expiration=60, src="127.0.20.1:5060",
                                  service_route=["sip:e;lr"], configured_route=[P], now="T2", expires_at="X2")
    assert moved.registration["expires_at"] == "X2" and moved.registration["registered_since"] == "T1"
    longer = regstate.on_reg_state(reg, route, code=200, reason="OK", expiration=120, src="127.0.20.1:5060",
                                   service_route=["sip:e;lr"], configured_route=[P], now="T3")
    assert longer.registration["registered_since"] == "T1"
    bad = regstate.on_reg_state(reg, route, code=403, reason="Forbidden", expiration=0, src="127.0.20.1:5060",
                                service_route=[], configured_route=[P], now="T4")
    assert bad.failed and bad.registration["state"] == "Failed" and bad.registration["last_failure"] == "T4"
    assert bad.registration["expires_at"] is None
    gone = regstate.on_reg_state(reg, route, code=200, reason="OK", expiration=0, src="", service_route=[],
                                 configured_route=[P], now="T5")
    assert gone.registration["state"] == "Unregistered" and not gone.failed
    # the same 2xx answering a REGISTER that asked for a binding: the registrar granted none - a failure to retry
    none = regstate.on_reg_state(reg, route, code=200, reason="OK", expiration=0, src="127.0.20.1:5060",
                                 service_route=[], configured_route=[P], now="T6", asked_binding=True)
    assert none.failed and none.registration["state"] == "Failed"
    assert none.registration["failure_reason"] == reasons.REGISTRAR_GRANTED_NO_BINDING
    assert none.registration["last_failure"] == "T6" and "no binding" in none.registration["reason"]


def test_an_answer_cut_at_pjsips_udp_buffer_is_no_binding_whatever_pjsua_made_of_it():
    reg, route = RegistrationStatus(state="Registered", code=200, expires_seconds=60), RouteStatus(mode="account")
    cut = "the registrar's 200 to REGISTER (...) was cut"
    # pjsua reports the requested 300 s (the Expires was cut off) and no Service-Route: neither is reported
    out = regstate.on_reg_state(reg, route, code=200, reason="OK", expiration=300, src="10.0.0.4:5060",
                                service_route=[], configured_route=[P], now="T1", expires_at="X1",
                                asked_binding=True, truncated=cut)
    assert out.failed and out.registration["state"] == "Failed" and out.registration["code"] == 200
    assert out.registration["failure_reason"] == reasons.REGISTRAR_RESPONSE_TRUNCATED
    assert out.registration["expires_at"] is None and out.registration["expires_seconds"] is None
    assert out.registration["reason"] == f"OK: {cut}" and out.registration["last_failure"] == "T1"
    assert out.route == {"response_from": "10.0.0.4:5060"}  # not the Service-Route pjsua thinks it got
    # a cut failure answer keeps its code, with the cut as its failure reason
    busy = regstate.on_reg_state(reg, route, code=503, reason="Service Unavailable", expiration=0, src="",
                                 service_route=[], configured_route=[P], now="T2", truncated=cut)
    assert busy.failed and busy.registration["code"] == 503
    assert busy.registration["failure_reason"] == reasons.REGISTRAR_RESPONSE_TRUNCATED
    # a cut 2xx to the agent's own un-REGISTER still ends the binding
    gone = regstate.on_reg_state(reg, route, code=200, reason="OK", expiration=0, src="", service_route=[],
                                 configured_route=[P], now="T3", truncated=cut)
    assert gone.registration["state"] == "Unregistered" and not gone.failed


# ------------------------------------------------------------------------------------------------ repair


def test_repair_records_and_self_heal_spacing():
    rec = repair.start("operator", "tok", in_sync=False, last_drift_at="D", now="S")
    assert rec.drift_seen_at == "D" and rec.result == "in-progress" and rec.method == "recreate-account"
    assert repair.start("user", None, in_sync=True, last_drift_at="D", now="S").drift_seen_at is None
    done, elapsed = repair.finish(rec, True, started_mono=10.0, drift_mono=9.0, now_mono=10.25, now="C")
    assert done.result == "repaired" and done.duration_ms == 1250.0 and elapsed == 250.0 and done.completed_at == "C"
    failed, _ = repair.finish(repair.start("user", None, True, None, "S"), False, started_mono=1.0, drift_mono=None,
                              now_mono=2.0, now="C")
    assert failed.result == "failed" and failed.duration_ms == 1000.0


def test_self_heal_gate_acts_at_once_then_backs_off():
    gate = repair.SelfHealGate(burst=3, window_s=60.0, base_s=1.0, cap_s=8.0)
    # the first drifts of an account are healed at once (no spacing: the first drifted REGISTER is acted on)
    assert [gate.delay(100.0), gate.delay(100.1), gate.delay(100.2)] == [0.0, 0.0, 0.0]
    # a route that keeps drifting: each further heal waits longer (1, 2, 4 s after the previous one), capped
    assert gate.delay(100.3) == pytest.approx(0.9)  # 100.2 + 1
    assert gate.delay(100.4) == pytest.approx(2.8)  # 101.2 + 2
    assert gate.delay(100.5) == pytest.approx(6.7)  # 103.2 + 4
    assert gate.delay(100.6) == pytest.approx(14.6)  # 107.2 + 8 (cap)
    assert gate.delay(100.7) == pytest.approx(22.5)  # 115.2 + 8 (cap)
    # quiet for a window after the last heal: at once again
    assert gate.delay(190.0) == 0.0 and gate.delay(190.1) == 0.0
    # never a tight loop: a route that drifts again 0.6 s after every heal (as Repairs does: one heal scheduled at
    # a time) is re-created a handful of times per minute, not 100 times
    gate = repair.SelfHealGate()
    starts, pending = [], None
    for i in range(1000):
        now = 1000.0 + i * 0.6
        if pending is not None and pending > now:
            continue
        pending = now + gate.delay(now)
        starts.append(pending)
    per_minute = max(sum(1 for t in starts if m <= t < m + 60) for m in range(1000, 1600, 10))
    assert 3 <= per_minute <= repair.SELF_HEAL_BURST + 6
    assert len(starts) <= repair.SELF_HEAL_BURST + 6 + 600 / repair.SELF_HEAL_BACKOFF_CAP_S


# ------------------------------------------------------------------------------------------------ assignment plan


def resolved(name: str, **kw) -> ResolvedAccount:
    spec = AgentAccount.model_validate({"name": name, "aor": f"sip:{name}@lab.test", "registrar": "sip:127.0.0.2",
                                        "route": [P], "credentials": {"secretName": "s"}, **kw})
    return ResolvedAccount(spec, Secretish(name, "pw"))


def test_assignment_plan():
    a, b, c = resolved("a"), resolved("b"), resolved("c", repairToken="t1", reregisterToken="r1")
    first = assignplan.plan({}, [a, c], first=True)
    assert [(x.kind, x.key[1], x.ack_tokens) for x in first] == [("create", "a", True), ("create", "c", True)]
    hosted = {a.key: assignplan.Hosted(a.recreate_key()), c.key: assignplan.Hosted(c.recreate_key(), "t1", "r1")}
    a2 = resolved("a", incomingCalls={"policy": "ring"})  # a policy: no re-REGISTER
    c2 = resolved("c", repairToken="t2", reregisterToken="r2")
    steps = assignplan.plan(hosted, [a2, b, c2], first=False)
    assert [(x.kind, x.key[1], x.token) for x in steps] == [
        ("update", "a", None), ("create", "b", None), ("update", "c", None), ("repair", "c", "t2"),
        ("reregister", "c", "r2")]
    a3 = resolved("a", route=["sip:127.0.20.3:5060;lr"])
    assert [(x.kind, x.key[1]) for x in assignplan.plan(hosted, [a3], first=False)] == [("remove", "c"), ("recreate", "a")]
    pending = {c.key: assignplan.Hosted(c.recreate_key(), None, "r1", pending_tokens=("t1",))}
    assert [x.kind for x in assignplan.plan(pending, [c], first=False)] == ["update"]


# ------------------------------------------------------------------------------------------------ metrics


def test_pod_metrics_sum_workers_and_keep_counters_of_ended_workers():
    def fam(reg, sent):
        return [["sipfleet_agent_registrations", "gauge", "g", [["sipfleet_agent_registrations", {"state": "Registered"}, reg]]],
                ["sipfleet_agent_registers_sent", "counter", "c", [["sipfleet_agent_registers_sent_total", {}, sent]]]]

    live = [fam(8, 100), fam(3, 10)]
    m = WorkerMetrics(lambda: live)
    t = m.totals()
    assert t[("sipfleet_agent_registrations", "sipfleet_agent_registrations", (("state", "Registered"),))] == 11
    assert t[("sipfleet_agent_registers_sent", "sipfleet_agent_registers_sent_total", ())] == 110
    m.retire(live.pop())  # a worker ended: its gauge goes, its counter stays
    live.append(fam(3, 2))  # its successor starts from zero
    t = m.totals()
    assert t[("sipfleet_agent_registrations", "sipfleet_agent_registrations", (("state", "Registered"),))] == 11
    assert t[("sipfleet_agent_registers_sent", "sipfleet_agent_registers_sent_total", ())] == 112
    from prometheus_client import CollectorRegistry, generate_latest

    r = CollectorRegistry(auto_describe=False)
    r.register(m)
    text = generate_latest(r).decode()
    assert 'sipfleet_agent_registrations{state="Registered"} 11.0' in text
    assert "sipfleet_agent_registers_sent_total 112.0" in text


def test_an_idle_event_loop_waits_until_its_next_timer_and_a_busy_one_polls():
    from sipfleet_agent.worker.eventloop import EventLoop, Wait

    now = [100.0]
    loop = EventLoop(clock=lambda: now[0])
    assert loop.poll_timeout(0.01, 0.1) == 0.1  # nothing due: the long wait
    t = loop.call_later(0.03, lambda: None)
    assert abs(loop.poll_timeout(0.01, 0.1) - 0.03) < 1e-9  # until the timer
    loop.call_later(5.0, lambda: None)
    assert abs(loop.poll_timeout(0.01, 0.1) - 0.03) < 1e-9
    loop.cancel(t)
    assert loop.poll_timeout(0.01, 0.1) == 0.1  # a cancelled timer does not shorten it
    loop.call_later(0.001, lambda: None)
    assert loop.poll_timeout(0.01, 0.1) == 0.01  # never below the short poll
    fut = loop.submit(lambda: 1)
    assert loop.poll_timeout(0.01, 0.1) == 0.01  # queued work
    loop.drain()
    assert fut.result() == 1
    now[0] += 1.0
    loop.run_timers()

    def task():
        yield Wait(timeout=5.0, pred=lambda: False)

    loop.spawn(task())
    assert loop.poll_timeout(0.01, 0.1) == 0.01  # a task waiting on a condition is polled
