"""The REGISTER budget: the operator's split (sipfleet.api.budget, State's counts per registrar, the assignment's
share) and the agent's pacing plan (supervisor/paceplan.py). Pure: time is passed in."""

from __future__ import annotations

import math

import pytest

from sipfleet.api import models as m
from sipfleet.api.budget import per_account_rate, registrar_key
from sipfleet_agent.supervisor.paceplan import INFLIGHT_MAX_S, SUSPECT_S, PacePlan

R = "r.lab:5060"
A, B, C, D = ("ns", "a"), ("ns", "b"), ("ns", "c"), ("ns", "d")


# ------------------------------------------------------------------------------------------ the operator's split


@pytest.mark.parametrize("n", [1, 2, 3, 7, 16, 100, 320, 999, 1000, 1001, 4096, 100_000])
def test_the_fleet_never_gets_more_than_the_limit_and_at_least_84_percent(n):
    rate = per_account_rate(200, n)
    assert rate * n <= 200 + 1e-9
    assert rate * n >= 200 * 2 ** -0.25 - 1e-9


def test_a_share_changes_only_at_quarter_octave_steps():
    shares = [per_account_rate(200, n) for n in range(1, 5001)]
    changes = sum(1 for x, y in zip(shares, shares[1:]) if x != y)
    assert changes <= math.ceil(4 * math.log2(5000)) + 1  # O(log N) rewrites of the assignments, not N
    assert all(math.isclose(math.log2(s) * 4, round(math.log2(s) * 4), abs_tol=1e-9) for s in set(shares))


def test_no_limit_or_no_accounts_is_no_budget():
    assert per_account_rate(0, 10) is None
    assert per_account_rate(200, 0) is None


def test_registrar_key_is_host_and_port_lower_case():
    assert registrar_key("sip:Registrar.Example.com:5060;transport=tcp") == "registrar.example.com:5060"
    assert registrar_key("sips:10.0.0.1") == "10.0.0.1"
    assert registrar_key("sip:svc@[::1]:5070?x=y") == "[::1]:5070"


def _body(name: str, registrar: str) -> dict:
    return {"metadata": {"namespace": "ns", "name": name, "uid": name, "resourceVersion": "1"},
            "spec": {"registrar": registrar}}


def test_state_counts_accounts_per_registrar_and_gives_each_its_share():
    from sipfleet_operator.config import Settings
    from sipfleet_operator.state import State

    st = State(Settings(register_rate_limit=10), client=None)  # type: ignore[arg-type]
    for i in range(4):
        st.remember(_body(f"a{i}", "sip:R.lab:5060"))
    st.remember(_body("b0", "sip:other.lab"))
    st.remember(_body("a0", "sip:r.lab:5060;transport=tcp"))  # a new version, same registrar: counted once
    assert st.per_registrar == {"r.lab:5060": 4, "other.lab": 1}
    assert st.register_rates() == {"r.lab:5060": per_account_rate(10, 4), "other.lab": per_account_rate(10, 1)}
    newer, stale = _body("a3", "sip:r.lab:5060"), _body("a3", "sip:stale.lab")
    newer["metadata"]["resourceVersion"], stale["metadata"]["resourceVersion"] = "2", "0"
    st.remember(newer)
    st.remember(stale)  # a late watch event of an older version: neither kept nor counted
    assert st.per_registrar == {"r.lab:5060": 4, "other.lab": 1}
    st.remember(_body("a1", "sip:other.lab"))  # moved to another registrar
    st.forget("ns", "a2")
    assert st.per_registrar == {"r.lab:5060": 2, "other.lab": 2}
    assert State(Settings(), client=None).register_rates() == {}  # type: ignore[arg-type]


def test_the_assignment_carries_each_accounts_share():
    from sipfleet_operator import builders as b
    from sipfleet_operator import placement as pl

    spec = m.SipAccountSpec.model_validate({"aor": "sip:alice@lab", "registrar": "sip:R.lab:5060",
                                            "credentials": {"secretName": "s"}})
    h = b.HostedAccount(name="alice", namespace="ns", uid="u", generation=1, spec=spec)
    key = pl.GroupKey.for_spec("ns", "alice", spec)
    (agent,) = pl.place({}, key, "alice", pl.worker_key(spec)).fleet.values()
    got = b.build_assignment(agent, [h], rates={"r.lab:5060": 0.25})
    assert got.accounts[0].register_rate == 0.25
    assert b.build_assignment(agent, [h]).accounts[0].register_rate is None


# ------------------------------------------------------------------------------------------ the agent's pacing


def plan(rate_each: float = 1.0, keys=(A, B, C, D), probe_s: float = 5.0) -> PacePlan:
    p = PacePlan(probe_s)
    p.configure({k: (R, rate_each) for k in keys})
    return p


