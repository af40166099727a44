"""The dead-flow socket options (pure): the kernel closes a TCP/TLS connection that acknowledges nothing for the
bound, within pjsip's four options per transport."""

from __future__ import annotations

import socket

from sipfleet_agent.worker import deadflow


def test_a_bound_becomes_keepalive_probes_and_a_user_timeout():
    opts = dict(((level, name), value) for level, name, value in deadflow.socket_options(30))
    assert opts == {(socket.SOL_SOCKET, socket.SO_KEEPALIVE): 1, (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE): 10,
                    (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL): 5, (socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT): 30000}
    assert len(deadflow.socket_options(3600)) <= deadflow.MAX_OPTIONS
    short = dict(((lv, n), v) for lv, n, v in deadflow.socket_options(2))
    assert short[(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)] == 1 and short[(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL)] == 1
    assert deadflow.socket_options(0) == []


def test_the_kernel_takes_them():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        for level, name, value in deadflow.socket_options(12):
            s.setsockopt(level, name, value)
            assert s.getsockopt(level, name) == value


# ---------------------------------------------------------------------------------------------- UDP probes

from sipfleet_agent.worker import probeplan as pp  # noqa: E402


def test_udp_probes_every_third_of_the_bound_and_call_the_path_dead_after_it():
    st, sent = pp.ProbeState(), []
    dead_at = None
    for t in range(0, 40):  # the worker looks every second (probeplan.interval(6) == 2 s in production)
        d = pp.tick(st, now=float(t), bound=6, can_probe=True)
        st = d.state
        if d.send:
            sent.append(t)
        if d.dead:
            dead_at = t
            break
    assert sent == [0, 2, 4] and dead_at == 6  # nothing answered: dead a bound after the first probe
    # then it rests while the re-REGISTER it caused is in flight (no second verdict), and starts over after
    for t in (7.0, 20.0, 6 + pp.HOLD_S - 0.1):
        d = pp.tick(st, now=t, bound=6, can_probe=True)
        assert not d.send and not d.dead
        st = d.state
    again = pp.tick(st, now=6 + pp.HOLD_S, bound=6, can_probe=True)
    assert again.send and again.state.hold_until is None


def test_any_answer_keeps_the_path_alive_and_nothing_is_watched_without_a_registered_account():
    st = pp.tick(pp.ProbeState(), now=0.0, bound=6, can_probe=True).state
    st = pp.answered(st)
    for t in (2.0, 4.0, 6.0, 8.0):
        d = pp.tick(st, now=t, bound=6, can_probe=True)
        assert not d.dead
        st = pp.answered(d.state)
    st = pp.tick(st, now=10.0, bound=6, can_probe=True).state  # unanswered from 10 s on
    assert not pp.tick(st, now=15.9, bound=6, can_probe=True).dead and pp.tick(st, now=16.0, bound=6,
                                                                                 can_probe=True).dead
    idle = pp.tick(st, now=17.0, bound=6, can_probe=False)
    assert idle == pp.Decision(pp.ProbeState(), False, False)
    assert pp.interval(6) == 2 and pp.interval(1) == 1


def test_a_flow_timer_is_read_from_a_2xx_and_bounds_the_flow():
    ok = "SIP/2.0 200 OK\r\nRequire: outbound\r\nFlow-Timer: 25\r\nContent-Length: 0\r\n\r\n"
    assert pp.flow_timer(ok) == 25
    assert pp.flow_timer(ok.replace("Flow-Timer", "flow-timer")) == 25
    for none in ("", "SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", ok.replace("25", "soon"),
                 ok.replace("25", "0"), ok.replace("25", "-5")):
        assert pp.flow_timer(none) is None, none
    # RFC 5626: a ping at least every Flow-Timer seconds, 10 s for its pong
    assert pp.flow_bound(25) == 35.0 and pp.interval(pp.flow_bound(25)) <= 25
    assert pp.interval(pp.flow_bound(5)) <= 5


def test_the_outbound_instance_is_stable_per_account():
    from sipfleet.api.models import AgentAccount
    from sipfleet_agent.worker.accounts import instance_id

    def acc(name, ns="a"):
        return AgentAccount.model_validate({"name": name, "namespace": ns, "aor": "sip:x@y.org", "registrar": "sip:y.org",
                                            "routeMode": "account", "credentials": {"secretName": "s"}})

    assert instance_id(acc("x")) == instance_id(acc("x"))
    assert instance_id(acc("x")).startswith("<urn:uuid:") and instance_id(acc("x")).endswith(">")
    assert len({instance_id(acc("x")), instance_id(acc("y")), instance_id(acc("x", "b"))}) == 3
