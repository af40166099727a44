"""Hostile registrars against the real agent (standalone, pjsua2 2.15.1) and the lab's scripted registrar S,
checked on the wire (every REGISTER S, P and R received). Issue 13 item 2.

- A 200 with 10 Service-Route URIs (pjsua 2.15.1 writes past an 8-entry array on 9 or more): the worker refuses it
  from its receive log and ends itself before pjsua processes it; the account is quarantined with
  RegistrarResponseRejected, its worker's other accounts register again and stay so, no crash loop.
- A 200 over UDP whose Contact, Expires and Service-Route lie beyond pjsip's 4000-byte receive buffer: pjsua takes
  the cut answer for a binding of the requested expiry; the agent reports RegistrarResponseTruncated instead, backs
  off, and registers for real once the registrar's answers fit. Cut after them: registered with the registrar's
  grant, and the status says the answer was cut.
"""

from __future__ import annotations

import time

import pytest

from tests.fixtures.agent import registers

pytestmark = pytest.mark.lab


def _at_s(lab, user: str, since: float) -> list:
    return [r for r in lab.scripted.requests(since=since) if f":{user}@" in r.from_uri]


def _registered_throughout(agent, users, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for u in users:
            st = agent.latest(u)
            assert st["registration"]["state"] == "Registered", (u, st["registration"], agent.stderr_tail())
        assert agent.proc.poll() is None
        time.sleep(0.25)


def test_ten_service_route_uris_quarantine_the_account_not_its_worker(clean_lab, agent_factory, agent_account):
    lab = clean_lab
    lab.scripted.script("200 sr=10")
    victim_acc, victim = agent_account("srv", registrar=lab.scripted.uri())
    good = [agent_account(f"srg{i}") for i in range(2)]
    t0 = time.time()
    agent = agent_factory([victim_acc] + [a for a, _ in good], expires=5)
    users = [u for _, u in good]

    st = agent.wait_status(victim, lambda s: s["registration"].get("failureReason") == "RegistrarResponseRejected",
                           60, "RegistrarResponseRejected")
    reg = st["registration"]
    assert reg["state"] == "Failed" and "10 Service-Route URIs" in reg["reason"] and "at most 8" in reg["reason"]
    assert "quarantined for 30 s" in reg["reason"]
    t_rejected = time.time()
    for u in users:
        agent.wait_registered(u, timeout=60)
    # the wire: S answered the victim's REGISTER once with the hostile 200 (it came through P), nothing since
    at_s = _at_s(lab, victim, t0)
    assert [r.answer for r in at_s] == ["200"], [(r.at, r.answer) for r in at_s]
    assert at_s[0].src.startswith(lab.ip("P") + ":")
    assert lab.scripted.state()["answers"] == {"200": 1}
    # the others keep refreshing at R (expires 5) and stay Registered; the victim sends nothing while quarantined
    _registered_throughout(agent, users, 12)
    for u in users:
        assert len([r for r in registers(lab, u, node="R", since=t_rejected) if r.expires != "0"]) >= 2, u
    assert registers(lab, victim, since=t_rejected) == []
    assert agent.latest(victim)["registration"]["failureReason"] == "RegistrarResponseRejected"
    err = agent.stderr_text()
    assert "SIGSEGV" not in err and "exited with code 75" in err and "account quarantined" in err
    snap = agent.snapshot()
    assert [w["restarts"] for w in snap["workers"]] == [1], snap["workers"]
    assert sorted(a["name"] for a in snap["accounts"]) == sorted(users)
    shared_pid = snap["workers"][0]["pid"]

    # released after 30 s into a worker of its own: the registrar kills only that one, quarantine doubles
    st = agent.wait_status(victim, lambda s: "rejection 2" in (s["registration"].get("reason") or ""), 60,
                           "second rejection")
    assert "quarantined for 60 s" in st["registration"]["reason"]
    assert [r.answer for r in _at_s(lab, victim, t0)] == ["200", "200"]
    snap = agent.snapshot()
    assert [(w["pid"], w["restarts"]) for w in snap["workers"]] == [(shared_pid, 1)], snap["workers"]
    _registered_throughout(agent, users, 3)
    assert agent.stderr_text().count("WorkerRestarted") == 2  # the two good accounts, once
    assert agent.stop() == 0


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


@pytest.mark.parametrize("granted", [1, 4])
def test_a_grant_below_pjsips_refresh_margin_is_refreshed_by_the_agent(clean_lab, agent_factory, agent_account,
                                                                       granted):
    # requested 300 s (no override): pjsip's refresh delay is 5 s, so a grant of 1 or 4 s wraps (no refresh ever)
    lab = clean_lab
    lab.scripted.script(f"200 expires={granted}")
    acc, user = agent_account("short", registrar=lab.scripted.uri())
    agent = agent_factory([acc], expires=None)
    agent.wait_registered(user, timeout=60)
    t0 = time.time()
    samples = 0
    while time.time() - t0 < 10:
        now = time.time()
        st = agent.latest(user)["registration"]
        assert st["state"] == "Registered" and st["expiresSeconds"] == granted, st
        assert now - 0.5 < _epoch(st["expiresAt"]) <= now + granted + 0.5, (now, st)
        samples += 1
        time.sleep(0.2)
    t1 = time.time()
    sent = [r for r in _at_s(lab, user, t0) if r.expires != "0" and r.at <= t1]
    assert len(sent) >= 10 / granted, f"{len(sent)} REGISTERs in 10 s for a {granted} s grant"
    assert all(r.answer == "200" for r in sent) and samples >= 20
    # every refresh went through P (the registration client was not rebuilt: no route drift)
    assert all(r.src.startswith(lab.ip("P") + ":") for r in sent)
    assert agent.latest(user)["route"]["inSync"] is True

    # the registrar goes silent: the binding lapses and the status says so (no Registered for a lapsed binding)
    lab.scripted.script("silence")
    t_silent = time.time()
    st = agent.wait_status(user, lambda s: s["registration"]["state"] != "Registered", granted + 10, "not Registered")
    assert st["registration"]["state"] == "Failed" and st["registration"]["failureReason"] == "RegistrationLapsed"
    assert _epoch(agent.statuses(user)[-2]["registration"]["expiresAt"]) <= time.time()
    assert time.time() - t_silent <= granted + 10
    assert agent.stop() == 0


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_an_unparsable_200_is_reported_as_what_it_is(clean_lab, agent_factory, agent_account, transport):
    lab = clean_lab
    lab.scripted.script("200 bad-contact")
    acc, user = agent_account("unp", registrar=lab.scripted.uri(transport), transport=transport)
    t0 = time.time()
    agent = agent_factory([acc], expires=None)
    st = agent.wait_status(user, lambda s: s["registration"].get("failureReason") == "RegistrarResponseUnparsable",
                           20, "RegistrarResponseUnparsable")
    reg = st["registration"]
    assert reg["state"] == "Failed" and reg["code"] == 200 and "'Contact' header" in reg["reason"]
    assert [r.answer for r in _at_s(lab, user, t0)][:1] == ["200"]  # S did answer, on the wire
    if transport == "udp":  # pjsua's own timeout (Timer F, 32 s) keeps the cause, not just "Request Timeout"
        st = agent.wait_status(user, lambda s: s["registration"].get("code") == 408, 60, "408")
        assert st["registration"]["failureReason"] == "RegistrarResponseUnparsable"
        assert "unparsable" in st["registration"]["reason"]
    assert agent.stop() == 0


def test_without_detection_the_crash_loop_is_blamed_on_the_right_account(clean_lab, agent_factory, agent_account,
                                                                           monkeypatch):
    # the worker's guard off (a test-only switch): pjsua really processes the 10 URIs and dies with SIGSEGV
    monkeypatch.setenv("SIPFLEET_AGENT_TEST_NO_RESPONSE_GUARD", "1")
    lab = clean_lab
    lab.scripted.script("200 sr=10")
    victim_acc, victim = agent_account("crv", registrar=lab.scripted.uri())
    good = [agent_account(f"crg{i}") for i in range(2)]
    t0 = time.time()
    agent = agent_factory([victim_acc] + [a for a, _ in good], expires=5)
    st = agent.wait_status(victim, lambda s: s["registration"].get("failureReason")
                           == "RegistrarResponseCrashedWorker", 60, "RegistrarResponseCrashedWorker")
    assert "SIGSEGV" in st["registration"]["reason"] and "quarantined for 30 s" in st["registration"]["reason"]
    for _, u in good:
        agent.wait_registered(u, timeout=60)
    t_blamed = time.time()
    _registered_throughout(agent, [u for _, u in good], 8)
    assert registers(lab, victim, since=t_blamed) == []
    # two crashes (the first one unattributed), then no more
    assert [r.answer for r in _at_s(lab, victim, t0)] == ["200", "200"]
    assert [w["restarts"] for w in agent.snapshot()["workers"]] == [2]
    assert agent.stderr_text().count("SIGSEGV") >= 2
    assert agent.stop() == 0


def test_a_200_too_large_for_pjsip_over_tcp_is_reported_as_oversized(clean_lab, agent_factory, agent_account):
    lab = clean_lab
    lab.scripted.script("200 pad=4100 expires=60")
    acc, user = agent_account("big", registrar=lab.scripted.uri("tcp"), transport="tcp", route=[])
    t0 = time.time()
    agent = agent_factory([acc], expires=None)
    st = agent.wait_status(user, lambda s: s["registration"].get("failureReason") == "RegistrarResponseOversized",
                           20, "RegistrarResponseOversized")
    assert st["registration"]["state"] == "Failed" and st["registration"]["code"] == 200
    assert "PJSIP_ERXOVERFLOW" in st["registration"]["reason"]
    assert [r.answer for r in _at_s(lab, user, t0)][:1] == ["200"]
    assert agent.stop() == 0


def test_a_200_cut_at_pjsips_udp_buffer_is_truncated_not_registered(clean_lab, agent_factory, agent_account):
    lab = clean_lab
    lab.scripted.script("200 big-header=4100 big-header-at=start expires=60 sr=2")
    acc, user = agent_account("cut", registrar=lab.scripted.uri(), route=[])
    t0 = time.time()
    agent = agent_factory([acc], expires=None)  # asks for 300 s: what pjsua reports when the Expires is cut off
    st = agent.wait_status(user, lambda s: s["registration"].get("failureReason") == "RegistrarResponseTruncated",
                           20, "RegistrarResponseTruncated")
    reg = st["registration"]
    assert reg["state"] == "Failed" and reg["code"] == 200, reg
    assert "4000-byte UDP receive buffer" in reg["reason"] and "unknown" in reg["reason"], reg
    assert reg.get("expiresAt") is None and reg.get("expiresSeconds") is None and reg.get("nextAttemptAt"), reg
    assert not st["route"].get("serviceRoute"), st["route"]  # S sent two; pjsua never saw them
    # on the wire: S answered 200 (longer than pjsip's buffer); the next try waits for the back-off (5-10 s)
    at_s = _at_s(lab, user, t0)
    assert [r.answer for r in at_s] == ["200"], [(r.at, r.answer) for r in at_s]
    time.sleep(3)
    assert len(_at_s(lab, user, t0)) == 1
    deadline = time.monotonic() + 20
    while len(_at_s(lab, user, t0)) < 2 and time.monotonic() < deadline:
        time.sleep(0.25)
    assert [r.answer for r in _at_s(lab, user, t0)][:2] == ["200", "200"]
    assert agent.latest(user)["registration"]["failureReason"] == "RegistrarResponseTruncated"
    # the registrar's answers fit again: the grant and the Service-Route are S's, as the wire shows them
    lab.scripted.script("200 expires=60 sr=2")
    st = agent.wait_status(user, lambda s: s["registration"]["state"] == "Registered", 30, "Registered")
    assert st["registration"]["expiresSeconds"] == 60 and st["registration"].get("failureReason") is None
    assert len(st["route"]["serviceRoute"]) == 2, st["route"]
    assert agent.stop() == 0


def test_a_200_cut_after_its_grant_is_registered_and_says_it_was_cut(clean_lab, agent_factory, agent_account):
    lab = clean_lab
    lab.scripted.script("200 big-header=4100 expires=60")  # the big header last: only it is cut
    acc, user = agent_account("cutok", registrar=lab.scripted.uri(), route=[])
    agent = agent_factory([acc], expires=None)
    st = agent.wait_status(user, lambda s: s["registration"]["state"] == "Registered", 20, "Registered")
    reg = st["registration"]
    assert reg["expiresSeconds"] == 60 and reg.get("failureReason") is None, reg  # S's grant, not the 300 asked
    assert "answer cut at pjsip's 4000-byte UDP receive buffer" in reg["reason"], reg
    assert agent.stop() == 0
