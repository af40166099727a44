"""The plugin's pure modules on objects recorded from the real cluster (tests/unit/data/kubectl/, written by
tests/integration/test_kubectl_plugin.py with SIPFLEET_KUBECTL_RECORD=DIR): the chart's operator, alice and bob
sharing an agent, carol (routeMode account) after a re-registration drifted her to E and the ladder repaired it;
``missing-secret`` adds dave, whose Secret does not exist."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from sipfleet.kubectl import doctor, fleet, timeline
from sipfleet.kubectl import objects as o
from sipfleet.kubectl.fmt import parse_time

DATA = Path(__file__).parent / "data" / "kubectl"


def load(name: str) -> dict:
    d = json.loads((DATA / f"{name}.json").read_text())
    d["memory"] = {(ns, pod): b for ns, pod, b in d["memory"]}
    return d


@pytest.fixture
def rec():
    return load("after-drift")


def carol(d):
    return next(a for a in d["accounts"] if o.name(a) == "carol")


def summary(d, after: timedelta, window: float = 3600):
    now = parse_time(carol(d)["status"]["route"]["lastRepair"]["completedAt"]) + after
    return fleet.summarize(d["accounts"], d["events"], d["deployments"], d["pods"], d["memory"], None, now, window,
                           f"namespace {o.namespace(carol(d))}")


def test_status_of_the_recorded_fleet(rec):
    s = summary(rec, timedelta(minutes=5))
    assert s["accounts"]["total"] == 3
    assert s["accounts"]["conditions"]["Ready"]["True"] == 3 and s["drifting"] == []
    repair = carol(rec)["status"]["route"]["lastRepair"]
    r = s["repairs"]
    # carol's one repair (it is both lastRepair and the newest repairHistory entry: counted once)
    assert r["count"] == 1 and r["p50Ms"] == r["p99Ms"] == repair["durationMs"]
    assert r["methods"] == {repair["method"]: 1} and r["triggers"] == {repair["trigger"]: 1}
    assert r["events"]["RouteDrift"] == 1 and r["events"]["RouteRepaired"] == 1
    assert {tuple(a["accounts"]) for a in s["agents"]} == {("alice", "bob"), ("carol",)}
    for a in s["agents"]:
        (p,) = a["pods"]
        assert p["ready"] and p["memoryBytes"] == rec["memory"][(a["namespace"], p["name"])]
    text = fleet.render(s, wide=True)
    assert "recreate-account" in text and "carol" in text


def test_the_window_moves_on(rec):
    s = summary(rec, timedelta(hours=2))
    assert s["repairs"]["count"] == 0 and s["repairs"]["p50Ms"] is None
    assert s["repairs"]["events"] == {"RouteDrift": 0, "RouteRepaired": 0}
    assert summary(rec, timedelta(hours=2), window=3 * 3600)["repairs"]["count"] == 1


def test_describe_of_the_recorded_drift(rec):
    st = timeline.story(carol(rec), rec["events"])
    times = [e["time"] for e in st["timeline"]]
    assert times == sorted(times)
    what = [e["what"] for e in st["timeline"]]
    i_drift = next(i for i, w in enumerate(what) if w.startswith("route drift seen"))
    i_start = next(i for i, w in enumerate(what) if w.startswith("repair started"))
    i_done = next(i for i, w in enumerate(what) if w.startswith("repair repaired"))
    assert i_drift < i_start < i_done
    ev = [e for e in st["timeline"] if e["what"].startswith("event ")]
    assert [e["what"].split(":")[0] for e in ev] == ["event Warning RouteDrift", "event Normal RouteRepaired"]
    assert all(e["precision"] == "s" for e in ev)  # the apiserver's event times have no fraction
    assert st["routeStatus"]["inSync"] is True and st["ladder"]["phase"] == "Idle"


def test_doctor_on_the_recorded_objects():
    for name, want in (("after-drift", 0), ("missing-secret", 1)):
        d = load(name)
        ns = o.namespace(d["accounts"][0])
        ops = d["operators"]
        checks = doctor.verdicts(doctor.Facts(crd=d["crd"], operators=ops, deployments=d["deployments"],
                                              pods=d["pods"], accounts=d["accounts"], namespaces=[ns]))
        assert doctor.exit_code(checks) == want, checks
        by = {(c["check"], c["subject"]): c for c in checks}
        assert by[("operator", f"{ns}/{o.name(ops[0])}")]["status"] == "ok"
        assert by[("crd", "")]["status"] == "ok"
        if want:
            dave = by[("account", f"{ns}/dave")]
            assert dave["status"] == "fail" and "CredentialsMissing" in dave["message"]
