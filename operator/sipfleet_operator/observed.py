"""Reading the cluster's objects into the small facts the operator decides on. Pure functions, no I/O.

What a Secret offers an account (``secret_problem``: never a value, only which key is wrong), an agent pod's
state (``pod_state``), which of an agent's pods its accounts' status speaks of (``current_pod``), whether the
apiserver refused because the namespace terminates, which namespaces are watched, and the digest of a child
object (what makes an unchanged child never be written again).
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Iterable

from sipfleet.api import credentials as creds_rules
from sipfleet.api import models as m

from . import builders as b
from . import conditions as cond

Key = tuple[str, str]  # (namespace, name)


def meta(body: dict) -> dict:
    return body.get("metadata") or {}


def ref(body: dict) -> Key:
    md = meta(body)
    return md.get("namespace", ""), md.get("name", "")


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def is_paused(body: dict) -> bool:
    return (meta(body).get("annotations") or {}).get(b.ANNOTATION_PAUSED, "").lower() == "true"


def is_deleting(body: dict) -> bool:
    return bool(meta(body).get("deletionTimestamp"))


def inputs_digest(body: dict) -> str:
    """What placement and the assignment depend on: spec, the user annotations, the ladder's token.
    (kopf's change detection sees spec changes only: it leaves every ``sipfleet.io/`` annotation out, as its
    own storage uses that prefix; so annotations come through watch events.)"""
    annotations = meta(body).get("annotations") or {}
    return digest({
        "spec": body.get("spec"),
        "annotations": {k: annotations.get(k) for k in (b.ANNOTATION_PAUSED, b.ANNOTATION_REPAIR,
                                                        b.ANNOTATION_REREGISTER)},
        "ladder": ((body.get("status") or {}).get("ladder") or {}).get("token"),
    })


@dataclass(frozen=True)
class SecretInfo:
    version: str | None
    problem: str | None
    reason: str = creds_rules.MISSING  # the condition reason when there is a problem


def secret_problem(secret: dict | None, creds: m.CredentialsRef) -> SecretInfo:
    """Pure check of a Secret against what the account needs: present, non-empty keys, values a SIP stack can use
    (sipfleet.api.credentials). The problem names the Secret and the key, never a value."""
    if secret is None:
        return SecretInfo(None, f"Secret {creds.secret_name} not found")
    version = meta(secret).get("resourceVersion")
    values: dict[str, bytes] = {}
    for k, v in (secret.get("data") or {}).items():
        try:
            values[k] = base64.b64decode(v or "", validate=True)
        except (binascii.Error, ValueError):
            return SecretInfo(version, f"Secret {creds.secret_name} key {k} is not base64", creds_rules.INVALID)
    values.update({k: (v or "").encode() for k, v in (secret.get("stringData") or {}).items()})
    missing = [k for k in (creds.username_key, creds.password_key) if not values.get(k)]
    if missing:
        return SecretInfo(version, f"Secret {creds.secret_name} has no (or an empty) key {', '.join(missing)}")
    for key, check in ((creds.username_key, creds_rules.username_problem),
                       (creds.password_key, creds_rules.password_problem)):
        why = check(values[key])
        if why:
            return SecretInfo(version, f"Secret {creds.secret_name} key {key} {why}", creds_rules.INVALID)
    return SecretInfo(version, None)


def pod_state(pod: dict, ever_ready: bool) -> cond.PodState:
    md, status = meta(pod), pod.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    restarts = sum(int(cs.get("restartCount") or 0) for cs in status.get("containerStatuses") or [])
    unschedulable = next((str(c.get("message") or "") for c in status.get("conditions") or []
                          if c.get("type") == "PodScheduled" and c.get("status") == "False"
                          and c.get("reason") == "Unschedulable"), None)
    return cond.PodState(
        unschedulable=unschedulable,
        name=md.get("name"),
        phase=status.get("phase"),
        ready=ready,
        deleting=bool(md.get("deletionTimestamp")),
        started_at=md.get("creationTimestamp"),
        restarts=restarts,
        ever_ready=ever_ready or ready or restarts > 0,
    )


def current_pod(pods: Iterable[cond.PodState]) -> cond.PodState | None:
    """The agent pod an account's status speaks of: the newest one that is not being deleted (else the newest)."""
    return max(pods, key=lambda p: (not p.deleting, p.started_at or "", p.name or ""), default=None)


def namespace_matches(patterns, ns: str) -> bool:
    """Whether a namespace is watched (kopf's namespace patterns: names, globs, ``!`` negations; none = all)."""
    if not patterns:
        return True
    included = False
    for p in patterns:
        if p.startswith("!"):
            if fnmatch.fnmatchcase(ns, p[1:]):
                return False
        elif fnmatch.fnmatchcase(ns, p):
            included = True
    return included
