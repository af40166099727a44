"""The demo's pure parts besides the verdict: the examples as applied, the agent log rows, the status watcher's
view and history, the timeline table, and the one line a non-root user gets."""

from __future__ import annotations

import argparse
import json

import pytest
import yaml

from sipfleet.demo import agentlog, cli, examples, watcher
from sipfleet.demo.timeline import Row, render


def test_examples_rewritten_to_the_lab_subnet_and_filtered():
    manifest, accounts, secrets = examples.render_examples("10.213.205", {"alice"}, "demo-ns")
    assert {a["metadata"]["name"] for a in accounts} == {"alice", "dave"}  # the routeMode account one always
    assert {s["metadata"]["name"] for s in secrets} == {"alice-sip", "dave-sip"}
    assert "10.213.201." not in manifest and "sip:10.213.205.1:5060;lr" in manifest
    assert all(d["metadata"]["namespace"] == "demo-ns" for d in yaml.safe_load_all(manifest))
    assert examples.drift_account(accounts)["metadata"]["name"] == "dave"
    _, every, _ = examples.render_examples(examples.EXAMPLE_SUBNET, None, "default")
    assert len(every) == 4
    with pytest.raises(examples.ExampleError, match="no example SipAccount named nobody"):
        examples.render_examples(examples.EXAMPLE_SUBNET, {"nobody"}, "default")
    assert examples.parse_accounts_option("all") is None
    assert examples.parse_accounts_option("alice, bob,") == {"alice", "bob"}
    assert examples.user_of("sip:dave@lab.sipfleet.test") == "dave"


def _cri(obj: dict, t: str = "2026-12-01T22:56:48.117Z") -> str:
    return f"{t[:-1]}123456Z stderr F {json.dumps(obj)}"


def test_agent_log_rows_from_the_cri_log():
    lines = [
        _cri({"time": "2026-12-01T22:56:46.104Z", "msg": "local link lost: handleIpChange when it is back"}),
        _cri({"time": "2026-12-01T22:56:48.117Z", "msg": "handleIpChange called", "why": "link-change"}),
        _cri({"time": "2026-12-01T22:56:48.118Z", "msg": "route drift: REGISTER sent off the configured route",
              "account": "dave"}),
        _cri({"time": "2026-12-01T22:56:48.119Z", "msg": "route drift: REGISTER sent off the configured route",
              "account": "erin"}),
        _cri({"time": "2026-12-01T22:56:49.000Z", "msg": "registration registered", "account": "dave"}),
        "2026-12-01T22:56:49.5Z stderr F not json",
        "garbage",
    ]
    since = agentlog.parse_time("2026-12-01T22:56:46.000Z")
    rows = agentlog.rows(lines, since, account="dave")
    assert [r.where for r in rows] == ["agent", "agent", "agent"]
    assert rows[0].what.startswith("noticed its link down")
    assert rows[1].what == "handleIpChange() called (link-change)"
    assert rows[2].at == agentlog.parse_time("2026-12-01T22:56:48.118Z")
    assert agentlog.rows(lines, since + 10) == []
    assert agentlog.parse_cri_line("2026 stderr F {") is None


def test_watcher_view_and_history():
    obj = {"status": {"route": {"inSync": False, "firstHop": "udp:10.213.202.3:5060",
                                "effective": ["sip:10.213.202.3:5060;lr"],
                                "lastRepair": {"method": "recreate-account", "trigger": "operator",
                                               "result": "repaired", "startedAt": "a", "completedAt": "b",
                                               "durationMs": 242.0}},
                      "ladder": {"phase": "RepairRequested", "token": "t1", "lastMethod": "recreate-account"},
                      "conditions": [{"type": "RouteInSync", "status": "False", "reason": "RouteDrift"}]}}
    v = watcher.view(obj)
    assert v["inSync"] is False and v["effective"] == ("sip:10.213.202.3:5060;lr",)
    assert v["RouteInSync"] == ("False", "RouteDrift") and v["ladder"] == ("RepairRequested", "t1")
    assert v["lastRepair"][0] == "recreate-account" and v["ladderLast"] == ("recreate-account", None)
    first = watcher.changes_of(None, v, 1.0)
    assert len(first) == len(v)  # every field once
    assert watcher.changes_of(v, v, 2.0) == []
    later = dict(v, inSync=True)
    assert watcher.changes_of(v, later, 3.0) == [(3.0, "inSync", True)]


def test_timeline_in_time_order_with_offsets():
    text = render([Row(10.5, "wire E", "second"), Row(10.0, "lab R", "first")], origin=10.0)
    lines = text.splitlines()
    assert lines[0].split() == ["time", "(UTC)", "+s", "where", "what"]
    assert "0.000" in lines[1] and lines[1].endswith("first")
    assert "0.500" in lines[2] and lines[2].endswith("second")


def test_not_root_gets_one_line(monkeypatch, capsys):
    monkeypatch.setattr(cli.os, "geteuid", lambda: 1000)
    args = argparse.Namespace(down=False, keep=True, timeout=600, name="demo", lab_slot=None, namespace="default",
                              state_dir=None, accounts="all", record=None)
    assert cli.main(args) == 1
    out = capsys.readouterr().out
    assert out.strip() == cli.NEEDS_ROOT and "root" in out and len(out.strip().splitlines()) == 1
