"""Kubernetes Events about SipAccounts (core/v1, e.g. Warning ``WorkerRestarted``), posted from their own thread.

Promise: :meth:`EventRecorder.record` never blocks the caller on the API; a failed post is logged and dropped
(events are best effort); messages are the supervisor's, which never carry credentials.
"""

from __future__ import annotations

import datetime as _dt
import logging
import queue
import threading
from typing import Any

from sipfleet.api.models import GROUP, KIND, VERSION
from . import API_TIMEOUT_S

LOG = logging.getLogger("sipfleet_agent.cluster")


def event_body(namespace: str, name: str, type_: str, reason: str, message: str, *, pod: str | None,
               now: _dt.datetime) -> dict:
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
        "count": 1,
    }


class EventRecorder:
    def __init__(self, core: Any, default_namespace: str, pod: str | None):
        self.core = core
        self.ns = default_namespace
        self.pod = pod
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self.posted = 0
        threading.Thread(target=self._run, name="events", daemon=True).start()

    def record(self, namespace: str | None, name: str, type_: str, reason: str, message: str) -> None:
        self._q.put(event_body(namespace or self.ns, name, type_, reason, message, pod=self.pod,
                               now=_dt.datetime.now(_dt.timezone.utc)))

    def _run(self) -> None:
        while True:
            body = self._q.get()
            try:
                self.core.create_namespaced_event(body["metadata"]["namespace"], body, _request_timeout=API_TIMEOUT_S)
                self.posted += 1
            except Exception as e:  # noqa: BLE001
                LOG.warning("event %s for %s not posted: %s", body["reason"], body["involvedObject"]["name"],
                            getattr(e, "reason", e))
