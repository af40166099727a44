"""The kopf namespace fix (sipfleet_operator/kopf_namespaces.py) on kopf's real Insights and revise code:

* the pinned kopf's own processor skips a namespace that reaches it only in the watch's listing (the race the
  fix exists for; if kopf fixes it, this test says so and the fix can go);
* with the fix, a listed namespace that matches is served, one that does not match is not, a deleted one is
  dropped, one whose deletion is blocked stays;
* ``install()`` swaps the processor kopf's observer calls, once, and leaves a kopf of another shape alone.
"""

from __future__ import annotations

import asyncio

from kopf._cogs.structs import references
from kopf._core.reactor import observation

from sipfleet_operator import kopf_namespaces

PATTERNS = ["op-*"]
KOPF_OWN = observation.process_discovered_namespace_event


def ns(name: str, *, deleting: bool = False, blocked: bool = False) -> dict:
    meta: dict = {"name": name}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-03T09:06:15Z"
    status = {"conditions": [{"type": "NamespaceContentRemaining", "status": "True" if blocked else "False",
                              "reason": "SomeResourcesRemain", "message": "pods remain"}]} if deleting else {}
    return {"metadata": meta, "status": status}


def served(processor, *events: dict) -> set:
    async def run() -> set:
        insights = references.Insights()
        for event in events:
            await processor(raw_event=event, namespaces=PATTERNS, insights=insights)
        return set(insights.namespaces)
    return asyncio.run(run())


def test_the_pinned_kopf_skips_a_namespace_seen_only_in_the_watch_listing():
    assert served(KOPF_OWN, {"type": None, "object": ns("op-late")}) == set()


def test_with_the_fix_a_listed_namespace_that_matches_is_served():
    assert served(kopf_namespaces.process_namespace_event,
                  {"type": None, "object": ns("op-late")}, {"type": None, "object": ns("other")}) == {"op-late"}


def test_with_the_fix_watch_events_still_add_and_drop():
    fix = kopf_namespaces.process_namespace_event
    assert served(fix, {"type": "ADDED", "object": ns("op-a")}, {"type": "DELETED", "object": ns("op-a")}) == set()
    assert served(fix, {"type": "ADDED", "object": ns("op-a")},
                  {"type": "MODIFIED", "object": ns("op-a", deleting=True, blocked=True)}) == {"op-a"}
    assert served(fix, {"type": "ADDED", "object": ns("op-a")},
                  {"type": None, "object": ns("op-a", deleting=True)}) == set()


def test_install_swaps_the_processor_kopfs_observer_calls(monkeypatch):
    monkeypatch.setattr(observation, "process_discovered_namespace_event", KOPF_OWN)
    assert kopf_namespaces.install() is True
    assert observation.process_discovered_namespace_event is kopf_namespaces.process_namespace_event
    assert kopf_namespaces.install() is True  # twice: still the fix, not wrapped again


def test_install_leaves_a_kopf_of_another_shape_alone(monkeypatch, caplog):
    async def other(*, event, insights):  # not the parameters the fix was written against
        return None

    monkeypatch.setattr(observation, "process_discovered_namespace_event", other)
    assert kopf_namespaces.install() is False
    assert observation.process_discovered_namespace_event is other
    assert "left as it is" in caplog.text
