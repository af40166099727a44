"""Kubernetes Events about SipAccounts: ``build_event`` (pure) and ``Events.post`` (best effort: a failure is
logged, never raised, and nobody waits for an event)."""

from __future__ import annotations

import logging
from datetime import datetime

from sipfleet.api import keys as k
from sipfleet.api import models as m

from . import conditions as cond
from .k8s import ApiError, Client
from .observed import meta, ref

log = logging.getLogger("sipfleet.operator")


def build_event(body: dict, type_: str, reason: str, message: str, instance: str, now: datetime) -> dict:
    ns, name = ref(body)
    ts = cond.rfc3339(now)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{name}.", "namespace": ns},
        "involvedObject": {
            "apiVersion": m.API_VERSION, "kind": m.KIND, "name": name, "namespace": ns, "uid": meta(body).get("uid"),
        },
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": "sipfleet-operator"},
        "reportingComponent": k.EVENT_REPORTING_COMPONENT,
        "reportingInstance": instance[:128],
        "firstTimestamp": ts,
        "lastTimestamp": ts,
        "count": 1,
    }


class Events:
    def __init__(self, client: Client, instance: str, clock):
        self.client, self.instance, self.clock = client, instance, clock

    async def post(self, body: dict, type_: str, reason: str, message: str) -> None:
        try:
            await self.client.create(build_event(body, type_, reason, message, self.instance, self.clock()))
        except ApiError as e:  # events are best effort
            ns, name = ref(body)
            log.warning("could not post event %s for %s/%s: %s", reason, ns, name, e)
