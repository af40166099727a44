"""``sipfleet demo`` end to end, as ``make demo`` runs it, in its own state directory and names.

The demo starts its own cluster ("demotest-<checkout hash>", not the session's cluster) and its own SIP lab (on a
free lab slot of its own, next to the test lab's), installs the chart with
the real helm (restricted Pod Security on both namespaces), applies the examples (alice and bob sharing an agent,
dave in routeMode account), provokes the drift with a real link flap (R holds a REGISTER while eth0 of dave's agent
pod goes down and up inside the pod's netns) and checks the repair.
``--no-keep`` stops everything at the end; ``--down`` runs again in a ``finally`` in case the demo did not get
that far.

It passes only when the demo exits 0 and its output shows the drift and the repair, and the lab's own wire log
(read here, independently of the demo) holds a REGISTER from dave at the edge E followed by one through P.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.lab, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
NAME = f"demotest-{hashlib.sha1(str(REPO).encode()).hexdigest()[:6]}"  # two checkouts' sessions side by side


def _die_with_pytest() -> None:  # runs in the child: SIGTERM when pytest goes away
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)


def _demo(state: Path, *extra: str, timeout: float) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "sipfleet.cli", "demo", "--name", NAME,
           "--state-dir", str(state), *extra]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_pytest)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # the demo's own session; its cluster and lab die with it
        out, _ = proc.communicate(timeout=60)
        out += f"\n(test: the demo was stopped after {timeout:.0f} s)"
        return subprocess.CompletedProcess(cmd, -1, out, "")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")


def test_demo_shows_drift_and_repair_end_to_end(tmp_path_factory):
    from sipfleet.localenv.cluster import LocalCluster
    from sipfleet.localenv.siplab import SipLab
    from sipfleet_agent.siplog import normalize_uri

    # short: containerd's sockets live under it (a unix socket path has at most 104 bytes here)
    state = tmp_path_factory.mktemp("demo")
    try:
        res = _demo(state, "--no-keep", "--timeout", "300", "--accounts", "alice,bob,dave", timeout=420)
    finally:
        down = _demo(state, "--down", timeout=180)
    out = res.stdout
    print(out)  # shown by pytest on failure

    assert res.returncode == 0, f"sipfleet demo exited {res.returncode}:\n{out[-6000:]}"
    assert "RESULT: drift detected and repaired" in out
    # each step ran: helm release, all accounts Registered, the fault, the timeline, the events
    assert "release sipfleet revision 1, deployed" in out
    assert "all 3 Registered" in out
    assert "pod-security.kubernetes.io/enforce=restricted on namespaces sipfleet-system, default" in out
    # the fault: eth0 of dave's pod down and up in its netns, noticed by the agent itself (its log)
    for row in ("eth0 of pod", "eth0 up again", "noticed its link down", "handleIpChange() called (link-change)"):
        assert row in out, f"timeline row {row!r} missing"
    # the timeline: the drift on the wire and in the status, the repair, the way back through P on the wire
    for row in ("REGISTER sent straight to the edge E", "status.route.inSync=false", "repair done:",
                "first REGISTER through P again"):
        assert row in out, f"timeline row {row!r} missing"
    assert "RouteDrift" in out  # the condition's reason and/or the operator's Warning event
    assert "recreate-account" in out or "restart-pod" in out
    assert "--no-keep: stopping the SIP lab and the cluster" in out
    assert down.returncode == 0, down.stdout

    # everything stopped (by PID) ...
    cluster = LocalCluster(NAME, state_dir=state / "clusters" / NAME)
    assert cluster.records() == []
    lab = SipLab(NAME, state_dir=state / "labs" / NAME)  # down: its addresses are the last ones it had
    assert not any(n.running for n in lab.nodes())

    # ... and the lab's own wire log (kept after the lab stopped) shows the drift and the way back
    registers = [r for r in lab.wire(method="REGISTER") if ":dave@" in r.from_uri]
    at_e = [r for r in registers if r.node == "E"]
    assert at_e, "no REGISTER from dave reached the edge E"
    drift = at_e[0]
    assert [normalize_uri(u) for u in drift.route] == [normalize_uri(lab.edge_uri())]
    # a new registration client (a Call-ID not seen up to the drift: not the held or the drifted one)
    old_ids = {r.call_id for r in registers if r.at <= drift.at}
    back = [r for r in registers if r.node == "P" and r.at > drift.at and r.call_id not in old_ids
            and r.expires != "0"]
    assert back, "no REGISTER of a new registration client of dave through P after the drift"
    assert not [r for r in registers if r.node == "E" and r.call_id not in old_ids], \
        "the repaired registration client sent a REGISTER to E"
    assert [normalize_uri(u) for u in back[0].route] == [normalize_uri(lab.proxy_uri())]
    # alice and bob (routeMode prevent, one shared agent) never left the route
    others = [r for r in lab.wire(method="REGISTER") if ":alice@" in r.from_uri or ":bob@" in r.from_uri]
    assert others and not [r for r in others if r.node == "E"]