def test_a_lane_lets_go_at_the_sum_of_its_accounts_rates_without_a_burst():
    p = plan(0.5)  # 4 accounts x 0.5/s: 2 REGISTERs/s
    for k in (A, B, C, D):
        p.want(k, 0.0)
    assert p.due(0.0) == [A]  # one token deep: one now
    assert p.due(0.2) == []
    assert p.next_at(0.2) == pytest.approx(0.5)
    assert p.due(0.5) == [B]
    for k in (A, B):
        p.answered(k, 200, 0.6)
    assert p.due(1.0) == [C]
    assert p.due(10.0) == [D]  # after a pause: still one at a time, never two at once


def test_in_any_second_a_lane_lets_go_at_most_rate_plus_one():
    keys = [("ns", f"k{i}") for i in range(200)]
    p = plan(0.1, keys)  # 20/s
    for k in keys:
        p.want(k, 0.0)
    went: list[float] = []
    t = 0.0
    while t < 5.0:
        for k in p.due(t):
            went.append(t)
            p.answered(k, 200, t + 0.01)
        t = p.next_at(t) or t + 0.01
    for start in [x / 10 for x in range(0, 40)]:
        assert len([x for x in went if start <= x < start + 1.0]) <= 21


def test_a_path_failure_holds_the_others_behind_one_probe_per_interval():
    p = plan(10.0)
    p.want(A, 0.0)
    assert p.due(0.0) == [A]
    p.answered(A, 408, 8.0)  # the proxy's 408: the registrar does not answer
    for k in (B, C, A):
        p.want(k, 8.0)
    assert p.due(8.5) == []
    assert p.next_at(8.5) == pytest.approx(13.0)
    assert p.due(13.0) == [B]  # the probe: the oldest waiting
    assert p.due(14.0) == []
    assert p.due(18.0) == [C]  # the next probe comes on time, though B's is unanswered
    p.answered(B, 200, 18.1)  # answered: open again, the rest follow at the rate
    assert p.due(18.2) == [A]


def test_any_answer_that_is_not_a_path_failure_opens_the_lane():
    for code in (200, 401, 403, 404, 423, 480):
        p = plan()
        p.want(A, 0.0)
        p.due(0.0)
        p.answered(A, 503, 1.0)
        p.want(B, 1.0)
        assert p.due(2.0) == []
        p.answered(C, code, 2.0)  # e.g. pjsua's own refresh of another account
        assert p.due(2.0) == [B], code


def test_retry_after_pushes_the_next_probe_back():
    p = plan()
    p.want(A, 0.0)
    p.due(0.0)
    p.answered(A, 503, 1.0, retry_after=20)
    p.want(B, 1.0)
    assert p.due(6.0) == []
    assert p.next_at(6.0) == pytest.approx(21.0)
    assert p.due(21.0) == [B]


def test_a_register_unanswered_for_the_suspect_time_closes_the_lane():
    p = plan(0.25)  # 1/s
    for k in (A, B, C):
        p.want(k, 0.0)
    assert p.due(0.0) == [A]
    assert p.next_at(0.5) == pytest.approx(1.0)
    assert p.due(1.0) == [B]
    p.answered(B, 200, 1.05)
    assert p.next_at(1.5) == pytest.approx(SUSPECT_S)  # C could go at 2.0, and A is suspect then
    assert p.due(SUSPECT_S) == []  # A let go at 0 and unanswered: down, the next probe probe_s after A
    assert p.next_at(SUSPECT_S) == pytest.approx(5.0)
    assert p.due(5.0) == [C]


def test_an_answer_that_never_comes_stops_counting():
    p = plan(10.0)
    p.want(A, 0.0)
    p.due(0.0)
    p.due(INFLIGHT_MAX_S + 0.1)
    assert p.lanes[R].inflight == {}


def test_lanes_are_per_registrar_and_a_down_one_holds_only_its_own():
    p = PacePlan(5.0)
    p.configure({A: (R, 1.0), B: (R, 1.0), C: ("other", 1.0)})
    p.want(A, 0.0)
    p.due(0.0)
    p.answered(A, 0, 1.0)
    p.want(B, 1.0)
    p.want(C, 1.0)
    assert p.due(1.0) == [C]


def test_configure_forgets_the_unpaced_and_says_which_were_waiting():
    p = plan()
    for k in (A, B):
        p.want(k, 0.0)
    released = p.configure({A: (R, 1.0)})
    assert released == [B]
    assert not p.paced(B) and p.paced(A)
    assert p.lanes[R].rate == 1.0
    p.forget([A])
    assert p.lanes[R].waiting == {}
    assert p.configure({}) == [] and p.lanes == {}


def test_a_let_go_that_found_nothing_to_send_changes_nothing():
    p = plan()
    p.want(A, 0.0)
    p.due(0.0)
    p.answered(A, None, 0.1)
    assert p.lanes[R].inflight == {} and p.lanes[R].down_since is None


