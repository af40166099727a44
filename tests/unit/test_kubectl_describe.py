"""sipfleet.kubectl.timeline: one account's route story, status and events merged and sorted."""

from __future__ import annotations

from sipfleet.kubectl import timeline
from tests.unit import kubectl_objects as k


def drifted_and_repaired():
    acc = k.account("dave", k.AGENT_D, f"{k.AGENT_D}-y1", mode="account",
                    route={"mode": "account", "desired": ["sip:10.213.201.1:5060;lr", "sip:10.213.201.3:5060;lr"],
                           "effective": ["sip:10.213.201.1:5060;lr"], "firstHop": "udp:10.213.201.1:5060",
                           "inSync": True, "observedAt": "2026-12-02T04:30:09.500Z",
                           "lastDriftAt": "2026-12-02T04:30:08.640Z",
                           "lastRepair": k.repair("2026-12-02T04:30:08.891Z", "2026-12-02T04:30:08.897Z", 257.0,
                                                  token="op:abc")},
                    ladder={"phase": "Idle", "attempts": 1, "token": "abc", "requestedAt": "2026-12-02T04:30:08.880Z",
                            "lastMethod": "recreate-account", "lastDurationMs": 257.0},
                    conditions=[k.cond("Ready", "True", "Ready", "2026-12-02T04:30:09Z"),
                                k.cond("Registered", "True", "Registered", "2026-12-02T04:00:05Z", "200 OK"),
                                k.cond("RouteInSync", "True", "InSync", "2026-12-02T04:30:09Z"),
                                k.cond("AgentReady", "True", "AgentReady", "2026-12-02T04:00:03Z"),
                                k.cond("Degraded", "False", "AsExpected", "2026-12-02T04:00:01Z")])
    events = [k.event("dave", "RouteDrift", "Warning", "2026-12-02T04:30:08Z",
                      message="REGISTER left along sip:10.213.201.3:5060;lr; requesting repair abc"),
              k.event("dave", "RouteRepaired", "Normal", "2026-12-02T04:30:09Z",
                      message="route back in sync (recreate-account, 257 ms)"),
              k.event("alice", "RouteDrift", "Warning", "2026-12-02T04:30:08Z"),  # someone else's
              k.event("dave", "RouteDrift", "Warning", "2026-12-02T04:30:08Z", ns="other")]  # another namespace's
    return acc, events


def test_story_merges_status_and_events_in_time_order():
    acc, events = drifted_and_repaired()
    s = timeline.story(acc, events)
    assert (s["namespace"], s["name"], s["agent"], s["routeMode"]) == ("demo", "dave", k.AGENT_D, "account")
    times = [e["time"] for e in s["timeline"]]
    assert times == sorted(times)
    what = [e["what"] for e in s["timeline"]]
    assert what[0] == "SipAccount created"
    order = ["event Warning RouteDrift", "route drift seen", "ladder Idle", "repair started: recreate-account",
             "repair repaired: recreate-account, 257 ms",
             # same second: the status first (the operator posts the event after its status patch)
             "condition RouteInSync=True", "event Normal RouteRepaired", "last REGISTER observed"]
    idx = [next(i for i, w in enumerate(what) if w.startswith(p)) for p in order]
    assert idx == sorted(idx), list(zip(order, idx))
    # only dave's events in dave's namespace
    assert sum(w.startswith("event Warning RouteDrift") for w in what) == 1
    drift = next(e for e in s["timeline"] if e["what"].startswith("route drift seen"))
    assert drift["level"] == "warning" and drift["time"] == "2026-12-02T04:30:08.640Z"


def test_repeated_events_show_first_and_last():
    acc, _ = drifted_and_repaired()
    events = [k.event("dave", "RouteDrift", "Warning", "2026-12-02T04:10:00Z", "2026-12-02T04:30:08Z", count=4)]
    what = [e["what"] for e in timeline.story(acc, events)["timeline"] if e["what"].startswith("event")]
    assert what == ["event Warning RouteDrift (first of 4)", "event Warning RouteDrift (last of 4)"]


def test_failed_registration_and_degraded_ladder_are_warnings():
    acc = k.account("erin", k.AGENT_A, "p", registration={"state": "Failed", "code": 403, "reason": "Forbidden",
                                                           "lastFailure": "2026-12-02T04:12:00Z"},
                    ladder={"phase": "Degraded", "attempts": 3, "requestedAt": "2026-12-02T04:13:00Z",
                            "nextAttemptAt": "2026-12-02T04:20:00Z"},
                    conditions=[k.cond("Degraded", "True", "RepairBackoff", "2026-12-02T04:13:00Z")])
    entries = timeline.story(acc, [])["timeline"]
    by = {e["what"]: e for e in entries}
    assert by["registration failed 403 Forbidden"]["level"] == "warning"
    assert by["ladder Degraded (attempt 3)"]["level"] == "warning"
    assert by["ladder: next attempt due"]["time"] == "2026-12-02T04:20:00.000Z"
    assert by["condition Degraded=True (RepairBackoff)"]["level"] == "warning"


def test_render_has_a_header_conditions_and_a_timeline():
    acc, events = drifted_and_repaired()
    text = timeline.render(timeline.story(acc, events))
    assert text.splitlines()[0] == "demo/dave"
    assert "AOR:        sip:dave@lab.sipfleet.test" in text
    assert "Ladder:     Idle, last recreate-account 257 ms" in text
    assert "TIME (UTC)" in text and "2026-12-02 04:30:08.640   agent" in text
    # conditions and events are precise to the second: shown without milliseconds
    ready = next(line for line in text.splitlines() if "condition Ready=True" in line)
    assert ready.startswith("2026-12-02 04:30:09       operator ")
    assert text.splitlines()[-1].startswith("(times without milliseconds")
    assert "\x1b[" not in text
    assert "\x1b[33m" in timeline.render(timeline.story(acc, events), colour=True)
