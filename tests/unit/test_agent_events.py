"""The agent's events: self-heals aggregated into one Event per account (count raised), others posted as they come.
The Kubernetes API is an in-memory stand-in recording calls (unit test of the recorder's logic)."""

from __future__ import annotations

import datetime as dt

from sipfleet.api.keys import EVENT_ROUTE_SELF_HEALED
from sipfleet_agent.k8s import events as ev
from sipfleet_agent.status import self_heals_between

NOW = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.timezone.utc)


class Api:
    def __init__(self):
        self.calls: list[tuple] = []
        self.store: dict[str, dict] = {}

    def create_namespaced_event(self, ns, body, _request_timeout=None):
        name = f"{body['metadata']['generateName']}{len(self.store)}"
        self.store[name] = {**body, "metadata": {**body["metadata"], "name": name}}
        self.calls.append(("create", name, body["count"]))
        return {"metadata": {"name": name}}

    def patch_namespaced_event(self, name, ns, patch, _request_timeout=None):
        if name not in self.store:
            e = RuntimeError("not found")
            e.status = 404
            raise e
        self.store[name].update(patch)
        self.calls.append(("patch", name, patch["count"]))


def body(account, reason=EVENT_ROUTE_SELF_HEALED, count=1, message="m"):
    return ev.event_body("ns", account, "Normal", reason, message, pod="p", now=NOW, count=count)


def test_coalesce_merges_aggregated_records_per_account_only():
    out = ev.coalesce([body("a", message="1"), body("b"), body("a", count=2, message="3"),
                       body("a", reason="WorkerRestarted"), body("a", reason="WorkerRestarted")])
    assert [(b["involvedObject"]["name"], b["reason"], b["count"]) for b in out] == [
        ("a", EVENT_ROUTE_SELF_HEALED, 3), ("b", EVENT_ROUTE_SELF_HEALED, 1), ("a", "WorkerRestarted", 1),
        ("a", "WorkerRestarted", 1)]
    assert out[0]["message"] == "3"


def test_self_heals_are_one_event_with_a_count():
    api, clock = Api(), [100.0]
    rec = ev.EventRecorder(api, "ns", "p", clock=lambda: clock[0], start=False)
    rec.post([body("a")])
    rec.post([body("a"), body("a")])
    clock[0] += 30
    rec.post([body("a", count=4)])
    assert api.calls == [("create", "a.0", 1), ("patch", "a.0", 3), ("patch", "a.0", 7)]
    assert api.store["a.0"]["count"] == 7 and len(api.store) == 1
    # long after the last one: a new Event; an event that expired meanwhile (404): a new one too
    clock[0] += ev.AGGREGATE_WINDOW_S + 1
    rec.post([body("a")])
    del api.store["a.1"]
    rec.post([body("a")])
    assert [c[0] for c in api.calls[3:]] == ["create", "create"]
    # other reasons are never aggregated
    rec.post([body("a", reason="WorkerRestarted"), body("a", reason="WorkerRestarted")])
    assert [c[0] for c in api.calls[5:]] == ["create", "create"]


def test_self_heals_between_documents():
    doc = lambda n: {"route": {"selfHealCount": n}}  # noqa: E731
    assert self_heals_between(None, doc(0)) == 0
    assert self_heals_between(None, doc(2)) == 2
    assert self_heals_between(doc(2), doc(5)) == 3
    assert self_heals_between(doc(5), doc(5)) == 0
    assert self_heals_between(doc(5), doc(1)) == 1  # a restarted worker counts afresh
    assert self_heals_between(doc(1), {"route": {}}) == 0
