"""The REGISTER budget held at the registrar (issue 12 item 4): a standalone agent (supervisor, 3 pjsua2 workers) whose
24 accounts carry a share of the budget (``registerRate``, what the operator writes into an assignment), against
the lab's R through P.

Checked on the wire, in REGISTER transactions (a challenged registration is 2: the first REGISTER and the one with
credentials; an un-REGISTER too): at start-up and after an outage the agent starts no more than its rate + 2 in
any second (new transactions at P), and R sees no more than that plus the transactions that were in flight when it
came back (retransmitted by pjsip and P, and the REGISTERs with credentials that follow their challenges: begun during the
outage, so few); a re-creation's four transactions go together, so "rate" here is the rate plus one attempt; while R is blackholed (every packet
in and out of its netns dropped) and every account must re-register, the agent starts a few attempts before it
holds its accounts behind one probe every ``registrarProbeSeconds`` (``nextAttemptReason: Paced``), not one per
account; once R answers the accounts follow. Times are printed.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tests.fixtures.agent import registers

pytestmark = pytest.mark.lab

N = 24
SHARE = 0.25  # REGISTER requests per second per account: the agent's lane gets N * SHARE = 6/s
RATE = N * SHARE
PROBE_S = 3
OUTAGE_S = 15
ATTEMPT = 4  # REGISTER transactions of the largest attempt: a re-creation's un-REGISTER and REGISTER, challenged


def _worst_second(times: list[float]) -> int:
    """The most REGISTERs in any window of one second (windows start at each REGISTER)."""
    times = sorted(times)
    return max((len([t for t in times[i:] if t < start + 1.0]) for i, start in enumerate(times)), default=0)


def _at(lab, users: list[str], node: str, since: float) -> list:
    return sorted((r for u in users for r in registers(lab, u, node=node, since=since)), key=lambda r: r.at)


def _new_transactions(records: list, before: set) -> list[float]:
    """When each REGISTER transaction (Call-ID, CSeq) was first seen, leaving out those in ``before``."""
    seen, out = set(before), []
    for r in records:
        if (r.call_id, r.cseq) not in seen:
            seen.add((r.call_id, r.cseq))
            out.append(r.at)
    return out


def test_the_budget_holds_at_the_registrar_through_an_outage(clean_lab, agent_factory, agent_account):
    lab = clean_lab
    accs, users = [], []
    for i in range(N):
        acc, user = agent_account(f"bud{i}", registerRate=SHARE)
        accs.append(acc)
        users.append(user)
    t0 = time.time()
    agent = agent_factory(accs, expires=None, settings={"registrarProbeSeconds": PROBE_S})
    for u in users:
        agent.wait_registered(u, timeout=120)
    start = _new_transactions(_at(lab, users, "P", t0), set())
    print(f"start-up: {N} accounts registered in {time.time() - t0:.1f} s, {len(start)} REGISTER transactions, "
          f"worst second {_worst_second(start)} (rate {RATE:g}/s)")
    assert len(start) >= N
    assert _worst_second(start) <= RATE + 2, Counter(int(t - t0) for t in start)

    time.sleep(2)
    t_out = time.time()
    lab.partition("R")
    try:
        agent.post("/debug/reregister")  # every account must send a REGISTER while R is gone
        paced = set()
        while time.time() - t_out < OUTAGE_S:
            paced |= {u for u in users if (agent.latest(u)["registration"].get("nextAttemptReason") == "Paced")}
            time.sleep(0.2)
    finally:
        lab.heal("R")
    t_heal = time.time()
    during = [r for u in users for r in registers(lab, u, node="P", since=t_out) if r.at < t_heal]
    attempts = {r.call_id for r in during if r.expires != "0"}  # a re-register is a new client: a new Call-ID
    print(f"outage {t_heal - t_out:.1f} s: {len(during)} REGISTERs at P (un-REGISTERs and retransmissions "
          f"included), {len(attempts)} registration attempts of {N} accounts; {len(paced)} accounts were seen "
          "waiting for the probe")
    assert paced, "no account said it waits for the agent's probe (nextAttemptReason Paced)"
    # a few let go before the lane saw no answer (2 s at 6/s, 2 requests each), then one probe per PROBE_S
    assert len(attempts) <= RATE + OUTAGE_S / PROBE_S + 2 < N, sorted(attempts)

    for u in users:
        agent.wait_status(u, lambda s: s["registration"]["state"] == "Registered"
                          and s["registration"].get("nextAttemptReason") is None, 120, "registered again")
    # attempts begun during the outage go on after it (retransmissions, the REGISTER with credentials after the
    # challenge): the same Call-ID; the agent's new attempts after it are what the budget paces
    begun = {r.call_id for r in during}
    new_p = [r for r in _at(lab, users, "P", t_heal) if r.call_id not in begun]
    started = _new_transactions(new_p, set())
    at_r = _at(lab, users, "R", t_heal)
    carried = [r for r in at_r if r.call_id in begun]
    took = max(started) - min(started) if started else 0.0
    print(f"after the heal: all registered again {time.time() - t_heal:.1f} s later; {len(started)} transactions "
          f"of new attempts in {took:.1f} s, worst second {_worst_second(started)}; at R {len(at_r)} REGISTERs, "
          f"worst second {_worst_second([r.at for r in at_r])}, {len(carried)} of attempts begun during the outage")
    assert {u for u in users if registers(lab, u, node="R", since=t_heal)} == set(users)
    # a re-creation is one attempt of 4 transactions (un-REGISTER and REGISTER, each challenged), let go whole:
    # a second holds the rate's worth and at most one attempt more
    assert _worst_second(started) <= RATE + ATTEMPT, Counter(int(t - t_heal) for t in started)
    assert len(started) - ATTEMPT <= RATE * took * 1.1, (len(started), took)
    assert _worst_second([r.at for r in at_r]) <= RATE + ATTEMPT + len(carried), \
        Counter(int(r.at - t_heal) for r in at_r)
