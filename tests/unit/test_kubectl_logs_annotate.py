"""sipfleet.kubectl.agentlogs (one account's lines of an agent log) and sipfleet.kubectl.annotate (the patches)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from sipfleet.kubectl import agentlogs, annotate

LOG = "\n".join([
    json.dumps({"time": "2026-12-02T04:00:01.000Z", "level": "info", "logger": "sipfleet_agent.cluster",
                "msg": "agent starting (cluster)", "agent": "sipfleet-agent-x-0", "namespace": "demo"}),
    json.dumps({"time": "2026-12-02T04:00:02.000Z", "level": "info", "logger": "sipfleet_agent.engine",
                "msg": "account created", "account": "alice", "aor": "sip:alice@lab", "mode": "prevent"}),
    json.dumps({"time": "2026-12-02T04:00:02.100Z", "level": "info", "logger": "sipfleet_agent.engine",
                "msg": "account created", "account": "alice2", "aor": "sip:alice2@lab", "mode": "prevent"}),
    json.dumps({"time": "2026-12-02T04:00:02.200Z", "level": "info", "logger": "sipfleet_agent.engine",
                "msg": "account created", "account": "bob", "aor": "sip:bob@lab", "mode": "prevent"}),
    json.dumps({"time": "2026-12-02T04:00:03.000Z", "level": "warning", "logger": "sipfleet_agent.cluster",
                "msg": "status patch for demo/alice failed: 409 Conflict"}),
    json.dumps({"time": "2026-12-02T04:00:04.000Z", "level": "info", "logger": "sipfleet_agent.engine",
                "msg": "repair repaired", "account": "alice", "method": "recreate-account", "duration_ms": 257.0}),
    "",
    "plain text line about demo/alice",
    "plain text line about demo/bob",
    "{not json but about demo/alice",
])


def test_only_the_accounts_lines():
    lines = agentlogs.filter_lines(LOG, "demo", "alice")
    msgs = [(doc or {}).get("msg", raw) for raw, doc in lines]
    assert msgs == ["account created", "status patch for demo/alice failed: 409 Conflict", "repair repaired",
                    "plain text line about demo/alice", "{not json but about demo/alice"]
    assert [d.get("account") for _, d in lines if d and "account" in d] == ["alice", "alice"]  # never alice2
    assert agentlogs.filter_lines(LOG, "demo", "carol") == []


def test_human_form():
    (raw, doc), *_ = agentlogs.filter_lines(LOG, "demo", "alice")
    assert agentlogs.human(raw, doc) == "2026-12-02T04:00:02.000Z info    account created aor=sip:alice@lab mode=prevent"
    assert agentlogs.human(raw, doc, pod="p-1").split()[2] == "p-1"
    assert agentlogs.human("plain", None) == "plain"


NOW = datetime(2026, 12, 2, 4, 45, 1, 123000, tzinfo=timezone.utc)


def test_tokens_are_new_each_time():
    assert annotate.token(NOW, "3f9a1c") == "20261202T044501.123Z-3f9a1c"
    assert annotate.token(NOW, "aaaaaa") != annotate.token(NOW, "bbbbbb")


def test_patches():
    assert annotate.patch("repair", "v1") == {"metadata": {"annotations": {"sipfleet.io/repair": "v1"}}}
    assert annotate.patch("reregister", "v2") == {"metadata": {"annotations": {"sipfleet.io/reregister": "v2"}}}
    assert annotate.patch("pause") == {"metadata": {"annotations": {"sipfleet.io/paused": "true"}}}
    assert annotate.patch("resume") == {"metadata": {"annotations": {"sipfleet.io/paused": None}}}
    with pytest.raises(ValueError):
        annotate.patch("repair")
    with pytest.raises(ValueError):
        annotate.patch("delete", "x")


def test_already():
    paused = {"metadata": {"annotations": {"sipfleet.io/paused": "true"}}}
    running = {"metadata": {}}
    assert annotate.already("pause", paused) and not annotate.already("pause", running)
    assert annotate.already("resume", running) and not annotate.already("resume", paused)
    assert not annotate.already("repair", paused)
