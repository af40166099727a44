"""sipfleet.kubectl.fleet: the fleet summary of ``kubectl sipfleet status`` from recorded-shape objects."""

from __future__ import annotations

from datetime import datetime, timezone

from sipfleet.kubectl import fleet
from tests.unit import kubectl_objects as k

NOW = datetime(2026, 12, 2, 5, 0, 0, tzinfo=timezone.utc)


def objects():
    drifting_route = {"mode": "account", "desired": ["sip:10.213.201.1:5060;lr"],
                      "effective": ["sip:10.213.201.3:5060;lr"], "firstHop": "udp:10.213.201.3:5060",
                      "inSync": False, "lastDriftAt": "2026-12-02T04:59:50Z",
                      "lastRepair": k.repair("2026-12-02T04:40:00Z", "2026-12-02T04:40:00.300Z", 300.0),
                      "repairHistory": [k.repair("2026-12-02T03:00:00Z", "2026-12-02T03:00:00.100Z", 100.0),
                                        k.repair("2026-12-02T04:20:00Z", "2026-12-02T04:20:00.200Z", 200.0),
                                        k.repair("2026-12-02T04:40:00Z", "2026-12-02T04:40:00.300Z", 300.0)]}
    accounts = [
        k.account("alice", k.AGENT_A, f"{k.AGENT_A}-x1"),
        k.account("bob", k.AGENT_A, f"{k.AGENT_A}-x1", annotations={"sipfleet.io/paused": "true"},
                  conditions=[k.cond("Ready", "False", "Paused", "2026-12-02T04:50:00Z", "paused")]
                  + k.healthy_conditions()[1:]),
        k.account("dave", k.AGENT_D, f"{k.AGENT_D}-y1", mode="account", route=drifting_route,
                  ladder={"phase": "RepairRequested", "attempts": 1, "token": "t2"},
                  conditions=[k.cond("Ready", "False", "RouteDrift", "2026-12-02T04:59:51Z"),
                              k.cond("Registered", "True", "Registered", "2026-12-02T04:00:05Z"),
                              k.cond("RouteInSync", "False", "RouteDrift", "2026-12-02T04:59:51Z"),
                              k.cond("AgentReady", "True", "AgentReady", "2026-12-02T04:00:03Z"),
                              k.cond("Degraded", "False", "AsExpected", "2026-12-02T04:00:01Z")]),
        k.account("erin", None, None, conditions=[]),
    ]
    accounts[3]["status"] = {}
    events = [k.event("dave", "RouteDrift", "Warning", "2026-12-02T04:20:00Z", "2026-12-02T04:59:51Z", count=3),
              k.event("dave", "RouteRepaired", "Normal", "2026-12-02T04:20:01Z", "2026-12-02T04:40:01Z", count=2),
              k.event("dave", "RouteRepaired", "Normal", "2026-12-02T02:00:00Z"),  # before the window
              k.event("dave", "Created", "Normal", "2026-12-02T04:30:00Z")]
    deps = [k.deployment(k.AGENT_A, ["alice", "bob"]), k.deployment(k.AGENT_D, ["dave"]),
            k.deployment("sipfleet-agent-cafe0000-0", ["erin"], ready=0)]
    pods = [k.pod(f"{k.AGENT_A}-x1", k.AGENT_A), k.pod(f"{k.AGENT_D}-y1", k.AGENT_D, restarts=2),
            k.pod("sipfleet-agent-cafe0000-0-z1", "sipfleet-agent-cafe0000-0",
                  unschedulable="0/1 nodes are available: 1 Insufficient memory.")]
    return accounts, events, deps, pods


