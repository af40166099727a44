"""Kubernetes Events about SipAccounts (core/v1, e.g. Warning ``WorkerRestarted``), posted from their own thread.

Promise: :meth:`EventRecorder.record` never blocks the caller on the API; a failed post is logged and dropped
(events are best effort); messages are the supervisor's, which never carry credentials. Reasons in
``AGGREGATED`` (the agent's own route repairs, ``RouteSelfHealed``) are aggregated per account: the records
waiting in the queue are merged into one, and within ``AGGREGATE_WINDOW_S`` of the last post the existing Event
is patched (``count`` raised, ``lastTimestamp`` and message updated) instead of creating another one.
"""

from __future__ import annotations

import datetime as _dt
import logging
import queue
import threading
from typing import Any

from sipfleet.api.keys import EVENT_ROUTE_SELF_HEALED
from sipfleet.api.models import GROUP, KIND, VERSION
from . import API_TIMEOUT_S

LOG = logging.getLogger("sipfleet_agent.cluster")
AGGREGATED = frozenset({EVENT_ROUTE_SELF_HEALED})
AGGREGATE_WINDOW_S = 600.0


def _key(body: dict) -> tuple:
    return (body["metadata"]["namespace"], body["involvedObject"]["name"], body["reason"])


def coalesce(bodies: list[dict]) -> list[dict]:
    """Merge the aggregated records among ``bodies`` per (namespace, account, reason): counts summed, the first
    record's firstTimestamp, the last one's message and lastTimestamp; the others kept as they are, in order."""
    out: list[dict] = []
    merged: dict[tuple, dict] = {}
    for b in bodies:
        if b["reason"] not in AGGREGATED:
            out.append(b)
            continue
        k = _key(b)
        if k in merged:
            m = merged[k]
            m.update(count=m["count"] + b["count"], message=b["message"], lastTimestamp=b["lastTimestamp"])
        else:
            merged[k] = dict(b)
            out.append(merged[k])
    return out


def aggregate_patch(total: int, body: dict) -> dict:
    """The patch that makes an existing aggregated Event say ``total`` occurrences, the last one ``body``'s."""
    return {"count": total, "lastTimestamp": body["lastTimestamp"], "message": body["message"]}


def event_body(namespace: str, name: str, type_: str, reason: str, message: str, *, pod: str | None,
               now: _dt.datetime, count: int = 1) -> dict:
    ts = now.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    micro = now.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{name}.", "namespace": namespace},
        "involvedObject": {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": name, "namespace": namespace},
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": "sipfleet-agent", **({"host": pod} if pod else {})},
        "reportingComponent": "sipfleet-agent",
        "reportingInstance": pod or "sipfleet-agent",
        "action": reason,
        "firstTimestamp": ts,
        "lastTimestamp": ts,
        "eventTime": micro,
        "count": count,
    }


class EventRecorder:
    def __init__(self, core: Any, default_namespace: str, pod: str | None, clock: Any = None, start: bool = True):
        import time

        self.core = core
        self.ns = default_namespace
        self.pod = pod
        self.clock = clock or time.monotonic
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self.posted = 0
        #: aggregated events posted: (namespace, account, reason) -> (Event name, count, when posted)
        self._agg: dict[tuple, tuple[str, int, float]] = {}
        if start:
            threading.Thread(target=self._run, name="events", daemon=True).start()

    def record(self, namespace: str | None, name: str, type_: str, reason: str, message: str, count: int = 1) -> None:
        self._q.put(event_body(namespace or self.ns, name, type_, reason, message, pod=self.pod,
                               now=_dt.datetime.now(_dt.timezone.utc), count=count))

    def _run(self) -> None:
        while True:
            batch = [self._q.get()]
            while True:
                try:
                    batch.append(self._q.get_nowait())
                except queue.Empty:
                    break
            self.post(batch)

    def post(self, batch: list[dict]) -> None:
        """Post (or aggregate into existing Events) what ``batch`` records; the event thread's work."""
        for body in coalesce(batch):
            try:
                self._post_one(body)
                self.posted += 1
            except Exception as e:  # noqa: BLE001
                LOG.warning("event %s for %s not posted: %s", body["reason"], body["involvedObject"]["name"],
                            getattr(e, "reason", e))

    def _post_one(self, body: dict) -> None:
        ns = body["metadata"]["namespace"]
        if body["reason"] not in AGGREGATED:
            self.core.create_namespaced_event(ns, body, _request_timeout=API_TIMEOUT_S)
            return
        k, now = _key(body), self.clock()
        known = self._agg.get(k)
        if known is not None and now - known[2] < AGGREGATE_WINDOW_S:
            name, count, _ = known
            total = count + body["count"]
            try:
                self.core.patch_namespaced_event(name, ns, aggregate_patch(total, body), _request_timeout=API_TIMEOUT_S)
                self._agg[k] = (name, total, now)
                return
            except Exception as e:  # noqa: BLE001 - e.g. 404: the event expired; post a new one
                if getattr(e, "status", None) != 404:
                    raise
        created = self.core.create_namespaced_event(ns, body, _request_timeout=API_TIMEOUT_S)
        meta = created.get("metadata") if isinstance(created, dict) else getattr(created, "metadata", None)
        name = meta.get("name") if isinstance(meta, dict) else getattr(meta, "name", None)
        if name:
            self._agg[k] = (name, body["count"], now)
