"""Failure classes of a REGISTER against the real agent (standalone, pjsua2 2.15.1) and the lab's scripted
registrar S behind P: what the agent's retry policy does, checked on the wire (S's log of every REGISTER it got,
with what it answered) and in the status. Issue 12 item 1; docs/registration-policy.md has the table.

Small intervals (seconds) keep each test short; nothing here asserts how fast anything is, only that a REGISTER
does not come before the policy's wait (and does come after it, with a generous margin).
"""

from __future__ import annotations

import time
from datetime import datetime

import pytest

from tests.fixtures.agent import registers

pytestmark = pytest.mark.lab

SLACK_S = 1.5  # an attempt due at t is on the wire by t + this (event loop tick, pjsip, S's log)


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _attempts(lab, user: str, since: float) -> list:
    """S's records of this user's REGISTERs that start an attempt (a challenge's answer belongs to its attempt;
    retransmissions are not attempts)."""
    out = []
    for r in lab.scripted.requests(since=since):
        if f":{user}@" not in r.from_uri or r.answer.startswith("retransmit") or r.expires == "0":
            continue
        if r.has_auth and out and out[-1][-1].call_id == r.call_id:
            out[-1].append(r)
        else:
            out.append([r])
    return out


def _intervals(attempts: list) -> list[float]:
    starts = [a[0].at for a in attempts]
    return [round(b - a, 3) for a, b in zip(starts, starts[1:])]


def _account(agent_account, lab, prefix: str, **registration):
    acc, user = agent_account(prefix, registrar=lab.scripted.uri())
    acc["registration"] = {"retryIntervalSeconds": 5, "firstRetryIntervalSeconds": 1, "jitterSeconds": 0,
                           **registration}
    return acc, user


def test_503_with_retry_after_is_respected(clean_lab, agent_factory, agent_account):
    # only fields the agent had before issue 12: with pjsua's timer the next REGISTER came 1-2 s later
    lab = clean_lab
    lab.scripted.script("503 retry-after=8 count=2", "200 expires=300", scope="aor")
    acc, user = _account(agent_account, lab, "ra")
    t0 = time.time()
    agent = agent_factory([acc], expires=None)
    st = agent.wait_status(user, lambda s: s["registration"].get("nextAttemptReason") == "RetryAfter", 20, "RetryAfter")
    reg = st["registration"]
    assert reg["state"] == "Failed" and reg["code"] == 503 and reg["failures"] == 1
    first = _attempts(lab, user, t0)[0][0]
    assert 8.0 - 0.002 <= _epoch(reg["nextAttemptAt"]) - first.at <= 8.0 + SLACK_S, (reg, first.at)
    agent.wait_registered(user, timeout=40)
    attempts = _attempts(lab, user, t0)
    assert [a[-1].answer for a in attempts][:3] == ["503", "503", "200"], [(a[0].at, a[-1].answer) for a in attempts]
    gaps = _intervals(attempts[:3])
    print(f"\nwire 503 Retry-After 8: answers {[a[-1].answer for a in attempts]}, intervals {gaps} s")
    assert all(8.0 <= g <= 8.0 + SLACK_S for g in gaps), gaps
    reg = agent.latest(user)["registration"]
    assert "nextAttemptAt" not in reg and "failures" not in reg and "failureReason" not in reg
    assert agent.stop() == 0


def test_403_is_auth_failed_and_not_retried_before_auth_failure_retry_seconds(clean_lab, agent_factory, agent_account):
    lab = clean_lab
    lab.scripted.script("403 auth=401", scope="aor")  # challenges, then forbids even the right credentials
    acc, user = _account(agent_account, lab, "af", retryIntervalSeconds=1, authFailureRetrySeconds=6)
    t0 = time.time()
    agent = agent_factory([acc], expires=None)
    st = agent.wait_status(user, lambda s: s["registration"].get("failureReason") == "AuthFailed", 20, "AuthFailed")
    reg = st["registration"]
    assert reg["state"] == "Failed" and reg["code"] == 403 and reg["nextAttemptReason"] == "AuthFailed"
    time.sleep(9.5)
    attempts = _attempts(lab, user, t0)
    # each attempt: a REGISTER without credentials (401), its answer to the challenge (403); then 6 s of nothing
    assert [[r.answer for r in a] for a in attempts] == [["401", "403"], ["401", "403"]], \
        [[(r.at, r.answer) for r in a] for a in attempts]
    gap = attempts[1][0].at - attempts[0][-1].at
    print(f"\nwire 403 (authFailureRetrySeconds 6): {[[r.answer for r in a] for a in attempts]}, "
          f"403 -> next REGISTER {gap:.3f} s")
    assert 6.0 <= gap <= 6.0 + SLACK_S, gap
    assert agent.latest(user)["registration"]["failureReason"] == "AuthFailed"
    assert agent.stop() == 0