def test_summary_counts_conditions_drift_repairs_agents():
    accounts, events, deps, pods = objects()
    memory = {("demo", f"{k.AGENT_A}-x1"): 64 << 20, ("demo", f"{k.AGENT_D}-y1"): 50 << 20}
    s = fleet.summarize(accounts, events, deps, pods, memory, None, NOW, 3600, "namespace demo")

    assert s["accounts"]["total"] == 4
    assert s["accounts"]["conditions"]["Ready"] == {"True": 1, "False": 2, "Unknown": 1}
    assert s["accounts"]["conditions"]["RouteInSync"] == {"True": 2, "False": 1, "Unknown": 1}
    assert [(r["name"], r["reason"]) for r in s["accounts"]["notReady"]] == [
        ("bob", "Paused"), ("dave", "RouteDrift"), ("erin", "NoConditions")]
    assert s["accounts"]["paused"] == ["demo/bob"]

    (d,) = s["drifting"]
    assert d["name"] == "dave" and d["ladder"] == "RepairRequested" and d["firstHop"] == "udp:10.213.201.3:5060"

    r = s["repairs"]
    # lastRepair is also the newest entry of repairHistory: counted once; the 03:00 one is outside the last hour
    assert r["count"] == 2 and r["repaired"] == 2 and r["failed"] == 0
    assert (r["p50Ms"], r["p99Ms"], r["maxMs"]) == (200.0, 300.0, 300.0)
    assert r["methods"] == {"recreate-account": 2} and r["triggers"] == {"operator": 2}
    assert r["events"] == {"RouteDrift": 3, "RouteRepaired": 2}

    agents = {a["name"]: a for a in s["agents"]}
    assert agents[k.AGENT_A]["accounts"] == ["alice", "bob"] and agents[k.AGENT_A]["ready"] == "1/1"
    assert agents[k.AGENT_A]["pods"][0]["memoryBytes"] == 64 << 20
    assert agents[k.AGENT_D]["pods"][0]["restarts"] == 2
    assert agents["sipfleet-agent-cafe0000-0"]["ready"] == "0/1"
    (u,) = s["unschedulable"]
    assert u["pod"] == "sipfleet-agent-cafe0000-0-z1" and "Insufficient memory" in u["message"]
    assert s["memory"] == "ok"


def test_a_wider_window_takes_older_repairs_and_memory_can_be_unavailable():
    accounts, events, deps, pods = objects()
    s = fleet.summarize(accounts, events, deps, pods, None, "403 Forbidden reading nodes/n/proxy/stats/summary",
                        NOW, 4 * 3600, "namespace demo")
    assert s["repairs"]["count"] == 3 and s["repairs"]["p50Ms"] == 200.0 and s["repairs"]["p99Ms"] == 300.0
    assert s["repairs"]["events"]["RouteRepaired"] == 3
    assert s["memory"].startswith("n/a (403 Forbidden")
    assert all(p["memoryBytes"] is None for a in s["agents"] for p in a["pods"])
    text = fleet.render(s)
    assert "memory n/a (403 Forbidden" in text
    assert "n/a" in [line.split()[-1] for line in text.splitlines() if k.AGENT_A in line][0]


def test_render_is_a_readable_table():
    accounts, events, deps, pods = objects()
    s = fleet.summarize(accounts, events, deps, pods, {}, None, NOW, 3600, "namespace demo")
    text = fleet.render(s)
    assert "\x1b[" not in text
    lines = text.splitlines()
    assert lines[0] == "ACCOUNTS (4 in namespace demo)"
    header = lines[1]
    assert header.split() == ["CONDITION", "HEALTHY", "UNHEALTHY", "UNKNOWN"]
    ready = next(line for line in lines if line.startswith("Ready "))
    assert ready.split() == ["Ready", "1", "2", "1"]
    # columns line up under their headers
    assert ready.index("1") == header.index("HEALTHY")
    assert "DRIFTING NOW (1)" in text and "REPAIRS (last 1h)" in text and "200 ms" in text and "300 ms" in text
    assert "events: RouteDrift 3, RouteRepaired 2" in text
    assert "UNSCHEDULABLE AGENT PODS (1)" in text and "Insufficient memory" in text
    assert "paused: demo/bob" in text
    wide = fleet.render(s, wide=True)
    assert "NODE" in wide and "sipfleet-node-0" in wide and "recreate-account" in wide
    coloured = fleet.render(s, colour=True)
    assert "\x1b[31m" in coloured


def test_all_namespaces_adds_the_namespace_column():
    accounts, events, deps, pods = objects()
    s = fleet.summarize(accounts, events, deps, pods, {}, None, NOW, 3600, "all namespaces")
    text = fleet.render(s)
    assert "NAMESPACE   NAME" in text
