"""The agent's status writer against a recording stand-in for the CustomObjectsApi (unit test of its logic):
documents of one account within its window are one patch with the last state; other accounts are not held up."""

from __future__ import annotations

import threading
import time

from sipfleet_agent.k8s.statuswriter import StatusWriter
from sipfleet_agent.status import apply_merge_patch


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Custom:
    """The status subresource of SipAccounts: merge patches applied to what it holds; no reads expected."""

    def __init__(self, held: dict | None = None) -> None:
        self.patches: list[tuple[str, dict]] = []
        self.lock = threading.Lock()
        self.held: dict[str, dict] = dict(held or {})
        self.reads = 0

    def get_namespaced_custom_object_status(self, group, version, ns, plural, name, **_):
        self.reads += 1
        return {"status": self.held.get(name, {})}

    def patch_namespaced_custom_object_status(self, group, version, ns, plural, name, body, **_):
        with self.lock:
            self.patches.append((name, body["status"]))
            self.held[name] = apply_merge_patch(self.held.get(name, {}), body["status"])

    def count(self, name: str | None = None) -> int:
        with self.lock:
            return len([p for p in self.patches if name is None or p[0] == name])


def wait_until(pred, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def reg(state: str, code: int | None = None) -> dict:
    return {"registration": {"state": state, **({"code": code} if code else {})}}


def test_documents_within_an_accounts_window_are_one_patch_the_last_one():
    clock, api = Clock(), Custom()
    w = StatusWriter(api, "ns", window_s=0.15, clock=clock)
    try:
        w.submit(("ns", "a"), "a", reg("Registering"))  # after a quiet spell: at once
        wait_until(lambda: api.count("a") == 1)
        w.submit(("ns", "a"), "a", reg("Registered", 200))  # within the window: waits ...
        w.submit(("ns", "a"), "a", {**reg("Registered", 200), "route": {"inSync": False}})
        w.submit(("ns", "a"), "a", {**reg("Registered", 200), "route": {"inSync": True, "selfHealCount": 1}})
        w.submit(("ns", "b"), "b", reg("Registered", 200))  # another account is not held up
        wait_until(lambda: api.count("b") == 1)
        time.sleep(0.3)  # real time passes, the (fake) window has not ended
        assert api.count("a") == 1
        clock.t += 0.2
        wait_until(lambda: api.count("a") == 2)
        time.sleep(0.2)
        assert api.count("a") == 2  # ... and then one patch, with the last state
        last = [p for n, p in api.patches if n == "a"][-1]
        assert last["registration"]["state"] == "Registered" and last["route"] == {"inSync": True, "selfHealCount": 1}
    finally:
        clock.t += 1
        w.stop(2)
    assert w.patches == 3


def test_stop_writes_what_is_pending_without_waiting_for_the_window():
    clock, api = Clock(), Custom()
    w = StatusWriter(api, "ns", window_s=60, clock=clock)
    w.submit(("ns", "a"), "a", reg("Registered", 200))
    wait_until(lambda: api.count("a") == 1)
    w.submit(("ns", "a"), "a", reg("Unregistered"))  # the last word of an agent that stops
    w.stop(2)
    assert api.count("a") == 2 and api.patches[-1][1]["registration"]["state"] == "Unregistered"


def test_the_first_patch_replaces_what_a_previous_agent_left_without_reading_it():
    stale = {"conditions": [{"type": "Ready", "status": "True"}],  # the operator's: untouched
             "registration": {"state": "Registered", "code": 200, "expiresAt": "2026-01-01T00:05:00Z"},
             "route": {"mode": "prevent", "inSync": False, "lastDriftAt": "2026-01-01T00:00:00.000Z",
                       "lastRepair": {"method": "recreate-account", "trigger": "self-heal", "startedAt": "x",
                                      "completedAt": "y", "result": "repaired"}},
             "agent": {"name": "old", "pod": "old-pod", "repairTokenAck": "t1"}}
    api = Custom({"a": stale})
    w = StatusWriter(api, "ns", window_s=0.0)
    doc = {"registration": {"state": "Registering"},
           "route": {"mode": "prevent", "inSync": True,
                     "lastRepair": {"method": "recreate-account", "trigger": "operator", "startedAt": "z",
                                    "result": "in-progress"}},
           "agent": {"name": "new", "pod": "new-pod"}}
    w.submit(("ns", "a"), "a", doc)
    wait_until(lambda: api.count("a") == 1)
    w.submit(("ns", "a"), "a", {**doc, "registration": {"state": "Registered", "code": 200}})
    wait_until(lambda: api.count("a") == 2)
    w.stop(2)
    assert api.reads == 0
    held = api.held["a"]
    assert held["conditions"] == stale["conditions"]
    assert held["registration"] == {"state": "Registered", "code": 200}
    assert held["route"] == doc["route"] and held["agent"] == doc["agent"]
    assert api.patches[1][1] == {"registration": {"code": 200, "state": "Registered"}}  # then only the change


class SlowCustom(Custom):
    """Each patch takes ``delay`` s; records how many were in flight at once, overall and per account."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.flying: dict[str, int] = {}
        self.most = 0
        self.most_one_account = 0

    def patch_namespaced_custom_object_status(self, group, version, ns, plural, name, body, **kw):
        with self.lock:
            self.flying[name] = self.flying.get(name, 0) + 1
            self.most = max(self.most, sum(self.flying.values()))
            self.most_one_account = max(self.most_one_account, self.flying[name])
        time.sleep(self.delay)
        with self.lock:
            self.flying[name] -= 1
        super().patch_namespaced_custom_object_status(group, version, ns, plural, name, body, **kw)


def test_a_burst_is_written_several_at_a_time_never_two_of_one_account():
    api = SlowCustom(delay=0.05)
    w = StatusWriter(api, "ns", window_s=0.0, threads=4)
    try:
        for i in range(16):
            w.submit(("ns", f"a{i}"), f"a{i}", reg("Registering"))
        for rnd in range(3):  # each account changes again while its patch may be in flight
            for i in range(16):
                w.submit(("ns", f"a{i}"), f"a{i}", reg("Registered", 200 + rnd))
        wait_until(lambda: all(api.held.get(f"a{i}", {}).get("registration", {}).get("code") == 202
                               for i in range(16)))
    finally:
        w.stop(5)
    assert 1 < api.most <= 4
    assert api.most_one_account == 1


class ThrottlingCustom(Custom):
    """Answers the first patch with 429 and Retry-After: 1; records when each patch was accepted."""

    def __init__(self) -> None:
        super().__init__()
        self.refused_at: float | None = None
        self.accepted: dict[str, float] = {}

    def patch_namespaced_custom_object_status(self, group, version, ns, plural, name, body, **kw):
        from kubernetes.client.exceptions import ApiException

        with self.lock:
            first = self.refused_at is None
            if first:
                self.refused_at = time.monotonic()
        if first:
            e = ApiException(status=429, reason="Too Many Requests")
            e.headers = {"Retry-After": "1"}
            raise e
        super().patch_namespaced_custom_object_status(group, version, ns, plural, name, body, **kw)
        with self.lock:
            self.accepted[name] = time.monotonic()


def test_a_429_pauses_every_thread_for_its_retry_after_then_the_document_is_written():
    api = ThrottlingCustom()
    w = StatusWriter(api, "ns", window_s=0.0, threads=4)
    try:
        w.submit(("ns", "a"), "a", reg("Registering"))
        wait_until(lambda: api.refused_at is not None)
        w.submit(("ns", "b"), "b", reg("Registering"))  # another account: it waits out the pause too
        wait_until(lambda: "a" in api.accepted and "b" in api.accepted)
    finally:
        w.stop(5)
    assert min(api.accepted.values()) - api.refused_at >= 0.9
    assert api.held["a"]["registration"]["state"] == "Registering"