def test_a_wrong_password_is_auth_failed_after_answering_a_fresh_challenge(clean_lab, agent_factory, agent_account,
                                                                           tmp_path):
    lab = clean_lab
    lab.scripted.script("200 auth=401", scope="aor")
    acc, user = _account(agent_account, lab, "wp", retryIntervalSeconds=1, authFailureRetrySeconds=30)
    bad = tmp_path / f"{user}.bad"
    bad.write_text("not-the-password")
    acc["credentials"]["passwordFile"] = str(bad)
    t0 = time.time()
    agent = agent_factory([acc], expires=None)
    st = agent.wait_status(user, lambda s: s["registration"].get("failureReason") == "AuthFailed", 20, "AuthFailed")
    assert st["registration"]["code"] == 401
    next_at = _epoch(st["registration"]["nextAttemptAt"])
    time.sleep(4)
    attempts = _attempts(lab, user, t0)
    # one attempt: the challenge, then pjsip answers each fresh challenge (S sends a new nonce every time) up to
    # its own limit; then nothing until authFailureRetrySeconds
    assert len(attempts) == 1, [[(r.at, r.has_auth, r.answer) for r in a] for a in attempts]
    seen = [(r.has_auth, r.answer) for r in attempts[0]]
    print(f"\nwire wrong password: one attempt {seen}; next attempt scheduled "
          f"{next_at - attempts[0][-1].at:.3f} s after the last 401 (authFailureRetrySeconds 30)")
    assert seen[0] == (False, "401") and 2 <= len(seen) <= 5 and all(x == (True, "401") for x in seen[1:]), seen
    assert 30.0 - 0.002 <= next_at - attempts[0][-1].at <= 30.0 + SLACK_S  # nextAttemptAt: milliseconds
    assert agent.stop() == 0


def test_back_off_intervals_grow_up_to_the_ceiling(clean_lab, agent_factory, agent_account):
    lab = clean_lab
    lab.scripted.script("500", scope="aor")  # no Retry-After
    acc, user = _account(agent_account, lab, "bo", retryIntervalSeconds=1, backoffMultiplier=2,
                         maxRetryIntervalSeconds=4, backoffJitter="none")
    t0 = time.time()
    agent = agent_factory([acc], expires=None)
    agent.wait_status(user, lambda s: (s["registration"].get("failures") or 0) >= 5, 30, "5 failures")
    attempts = _attempts(lab, user, t0)
    gaps = _intervals(attempts)[:4]
    print(f"\nwire 500 back-off (1 s x2, cap 4, no jitter): intervals {_intervals(attempts)} s")
    assert len(gaps) == 4 and all(a[-1].answer == "500" for a in attempts), [(a[0].at, a[-1].answer) for a in attempts]
    for got, want in zip(gaps, [1, 2, 4, 4]):  # 1 s doubling, capped at 4 s
        assert want <= got <= want + SLACK_S, gaps
    reg = agent.latest(user)["registration"]
    assert reg["nextAttemptReason"] == "Backoff" and "failureReason" not in reg
    assert agent.stop() == 0


@pytest.mark.parametrize("code", [404, 603])
def test_404_and_6xx_are_permanent_failures_retried_slowly(clean_lab, agent_factory, agent_account, code):
    lab = clean_lab
    lab.scripted.script(str(code), scope="aor")
    acc, user = _account(agent_account, lab, f"pf{code}", retryIntervalSeconds=1, permanentFailureRetrySeconds=5)
    t0 = time.time()
    agent = agent_factory([acc], expires=None)
    st = agent.wait_status(user, lambda s: s["registration"].get("failureReason") == "PermanentFailure", 20,
                           "PermanentFailure")
    assert st["registration"]["code"] == code and st["registration"]["nextAttemptReason"] == "PermanentFailure"
    time.sleep(7.5)
    attempts = _attempts(lab, user, t0)
    assert [a[-1].answer for a in attempts] == [str(code), str(code)], [(a[0].at, a[-1].answer) for a in attempts]
    print(f"\nwire {code} (permanentFailureRetrySeconds 5): intervals {_intervals(attempts)} s")
    assert 5.0 <= _intervals(attempts)[0] <= 5.0 + SLACK_S
    assert agent.stop() == 0


