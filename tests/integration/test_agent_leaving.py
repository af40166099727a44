"""An account that leaves the agent while its REGISTER is in flight leaves no binding behind (issue 13: after an
operator kill the fault matrix found a deleted account's contact still at R).

pjsua sends no un-REGISTER while the account's registration client has a REGISTER in flight (``PJSIP_EBUSY``),
but the deleted client still answers the registrar's challenge, so the registrar grants a binding nobody removes.
Here the lab's scripted registrar S delays each answer (the challenge and the 200), the account is removed from
the agent's assignment (or the agent gets SIGTERM) in the middle, and S's wire records must show the binding
REGISTER granted *and then* an un-REGISTER of the same registration client (Call-ID).
"""

from __future__ import annotations

import signal
import time

import pytest

from sipfleet.localenv.waiting import wait_for

pytestmark = pytest.mark.lab

DELAY_MS = 800  # each answer of S (challenge, 200) comes this late: the REGISTER is in flight for > 1.5 s


def _account(agent_account, lab, prefix: str):
    acc, user = agent_account(prefix, registrar=lab.scripted.uri())
    acc["registration"] = {"retryIntervalSeconds": 5, "firstRetryIntervalSeconds": 1, "jitterSeconds": 0}
    return acc, user


def _records(lab, user: str, since: float) -> list:
    return [r for r in lab.scripted.requests(since=since) if f":{user}@" in r.from_uri
            and not r.answer.startswith("retransmit")]


def _first_register_seen(lab, user: str, since: float):
    return wait_for(lambda: [r for r in _records(lab, user, since) if not r.has_auth], timeout=20, interval=0.05,
                    message=f"{user}'s first REGISTER at S")[0]


def _granted_then_unregistered(lab, user: str, since: float, call_id: str) -> tuple:
    """(the binding REGISTER S granted, the un-REGISTER after it) of one registration client, or (x, None)."""
    recs = [r for r in _records(lab, user, since) if r.call_id == call_id]
    granted = next((r for r in recs if r.expires != "0" and r.answer == "200"), None)
    unreg = next((r for r in recs if r.expires == "0" and granted is not None and r.cseq > granted.cseq), None)
    return granted, unreg


def _remove_in_the_middle(lab, agent_factory, agent_account, prefix: str):
    """An agent with accounts ``stay`` and ``go`` (S delaying every answer); ``go`` removed from its assignment
    while S still holds back the challenge to its first REGISTER. -> (agent, stay, stay user, go, go user, t0,
    go's first REGISTER at S)."""
    lab.scripted.script(f"200 auth=401 delay={DELAY_MS} expires=300", scope="aor")
    stay, stay_user = _account(agent_account, lab, f"{prefix}s")
    go, go_user = _account(agent_account, lab, f"{prefix}g")
    t0 = time.time()
    agent = agent_factory([stay, go], expires=None)
    first = _first_register_seen(lab, go_user, t0)
    agent.write_config({**agent.config, "accounts": [stay]})
    return agent, stay, stay_user, go, go_user, t0, first


def test_an_account_removed_in_the_middle_of_its_register_unregisters_once_it_is_answered(
        clean_lab, agent_factory, agent_account):
    lab = clean_lab
    agent, _, stay_user, _, go_user, t0, first = _remove_in_the_middle(lab, agent_factory, agent_account, "l")
    agent.wait_status(stay_user, lambda s: s["registration"].get("state") == "Registered", 30, "stay Registered")
    def both():
        granted, unreg = _granted_then_unregistered(lab, go_user, t0, first.call_id)
        return (granted, unreg) if unreg is not None else None

    granted, unreg = wait_for(both, timeout=30, interval=0.1,
                              message=f"{go_user}: its granted REGISTER, then its un-REGISTER, at S")
    recs = _records(lab, go_user, t0)
    print(f"\nwire of the removed account: {[(round(r.at - first.at, 3), r.cseq, r.expires, r.has_auth, r.answer) for r in recs]}")
    assert granted.has_auth and unreg.at > granted.at
    # nothing from the removed account after its un-REGISTER was answered: no refresh, no retry, no status
    time.sleep(2)
    assert [r for r in _records(lab, go_user, t0) if r.at > unreg.at and r.expires != "0"] == []
    assert go_user not in {a["name"] for a in agent.snapshot()["accounts"]}
    assert agent.stop() == 0


def test_an_account_added_again_while_it_leaves_registers_after_its_old_unregister(
        clean_lab, agent_factory, agent_account):
    lab = clean_lab
    agent, stay, _, go, go_user, t0, first = _remove_in_the_middle(lab, agent_factory, agent_account, "r")
    time.sleep(1.1)  # the agent polls its config once a second: removed, and still waiting for S's answers
    agent.write_config({**agent.config, "accounts": [stay, go]})
    agent.wait_status(go_user, lambda s: s["registration"].get("state") == "Registered", 30, "re-added Registered")
    recs = _records(lab, go_user, t0)
    print(f"\nwire of the re-added account: {[(round(r.at - first.at, 3), r.call_id == first.call_id, r.cseq, r.expires, r.answer) for r in recs]}")
    _, unreg = _granted_then_unregistered(lab, go_user, t0, first.call_id)
    new = [r for r in recs if r.call_id != first.call_id]
    assert unreg is not None and new, recs
    # the old client's un-REGISTER (same Contact URI) would remove the new binding if it came after it
    assert new[0].at > unreg.at, recs
    assert agent.stop() == 0


def test_sigterm_in_the_middle_of_a_register_still_unregisters(clean_lab, agent_factory, agent_account):
    lab = clean_lab
    lab.scripted.script(f"200 auth=401 delay={DELAY_MS} expires=300", scope="aor")
    acc, user = _account(agent_account, lab, "lt")
    t0 = time.time()
    agent = agent_factory([acc], expires=None)
    first = _first_register_seen(lab, user, t0)
    agent.signal(signal.SIGTERM)
    assert agent.proc.wait(30) == 0, agent.stderr_tail()
    granted, unreg = _granted_then_unregistered(lab, user, t0, first.call_id)
    recs = _records(lab, user, t0)
    print(f"\nwire of the stopped agent: {[(round(r.at - first.at, 3), r.cseq, r.expires, r.has_auth, r.answer) for r in recs]}")
    assert granted is not None and unreg is not None, recs
