"""Operator HA: which replica acts (peering.is_active, the way kopf decides), priorities, and the activation that
builds the engine only on the active replica and rebuilds it after a pause."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

from sipfleet.api import kerrors
from sipfleet_operator.activation import Activation
from sipfleet_operator.peering import Leadership, auto_priority, is_active, peering_objects

NOW = datetime(2026, 12, 2, 12, 0, 0, tzinfo=timezone.utc)


def peer(priority: int, seen_ago: float = 1, lifetime: int = 15) -> dict:
    return {"priority": priority, "lifetime": lifetime, "lastseen": (NOW - timedelta(seconds=seen_ago)).isoformat()}


def test_the_highest_live_priority_acts():
    status = {"a": peer(10), "b": peer(20)}
    assert is_active(status, "b", 20, NOW) and not is_active(status, "a", 10, NOW)


def test_equal_priorities_pause_both_like_kopf():
    status = {"a": peer(5), "b": peer(5)}
    assert not is_active(status, "a", 5, NOW) and not is_active(status, "b", 5, NOW)


def test_a_dead_peer_does_not_count():
    status = {"a": peer(10), "b": peer(20, seen_ago=16)}  # lifetime 15 s passed
    assert is_active(status, "a", 10, NOW)


def test_alone_or_no_status_is_active_and_junk_is_ignored():
    assert is_active(None, "a", 1, NOW) and is_active({"a": peer(1)}, "a", 1, NOW)
    assert is_active({"x": "junk", "y": {"priority": "high", "lastseen": NOW.isoformat()},
                      "z": {"priority": 9, "lastseen": "yesterday"}}, "a", 1, NOW)


def test_auto_priorities_are_stable_positive_and_differ():
    names = [f"sipfleet-5b69f7dd4b-{i:05d}" for i in range(2000)]
    prios = [auto_priority(n) for n in names]
    assert all(1 <= p < 2**31 for p in prios) and len(set(prios)) == len(prios)
    assert auto_priority(names[0]) == prios[0]


def test_peering_objects():
    assert peering_objects(()) == [("ClusterKopfPeering", None)]
    assert peering_objects(("a", "b")) == [("KopfPeering", "a"), ("KopfPeering", "b")]


class FakeClient:
    def __init__(self):
        self.objects: dict = {}
        self.fail = False
        self.reads = 0

    async def get(self, kind, ns, name):
        self.reads += 1
        if self.fail:
            raise kerrors.ServerError(503, {}, "GET")
        return self.objects.get((kind, ns, name))

    async def create(self, obj):
        key = (obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"])
        if key in self.objects:
            raise kerrors.AlreadyExists(409, {"reason": "AlreadyExists"}, "POST")
        self.objects[key] = dict(obj)


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def leadership(client, clock, standalone=False, me="me", priority=10):
    return Leadership(client, name="sipfleet", namespaces=(), identity=me, priority=priority, standalone=standalone,
                      clock=lambda: NOW, monotonic=clock)


def test_leadership_creates_the_peering_object_and_caches_reads():
    async def run():
        c, clock = FakeClient(), Clock()
        lead = leadership(c, clock)
        await lead.ensure_objects()
        await lead.ensure_objects()  # AlreadyExists is fine
        obj = c.objects[("ClusterKopfPeering", None, "sipfleet")]
        obj["status"] = {"me": peer(10), "other": peer(20)}
        assert await lead.active() is False
        obj["status"] = {"me": peer(10)}
        assert await lead.active() is False and c.reads == 1  # cached
        clock.t = 2
        assert await lead.active() is True and c.reads == 2
        c.fail = True
        clock.t = 4
        assert await lead.active() is True  # a failed read keeps the last answer

    asyncio.run(run())


def test_a_replica_that_cannot_read_the_peering_at_first_stands_by():
    async def run():
        c, clock = FakeClient(), Clock()
        c.fail = True
        assert await leadership(c, clock).active() is False
        assert await leadership(c, clock, standalone=True).active() is True

    asyncio.run(run())


class FakeEngine:
    built = 0

    def __init__(self):
        FakeEngine.built += 1
        self.loaded = self.background = self.stopped = False

    async def load(self):
        self.loaded = True

    def start_background(self):
        self.background = True

    async def stop(self):
        self.stopped = True


def test_activation_builds_on_the_active_replica_only_and_rebuilds_after_a_pause():
    async def run():
        c, clock = FakeClient(), Clock()
        lead = leadership(c, clock)
        act = Activation(FakeEngine, lead)
        await lead.ensure_objects()
        obj = c.objects[("ClusterKopfPeering", None, "sipfleet")]
        obj["status"] = {"me": peer(10), "other": peer(20)}
        await act.check()
        assert act.current is None  # a standby reads and writes nothing
        clock.t, obj["status"] = 2, {"me": peer(10)}
        await act.check()
        first = act.current
        assert first is not None and first.loaded and first.background
        await act.check()
        assert act.current is first  # stays while active
        clock.t, obj["status"] = 4, {"me": peer(10), "new": peer(30)}
        await act.check()
        assert act.current is None and first.stopped
        clock.t, obj["status"] = 6, {"me": peer(10)}
        await act.check()
        assert act.current is not None and act.current is not first and act.current.loaded  # a fresh read

    asyncio.run(run())


def test_a_handler_gets_an_engine_even_before_the_watch_noticed():
    async def run():
        c, clock = FakeClient(), Clock()
        act = Activation(FakeEngine, leadership(c, clock))
        eng = await act.engine()  # kopf called a handler: kopf knows we are active
        assert eng.loaded and await act.engine() is eng

    asyncio.run(run())


def test_standalone_builds_at_start():
    async def run():
        c, clock = FakeClient(), Clock()
        act = Activation(FakeEngine, leadership(c, clock, standalone=True))
        await act.start()
        assert act.current is not None and c.objects == {}
        await act.stop()
        assert act.current is None

    asyncio.run(run())
