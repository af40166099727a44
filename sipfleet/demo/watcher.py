"""The status watcher: a real API watch on one SipAccount that records, for each field the verdict and the
timeline use, when it changed and to what (the status history). :func:`view` (pure) picks those fields."""

from __future__ import annotations

import threading
import time
from typing import Any

#: one entry of the status history: (time the watch delivered it, field, new value)
Change = tuple[float, str, Any]


def condition(obj: dict, typ: str) -> dict:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == typ:
            return c
    return {}


def view(obj: dict) -> dict[str, Any]:
    """The fields of a SipAccount the demo follows, as comparable values."""
    st = obj.get("status") or {}
    route = st.get("route") or {}
    ladder = st.get("ladder") or {}
    rep = route.get("lastRepair") or {}
    ris = condition(obj, "RouteInSync")
    return {
        "inSync": route.get("inSync"),
        "firstHop": route.get("firstHop"),
        "effective": tuple(route.get("effective") or ()),
        "lastDriftAt": route.get("lastDriftAt"),
        "lastRepair": (rep.get("method"), rep.get("trigger"), rep.get("result"), rep.get("startedAt"),
                       rep.get("completedAt"), rep.get("durationMs")) if rep else None,
        "RouteInSync": (ris.get("status"), ris.get("reason")),
        "Registered": condition(obj, "Registered").get("status"),
        "ladder": (ladder.get("phase"), ladder.get("token")),
        "ladderLast": (ladder.get("lastMethod"), ladder.get("lastDurationMs")),
        "registration": (st.get("registration") or {}).get("state"),
    }


def changes_of(previous: dict[str, Any] | None, current: dict[str, Any], at: float) -> list[Change]:
    """The history entries one new view adds (every field, the first time). Pure."""
    return [(at, k, v) for k, v in current.items() if previous is None or k not in previous or previous[k] != v]


class StatusWatcher(threading.Thread):
    def __init__(self, cluster, namespace: str, name: str):
        super().__init__(name="demo-status-watcher", daemon=True)
        self.cluster = cluster
        self.namespace = namespace
        self.account = name
        self._changes: list[Change] = []
        self._last: dict[str, Any] | None = None
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self.started_watching = threading.Event()

    def _observe(self, obj: dict) -> None:
        current = view(obj)
        with self._lock:
            self._changes += changes_of(self._last, current, time.time())
            self._last = current

    def run(self) -> None:
        from kubernetes import client, watch

        from ..api.models import GROUP, PLURAL, VERSION

        api = self.cluster.api_client()
        try:
            custom = client.CustomObjectsApi(api)
            sel = f"metadata.name={self.account}"
            while not self._halt.is_set():
                try:
                    lst = custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL,
                                                               field_selector=sel)
                    for obj in lst.get("items", []):
                        self._observe(obj)
                    rv = lst["metadata"]["resourceVersion"]
                    self.started_watching.set()
                    while not self._halt.is_set():
                        w = watch.Watch()
                        for ev in w.stream(custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace,
                                           PLURAL, field_selector=sel, resource_version=rv, timeout_seconds=2,
                                           _request_timeout=10):
                            obj = ev["object"]
                            if ev["type"] == "ERROR":
                                raise RuntimeError(str(obj))
                            rv = obj["metadata"]["resourceVersion"]
                            if ev["type"] in ("ADDED", "MODIFIED"):
                                self._observe(obj)
                            if self._halt.is_set():
                                w.stop()
                except Exception:  # noqa: BLE001 - expired resourceVersion, a dropped stream: list again
                    self._halt.wait(0.2)
        finally:
            api.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(15)

    def history(self) -> list[Change]:
        with self._lock:
            return list(self._changes)

    def current(self, key: str) -> Any:
        with self._lock:
            return (self._last or {}).get(key)
