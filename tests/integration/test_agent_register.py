"""The agent against the real lab: registration through P, measured route vs. wire truth, wrong password,
SIGTERM, calls (603 regression, fifth call), account limit. Real Kamailio, SIPp and pjsua2."""

from __future__ import annotations

import signal
import time

import pytest
import yaml

from sipfleet_agent.siplog import normalize_uri
from tests.fixtures.agent import registers

pytestmark = pytest.mark.lab


def test_registers_through_proxy_and_reports_the_wire_truth(lab, agent_factory, agent_account):
    acc, user = agent_account("reg", routeMode="prevent")
    t0 = time.time()
    agent = agent_factory([acc])
    st = agent.wait_registered(user)

    # The wire: P received the agent's REGISTER with Route <P;lr>; E received none.
    rec = lab.wait_wire(lambda r: f":{user}@" in r.from_uri, node="P", method="REGISTER", since=t0, timeout=60)
    assert rec.src.startswith(agent.address + ":")
    assert [normalize_uri(u) for u in rec.route] == [normalize_uri(lab.proxy_uri())]
    route = st["route"]
    # The reported effective route is what P received; the first hop is P.
    assert [normalize_uri(u) for u in route["effective"]] == [normalize_uri(u) for u in rec.route]
    assert route["firstHop"] == f"udp:{lab.hostport('P')}"
    assert route["responseFrom"] == lab.hostport("P")
    assert route["mode"] == "prevent"
    assert [normalize_uri(u) for u in route["serviceRoute"]] == [normalize_uri(lab.edge_uri())]
    assert route["desired"][0] == lab.proxy_uri()
    assert st["registration"]["code"] == 200
    assert st["agent"]["name"] == "pytest-agent"
    assert registers(lab, user, node="E", since=t0) == []
    assert lab.contacts(user), "R holds no contact for the agent"
    assert agent.get("/readyz")[0] == 200
    assert agent.metric("sipfleet_agent_registrations", 'state="Registered"') == 1.0


def test_wrong_password_fails_with_code_and_does_not_retry_tightly(lab, agent_factory, agent_account, tmp_path):
    acc, user = agent_account("bad")
    secret = "wrong-" + user
    bad = tmp_path / f"{user}.badpw"
    bad.write_text(secret)
    acc["credentials"]["passwordFile"] = str(bad)
    acc["registration"] = {"retryIntervalSeconds": 30, "firstRetryIntervalSeconds": 1, "jitterSeconds": 0}
    t0 = time.time()
    agent = agent_factory([acc])
    st = agent.wait_status(user, lambda s: s["registration"]["state"] == "Failed", 60, "Failed")
    assert st["registration"]["code"] in (401, 403)
    assert st["registration"].get("reason")
    assert st["registration"].get("lastFailure")
    failed_at = time.time()
    # Over a window well past the first retry interval: a handful of REGISTERs, not a loop.
    deadline = failed_at + 8
    while time.time() < deadline:
        assert agent.proc.poll() is None, agent.stderr_tail()
        time.sleep(0.5)
    sent = registers(lab, user, node="P", since=t0)
    assert 1 <= len(sent) <= 4, [(r.at, r.cseq, r.has_auth) for r in sent]
    assert agent.get("/healthz")[0] == 200
    # The password never reaches stdout or the logs.
    out = yaml.safe_dump([s for _, _, s in agent.updates])
    assert secret not in out
    assert agent.stop() == 0
    assert secret not in agent.stderr_text()


def test_sigterm_unregisters_before_exit_and_exits_zero(lab, agent_factory, agent_account):
    acc, user = agent_account("term", routeMode="prevent")
    agent = agent_factory([acc], expires=60)
    agent.wait_registered(user)
    assert lab.contacts(user)
    t_term = time.time()
    agent.signal(signal.SIGTERM)
    rc = agent.proc.wait(60)
    t_exit = time.time()
    assert rc == 0, agent.stderr_tail()
    unreg = [r for r in registers(lab, user, node="R", since=t_term) if r.expires == "0" or "expires=0" in r.contact]
    assert unreg, "no un-REGISTER reached R"
    assert unreg[0].at <= t_exit
    assert lab.contacts(user) == []
    agent.wait_status(user, lambda s: s["registration"]["state"] == "Unregistered", 30, "Unregistered")


def test_calls_are_answered_and_a_fifth_concurrent_call_gets_486(lab, agent_factory, agent_account):
    acc, user = agent_account("call", routeMode="prevent")
    agent = agent_factory([acc], expires=60)
    agent.wait_registered(user)
    target = f"{agent.address}:{agent.sip_port}"
    ruri = f"sip:{user}@{target}"

    # 603 regression: the Call object must live until DISCONNECTED -> 200, ACK, BYE/200.
    one = lab.sipp("uac_call", target, ruri=ruri, calls=1, pause_ms=300, timeout=60)
    assert one.codes == [200], (one.codes, one.errors[:3])
    assert one.returncode == 0 and one.successful == 1, (one.returncode, one.errors[:3], one.stdout_tail)

    # pjsua 2.15.1 holds at most 4 calls: a fifth concurrent INVITE gets 486, the agent survives.
    five = lab.sipp("uac_call", target, ruri=ruri, calls=5, concurrency=5, rate=100, pause_ms=3000, timeout=90)
    assert sorted(five.codes, key=str) == [200, 200, 200, 200, 486], (five.codes, five.errors[:3])
    assert agent.proc.poll() is None
    assert agent.get("/healthz")[0] == 200
    deadline = time.monotonic() + 60
    while agent.metric("sipfleet_agent_active_calls") != 0.0:
        assert time.monotonic() < deadline, "calls not torn down"
        time.sleep(0.2)
    assert agent.metric("sipfleet_agent_calls_total", 'result="answered"') == 5.0
    assert agent.metric("sipfleet_agent_calls_total", 'result="busy"') >= 1.0
    # Still registered and reachable after the burst.
    again = lab.sipp("uac_call", target, ruri=ruri, calls=1, pause_ms=100, timeout=60)
    assert again.codes == [200]
    assert agent.stop() == 0


def test_reject_policy_answers_with_the_configured_code(lab, agent_factory, agent_account):
    acc, user = agent_account("rej", routeMode="prevent", incomingCalls={"policy": "reject", "rejectCode": 480})
    agent = agent_factory([acc], expires=60)
    agent.wait_registered(user)
    target = f"{agent.address}:{agent.sip_port}"
    res = lab.sipp("uac_call", target, ruri=f"sip:{user}@{target}", calls=1, timeout=60)
    assert res.codes == [480], (res.codes, res.errors[:3])
    assert agent.stop() == 0


def test_more_than_sixty_four_accounts_are_refused_with_a_clear_error(lab, agent_factory, agent_account):
    # One agent runs at most 8 workers of 8 accounts (PJSUA_MAX_ACC = 8 per pjsua2 process).
    accounts = []
    for i in range(65):
        acc, _ = agent_account(f"n{i}")
        accounts.append(acc)
    agent = agent_factory(accounts, wait_healthy=False)
    rc = agent.proc.wait(60)
    assert rc == 2
    assert "at most 64" in agent.stderr_text()
