"""Pure accessors for API objects as plain dicts (the JSON form the apiserver serves: camelCase keys).

Every reader in the plugin works on these dicts, so the unit tests feed it recorded objects.
"""

from __future__ import annotations

from datetime import datetime

from sipfleet.api import keys
from sipfleet.api import models as m

from .fmt import parse_time


def meta(obj: dict) -> dict:
    return obj.get("metadata") or {}


def name(obj: dict) -> str:
    return meta(obj).get("name") or ""


def namespace(obj: dict) -> str:
    return meta(obj).get("namespace") or ""


def ref(obj: dict) -> tuple[str, str]:
    return (namespace(obj), name(obj))


def status(obj: dict) -> dict:
    return obj.get("status") or {}


def condition(obj: dict, type_: str) -> dict | None:
    return next((c for c in status(obj).get("conditions") or [] if c.get("type") == type_), None)


def paused(obj: dict) -> bool:
    return (meta(obj).get("annotations") or {}).get(keys.ANNOTATION_PAUSED) == "true"


def repair_records(acc: dict) -> list[dict]:
    """Every repair the agent recorded for an account (``status.route.repairHistory`` and ``lastRepair``), each once,
    oldest first."""
    route = status(acc).get("route") or {}
    seen, out = set(), []
    for r in [*(route.get("repairHistory") or []), *([route["lastRepair"]] if route.get("lastRepair") else [])]:
        key = (r.get("startedAt"), r.get("token"), r.get("method"), r.get("trigger"))
        if key in seen:
            continue
        seen.add(key)
        out.append(r)
    return sorted(out, key=lambda r: r.get("startedAt") or "")


def event_time(ev: dict) -> datetime | None:
    """When an event last happened (``lastTimestamp``, else ``eventTime``, ``series.lastObservedTime``,
    ``firstTimestamp``, ``metadata.creationTimestamp``)."""
    for t in (ev.get("lastTimestamp"), ev.get("eventTime"), (ev.get("series") or {}).get("lastObservedTime"),
              ev.get("firstTimestamp"), meta(ev).get("creationTimestamp")):
        p = parse_time(t)
        if p is not None:
            return p
    return None


def event_first_time(ev: dict) -> datetime | None:
    return parse_time(ev.get("firstTimestamp")) or parse_time(ev.get("eventTime")) or event_time(ev)


def events_for(events: list[dict], ns: str, account: str) -> list[dict]:
    return [e for e in events if (e.get("involvedObject") or {}).get("kind") == m.KIND
            and (e.get("involvedObject") or {}).get("name") == account
            and ((e.get("involvedObject") or {}).get("namespace") or namespace(e)) == ns]


def owned_accounts(obj: dict) -> list[str]:
    """Names of the SipAccounts an agent object is owned by (the operator gives every child one ownerReference per
    hosted account)."""
    return sorted(r.get("name") for r in meta(obj).get("ownerReferences") or []
                  if r.get("kind") == m.KIND and r.get("name"))


def pod_ready(pod: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status(pod).get("conditions") or [])


def pod_restarts(pod: dict) -> int:
    return sum(int(c.get("restartCount") or 0) for c in status(pod).get("containerStatuses") or [])


def pod_unschedulable(pod: dict) -> dict | None:
    """The scheduler's PodScheduled=False condition, when it says the pod does not fit anywhere."""
    for c in status(pod).get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("status") == "False":
            return c
    return None


def pod_waiting(pod: dict) -> list[tuple[str, str, str]]:
    """(container, reason, message) of containers that wait (CrashLoopBackOff, ImagePullBackOff, ...)."""
    out = []
    for c in status(pod).get("containerStatuses") or []:
        w = (c.get("state") or {}).get("waiting")
        if w and w.get("reason") not in (None, "ContainerCreating", "PodInitializing"):
            out.append((c.get("name") or "", w.get("reason") or "", w.get("message") or ""))
    return out


def last_termination(pod: dict) -> dict | None:
    for c in status(pod).get("containerStatuses") or []:
        t = (c.get("lastState") or {}).get("terminated")
        if t:
            return t
    return None


def agent_of_pod(pod: dict) -> str | None:
    return (meta(pod).get("labels") or {}).get(keys.LABEL_AGENT)


def deployment_ready(dep: dict) -> tuple[int, int]:
    """(ready replicas, desired replicas)."""
    spec_n = (dep.get("spec") or {}).get("replicas")
    return int(status(dep).get("readyReplicas") or 0), int(1 if spec_n is None else spec_n)


def container_env(dep: dict, var: str) -> str | None:
    for c in (((dep.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []:
        for e in c.get("env") or []:
            if e.get("name") == var:
                return e.get("value")
    return None
