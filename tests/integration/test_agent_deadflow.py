"""Dead-flow detection over TCP and TLS (issue 12 item 3): a standalone agent (pjsua2 2.15.1) registered over TCP
(or TLS, verified) through the lab's proxy P, then P partitioned (every packet in and out of its netns dropped,
nftables).

With ``deadFlowSeconds`` the kernel probes pjsip's idle connection to P (``ss`` shows the keep-alive timer on it)
and closes it when nothing is acknowledged; pjsip reports the transport lost and the agent re-registers at once
(``nextAttemptReason: TransportLost``), long before its refresh (300 s away). With the bound off the same
partition goes unnoticed for the whole window: the status keeps saying Registered. The time until the agent
noticed is printed, not asserted beyond "before the refresh".

Over UDP (``udpDeadFlowSeconds``, off by default) the worker probes with OPTIONS through the account's route (seen
at P on the wire); the same partition leaves them unanswered and the agent re-registers
(``nextAttemptReason: DeadFlow``). Without probing nothing notices.
"""

from __future__ import annotations

import contextlib
import subprocess
import time

import pytest

from tests.fixtures.agent import registers

pytestmark = pytest.mark.lab

WINDOW_S = 40  # far below the 300 s refresh; above the bound used (6 s: noticed within 6-8 s)


def _connections_to(src_ip: str, dst: str) -> str:
    """``ss -tnoi`` of established TCP connections from ``src_ip`` to ``dst`` (ip:port)."""
    out = subprocess.run(["ss", "-tnoH", "state", "established", "src", src_ip, "dst", dst],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    return out.strip()


@contextlib.contextmanager
def _p_cut_off(lab, agent, user: str, reason: str, label: str):
    """P partitioned (healed on leaving); yields the seconds until the status said the path is gone (``reason``,
    or not Registered any more), None when it did not within WINDOW_S. The time is printed."""
    lab.partition("P")
    try:
        t0, noticed = time.monotonic(), None
        while noticed is None and time.monotonic() - t0 < WINDOW_S:
            reg = agent.latest(user)["registration"]
            if reg.get("nextAttemptReason") == reason or reg["state"] != "Registered":
                noticed = time.monotonic() - t0
            time.sleep(0.2)
        print(f"{label}: dead path to P noticed after "
              f"{'%.1f s' % noticed if noticed is not None else f'more than {WINDOW_S} s'}")
        yield noticed
    finally:
        lab.heal("P")


def _registered_again_through_p(lab, agent, user: str) -> None:
    t_heal = time.time()
    agent.wait_status(user, lambda s: s["registration"]["state"] == "Registered"
                      and s["registration"].get("nextAttemptReason") is None, 90, "registered again")
    assert [r for r in registers(lab, user, node="P", since=t_heal)], "no REGISTER at P after the heal"


def _hostport(uri: str) -> str:
    return uri.split(":", 1)[1].split(";", 1)[0]


@pytest.mark.parametrize("transport,bound", [("tcp", 6), ("tcp", 0), ("tls", 6)])
def test_a_dead_path_to_the_first_hop_is_noticed_before_the_refresh(clean_lab, agent_factory, agent_account,
                                                                     transport, bound):
    lab = clean_lab
    acc, user = agent_account("flow", transport=transport)
    if transport == "tls":  # verified against the lab's CA: the worker's TLS transport comes from the account
        assert lab.tls_enabled, "Kamailio's tls module is missing: run ./scripts/setup (kamailio-tls-modules)"
        acc["route"] = [lab.proxy_uri("tls", "good")]
        acc["tls"] = {"caFile": str(lab.tls.ca_crt)}
    agent = agent_factory([acc], expires=None, settings={"deadFlowSeconds": bound})
    agent.wait_registered(user)
    conns = _connections_to(agent.address, _hostport(acc["route"][0]))
    assert conns, "no TCP connection from the agent to P"
    assert ("timer:(keepalive" in conns) == (bound > 0), conns

    with _p_cut_off(lab, agent, user, "TransportLost", f"{transport}, deadFlowSeconds={bound}") as noticed:
        if bound:
            assert noticed is not None, (agent.latest(user), agent.stderr_tail())
            assert "transport disconnected" in agent.stderr_text()
        else:
            assert noticed is None, agent.latest(user)  # nothing notices before the refresh
    if bound:  # it registers again through P once P answers
        _registered_again_through_p(lab, agent, user)
    assert agent.stop() == 0


@pytest.mark.parametrize("bound", [6, 0])
def test_a_dead_udp_path_to_the_first_hop_is_noticed_by_options_probes(clean_lab, agent_factory, agent_account,
                                                                        bound):
    lab = clean_lab
    acc, user = agent_account("uflow")
    agent = agent_factory([acc], expires=None, settings={"udpDeadFlowSeconds": bound})
    agent.wait_registered(user)
    t_reg = time.time()
    time.sleep(9)  # longer than the bound: answered probes keep the path alive
    probes = [r for r in lab.wire(since=t_reg, node="P", method="OPTIONS") if f":{user}@" in r.from_uri]
    if bound:  # every 2 s, through P (the account's route)
        assert len(probes) >= 3, probes
    else:
        assert probes == []
    assert agent.latest(user)["registration"].get("nextAttemptReason") is None
    assert "UDP path to the first hop dead" not in agent.stderr_text()

    with _p_cut_off(lab, agent, user, "DeadFlow", f"udp, udpDeadFlowSeconds={bound}") as noticed:
        if bound:
            assert noticed is not None, (agent.latest(user), agent.stderr_tail())
            time.sleep(2 * bound)  # still cut off: one verdict, one re-REGISTER (probing rests for its outcome)
            assert agent.stderr_text().count("UDP path to the first hop dead") == 1, agent.stderr_tail()
            assert "failed locally" not in agent.stderr_text()
        else:
            assert noticed is None, agent.latest(user)
    if bound:
        _registered_again_through_p(lab, agent, user)
    assert agent.stop() == 0
