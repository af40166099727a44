"""The demo's verdict (sipfleet.demo.verdict.judge) on what a real run recorded (``sipfleet demo --record``,
tests/unit/data/demo_run.json: dave drifted to E after the link flap and was repaired by recreate-account),
and on that recording changed into the failures the verdict must catch."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from sipfleet.demo.recording import load
from sipfleet.demo.timeline import render
from sipfleet.demo.verdict import judge

RUN = Path(__file__).parent / "data" / "demo_run.json"


@pytest.fixture
def run() -> dict:
    return load(RUN)


def _drift(run):
    return next(r for r in run["wire"] if r.node == "E" and r.at >= run["fault"].started)


def _fresh_ids(run):
    drift = _drift(run)
    old = {r.call_id for r in run["wire"] if r.at <= drift.at}
    return {r.call_id for r in run["wire"] if r.at > drift.at} - old


def test_the_recorded_run_drifted_and_was_repaired(run):
    v = judge(**run)
    assert v.ok and v.drifted and v.repaired, v.problems
    assert (v.method, v.trigger) == ("recreate-account", "operator")
    assert v.duration_ms == pytest.approx(258.788)
    assert any(e.startswith("wire: REGISTER at E") for e in v.drift_evidence)
    assert any(e.startswith("status: out of sync") for e in v.drift_evidence)
    assert any(e.startswith("event: Warning RouteDrift") for e in v.drift_evidence)
    assert any(e.startswith("wire: a new registration client through P") for e in v.repair_evidence)
    table = render(v.rows, run["fault"].started)
    for row in ("holds its answers to REGISTER 8000 ms", "eth0 of pod", "REGISTER in flight via P",
                "noticed its link down", "previous IP change still in progress",
                "REGISTER sent straight to the edge E", "status.route.inSync=false", "RouteInSync=False (RouteDrift)",
                "ladder RepairRequested", "repair done: recreate-account", "first REGISTER through P again",
                "RouteInSync=True", "ladder Idle"):
        assert row in table, row
    # in time order: the drift on the wire, then the way back through P
    assert table.index("straight to the edge E") < table.index("first REGISTER through P again")
    assert v.notes and "0 via E" in v.notes[0]


def test_no_register_at_e_is_no_drift(run):
    run["wire"] = [r for r in run["wire"] if not (r.node == "E" and r.at >= run["fault"].started)]
    v = judge(**run)
    assert not v.drifted and not v.repaired and not v.ok
    assert "no REGISTER of dave reached the edge E after the fault started" in v.problems


def test_a_status_that_never_left_the_route_is_no_drift(run):
    started = run["fault"].started
    run["history"] = [c for c in run["history"] if not (c[0] >= started and (
        (c[1] == "inSync" and c[2] is False) or (c[1] == "RouteInSync" and c[2][0] == "False")))]
    v = judge(**run)
    assert not v.drifted and not v.ok
    assert any("status never left the route" in p for p in v.problems)


def test_drift_without_repair(run):
    drift = _drift(run)
    cut = drift.at + 0.001
    run["wire"] = [r for r in run["wire"] if r.at <= cut]
    run["history"] = [c for c in run["history"] if c[0] <= drift.at + 0.25]  # out of sync, nothing after
    run["events"] = [e for e in run["events"] if e.reason != "RouteRepaired"]
    v = judge(**run)
    assert v.drifted and not v.repaired and not v.ok
    assert "no REGISTER of a new registration client through P after the drift" in v.problems
    assert any(p.startswith("no repair recorded") for p in v.problems)
    assert "RouteInSync never came back to True after the drift" in v.problems


def test_a_repair_whose_new_client_goes_to_e_is_not_via_p(run):
    fresh = _fresh_ids(run)
    run["wire"] = [dataclasses.replace(r, node="E", route=["sip:10.213.202.3:5060;lr"]) if r.call_id in fresh
                   and r.node == "P" else r for r in run["wire"]]
    v = judge(**run)
    assert v.drifted and not v.repaired and not v.ok
    assert any(p.startswith("repair not via P: the new registration client sent") for p in v.problems)


def test_a_repair_through_p_with_another_route_is_not_the_configured_one(run):
    fresh = _fresh_ids(run)
    run["wire"] = [dataclasses.replace(r, route=["sip:10.213.202.1:5060;lr", "sip:10.213.202.3:5060;lr"])
                   if r.call_id in fresh else r for r in run["wire"]]
    v = judge(**run)
    assert not v.repaired and any(p.startswith("repair not via the configured route") for p in v.problems)


def test_a_register_at_e_before_the_fault_means_the_account_was_off_route_already(run):
    f = run["fault"]
    early = dataclasses.replace(_drift(run), at=f.started - 0.002, call_id="earlier-client")
    run["fault"] = dataclasses.replace(f, calm_at=f.started - 5)
    run["wire"] = sorted([*run["wire"], early], key=lambda r: r.at)
    v = judge(**run)
    assert not v.drifted and not v.ok
    assert any("before the fault started" in p for p in v.problems)


def test_registers_at_e_before_the_calm_check_belong_to_an_earlier_run(run):
    f = run["fault"]
    assert any(r.node == "E" and r.at < f.calm_at for r in run["wire"])  # the recording holds one
    assert judge(**run).ok


def test_a_pod_restart_counts_as_repair_when_the_status_says_so(run):
    started = run["fault"].started
    hist = [c for c in run["history"] if not (c[0] >= started and c[1] in ("lastRepair", "ladder", "ladderLast"))]
    t_out = next(c[0] for c in hist if c[0] >= started and c[1] == "inSync" and c[2] is False)
    hist += [(t_out + 10, "ladder", ("PodRestarted", "tok")), (t_out + 13, "ladder", ("Idle", "tok")),
             (t_out + 13, "ladderLast", ("restart-pod", 3562.0))]
    run["history"] = sorted(hist, key=lambda c: c[0])
    run["events"] = []
    v = judge(**run)
    assert v.ok, v.problems
    assert (v.method, v.duration_ms) == ("restart-pod", 3562.0)
    assert "ladder PodRestarted" in render(v.rows, started)


def test_the_repair_method_from_the_event_when_the_status_history_missed_it(run):
    started = run["fault"].started
    run["history"] = [c for c in run["history"] if not (c[0] >= started and c[1] == "lastRepair")]
    v = judge(**run)
    assert v.ok and (v.method, v.duration_ms) == ("recreate-account", 259.0)
    assert any(e.startswith("event: RouteRepaired") for e in v.repair_evidence)
    run["events"] = [e for e in run["events"] if e.reason != "RouteRepaired"]
    assert not judge(**run).ok