def test_a_challenged_attempt_costs_two_requests_so_the_wire_stays_within_the_rate():
    keys = [("ns", f"k{i}") for i in range(100)]
    p = plan(0.1, keys)  # 10 REGISTER requests/s
    for k in keys:
        p.want(k, 0.0, 2)
    sent: list[float] = []  # each attempt: two requests (the 401 comes back 5 ms later)
    t = 0.0
    while t < 10.0:
        for k in p.due(t):
            sent += [t, t + 0.005]
            p.answered(k, 200, t + 0.01, requests=2)
        t = max(p.next_at(t) or t + 0.01, t + 0.001)
    assert 45 <= len(sent) <= 104  # ~10/s, not 20/s
    for start in [x / 10 for x in range(0, 90)]:
        assert len([x for x in sent if start <= x < start + 1.0]) <= 10 + 2


# ------------------------------------------------------------------------------------------ the worker's side


class _Agent:
    def __init__(self):
        from sipfleet_agent.worker.pacing import PaceClient

        self.accounts: dict = {}
        self.stopping = False
        self.pace = PaceClient(self)
        self.sent: list = []
        self.pace.hook = self.sent.append


class _Acc:
    def __init__(self):
        self.calls = 0

    def setRegistration(self, on: bool) -> None:  # noqa: N802 - pjsua2's name
        self.calls += 1


def _runtime(agent: _Agent, rate: float | None, name: str = "alice"):
    from sipfleet.api.models import AgentAccount
    from sipfleet_agent.config import ResolvedAccount
    from sipfleet_agent.status import AgentRef
    from sipfleet_agent.worker.accounts import AccountRuntime

    spec = AgentAccount.model_validate({"name": name, "aor": f"sip:{name}@lab", "registrar": "sip:r.lab",
                                        "credentials": {"username": name, "passwordFile": "/x"},
                                        "registerRate": rate})
    rt = AccountRuntime(ResolvedAccount(spec, creds=None), AgentRef(name="a"))
    rt.acc = _Acc()
    agent.accounts[rt.key] = rt
    return rt


def test_a_paced_account_asks_once_and_registers_on_go():
    from sipfleet_agent import protocol as p
    from sipfleet_agent.worker.pacing import CREATE

    a = _Agent()
    rt = _runtime(a, 0.5)
    a.pace.send(rt, CREATE)
    a.pace.send(rt)  # asked already: no second Want
    assert a.sent == [p.Want(None, "alice", 2)] and rt.acc.calls == 0  # 2: a challenge expected
    a.pace.go(rt.key)
    assert rt.acc.calls == 1
    a.pace.go(rt.key)  # a Go nobody asked for: nothing sent, and the supervisor hears so
    assert rt.acc.calls == 1 and a.sent[-1] == p.Answered(None, "alice", None, None, 1)


def test_a_retry_that_finds_the_account_registered_again_sends_nothing():
    from sipfleet_agent import protocol as p

    a = _Agent()
    rt = _runtime(a, 0.5)
    a.pace.send(rt)
    rt.status.set_registration(state="Registered")  # e.g. pjsua's own refresh was answered meanwhile
    a.pace.go(rt.key)
    assert rt.acc.calls == 0 and a.sent[-1] == p.Answered(None, "alice", None, None, 1)


def test_an_unpaced_account_registers_at_once_and_tells_nothing():
    a = _Agent()
    rt = _runtime(a, None)
    a.pace.send(rt)
    a.pace.answered(rt, 200)
    assert rt.acc.calls == 1 and a.sent == []
    b = _Agent()
    b.pace.hook = None  # no supervisor to ask (a worker run on its own)
    rt2 = _runtime(b, 0.5)
    b.pace.send(rt2)
    assert rt2.acc.calls == 1


def test_a_recreation_waits_for_its_turn_and_its_new_client_registers_on_add():
    from sipfleet_agent import protocol as p
    from sipfleet_agent.worker.pacing import RECREATE, RETRY

    a = _Agent()
    rt = _runtime(a, 0.5)
    a.pace.send(rt, RETRY)
    turn = a.pace.turn(rt)  # a re-register while a retry waits: the one Want now stands for the re-creation
    wait = next(turn)
    assert a.sent == [p.Want(None, "alice", 2)] and not wait.pred()
    rt.busy = True
    a.pace.go(rt.key)
    assert wait.pred() and rt.acc.calls == 0  # let go: no REGISTER of the old client
    assert a.pace.take_grant(rt) and not a.pace.take_grant(rt)  # once: create_account registers on add
    a.pace.unregistered(rt)
    a.pace.answered(rt, 200)  # not challenged (no Authorization on it): 1, and the un-REGISTER (2 expected)
    assert a.sent[-1] == p.Answered(None, "alice", 200, None, 3)
    a.pace.send(rt, RECREATE)  # the registrar did not challenge: a re-creation is expected to take 2
    assert a.sent[-1] == p.Want(None, "alice", 2)


def test_an_attempt_charged_too_little_is_set_right_by_its_answer():
    p = plan(0.25)  # 1 request/s
    p.want(A, 0.0, 1)
    p.want(B, 0.0, 1)
    assert p.due(0.0) == [A]
    p.answered(A, 200, 0.1, requests=4)  # it took 4 (an un-REGISTER and a REGISTER, each challenged)
    assert p.due(1.0) == [] and p.next_at(1.0) == pytest.approx(4.0)  # the 3 owed are paid first
    assert p.due(4.0) == [B]
