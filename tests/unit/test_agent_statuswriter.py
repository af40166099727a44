"""The agent's status writer against a recording stand-in for the CustomObjectsApi (unit test of its logic):
documents of one account within its window are one patch with the last state; other accounts are not held up."""

from __future__ import annotations

import threading
import time

from sipfleet_agent.k8s.statuswriter import StatusWriter


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Custom:
    def __init__(self) -> None:
        self.patches: list[tuple[str, dict]] = []
        self.lock = threading.Lock()

    def get_namespaced_custom_object_status(self, group, version, ns, plural, name, **_):
        return {"status": {"conditions": []}}

    def patch_namespaced_custom_object_status(self, group, version, ns, plural, name, body, **_):
        with self.lock:
            self.patches.append((name, body["status"]))

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