def test_a_302_is_followed_to_its_contact(clean_lab, agent_factory, agent_account):
    lab = clean_lab
    lab.scripted.script("302 contact=R")
    acc, user = _account(agent_account, lab, "rd")
    t0 = time.time()
    agent = agent_factory([acc], expires=None)
    st = agent.wait_registered(user, timeout=20)
    assert st["registration"]["redirectedTo"] == lab.registrar_uri()
    at_s = _attempts(lab, user, t0)
    assert [a[-1].answer for a in at_s] == ["302"]
    at_r = [r for r in registers(lab, user, node="R", since=t0) if r.expires != "0"]
    print(f"\nwire 302 contact=R: S answered {[a[-1].answer for a in at_s]}; first REGISTER at R "
          f"{at_r[0].at - at_s[0][-1].at:.3f} s after the 302" if at_r else "")
    assert at_r and at_r[0].ruri == lab.registrar_uri() and at_r[0].at >= at_s[0][0].at
    assert all(r.src.startswith(lab.ip("P") + ":") for r in at_r)  # still through the configured route
    assert st["route"]["inSync"] is True
    assert agent.stop() == 0


def test_a_redirect_loop_is_refused_and_backs_off(clean_lab, agent_factory, agent_account):
    lab = clean_lab
    lab.scripted.script("302 contact=self")
    acc, user = _account(agent_account, lab, "rl", retryIntervalSeconds=2, backoffJitter="none")
    t0 = time.time()
    agent = agent_factory([acc], expires=None)
    st = agent.wait_status(user, lambda s: s["registration"].get("failureReason") == "RedirectRefused", 20,
                           "RedirectRefused")
    assert st["registration"]["code"] == 302 and st["registration"]["nextAttemptReason"] == "Backoff"
    time.sleep(5)
    attempts = _attempts(lab, user, t0)
    assert 2 <= len(attempts) <= 3 and all(a[-1].answer == "302" for a in attempts)
    gaps = _intervals(attempts)
    print(f"\nwire 302 loop (contact=self): {[a[-1].answer for a in attempts]}, intervals {gaps} s")
    assert 2.0 <= gaps[0] <= 2.0 + SLACK_S, gaps
    assert registers(lab, user, node="R", since=t0) == []
    assert agent.stop() == 0


def test_redirect_policy_refuse_does_not_follow(clean_lab, agent_factory, agent_account):
    lab = clean_lab
    lab.scripted.script("302 contact=R")
    acc, user = _account(agent_account, lab, "rr", redirectPolicy="refuse")
    t0 = time.time()
    agent = agent_factory([acc], expires=None)
    st = agent.wait_status(user, lambda s: s["registration"].get("failureReason") == "RedirectRefused", 20,
                           "RedirectRefused")
    assert st["registration"]["state"] == "Failed" and "redirectedTo" not in st["registration"]
    time.sleep(2)
    assert [a[-1].answer for a in _attempts(lab, user, t0)] == ["302"]
    assert registers(lab, user, node="R", since=t0) == []
    assert agent.stop() == 0


def test_the_first_retry_after_a_lost_tcp_connection_waits_first_retry_interval(clean_lab, agent_factory,
                                                                                 agent_account):
    # pjsua's timer spread the first retry over 3 +- 2 s (it could come after 1 s); the agent's: 3 to 5 s
    lab = clean_lab
    acc, user = agent_account("tl", transport="tcp")
    acc["registration"] = {"retryIntervalSeconds": 5, "firstRetryIntervalSeconds": 3, "jitterSeconds": 2}
    agent = agent_factory([acc], expires=None)
    agent.wait_registered(user)
    t_down = time.time()
    lab.restart_node("P")  # the TCP connection to P ends; P is back before the first retry is due
    t_up = time.time()
    st = agent.wait_status(user, lambda s: s["registration"].get("nextAttemptReason") == "TransportLost", 10,
                           "TransportLost")
    assert 3.0 - 0.002 <= _epoch(st["registration"]["nextAttemptAt"]) - t_down <= 5.0 + (t_up - t_down) + SLACK_S
    fresh = lab.wait_wire(lambda r: f":{user}@" in r.from_uri and r.expires != "0", node="P", method="REGISTER",
                          since=t_down, timeout=20)
    print(f"\nwire TCP loss: P restarted in {t_up - t_down:.3f} s; first REGISTER at P {fresh.at - t_down:.3f} s "
          f"after the restart began (firstRetryIntervalSeconds 3, jitterSeconds 2)")
    assert fresh.at >= t_down + 3.0 and fresh.at >= _epoch(st["registration"]["nextAttemptAt"]) - 0.01
    assert fresh.at <= t_up + 5.0 + SLACK_S
    st = agent.wait_status(user, lambda s: s["registration"]["state"] == "Registered"
                           and "nextAttemptAt" not in s["registration"], 20, "Registered again, nothing scheduled")
    assert st["route"]["firstHop"] == f"tcp:{lab.hostport('P')}" and st["route"]["inSync"] is True
    assert registers(lab, user, node="E", since=t_down) == []
    assert agent.stop() == 0
