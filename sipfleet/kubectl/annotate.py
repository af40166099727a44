"""Pure annotation requests (``kubectl sipfleet repair|reregister|pause|resume``).

repair / reregister set ``sipfleet.io/repair`` / ``sipfleet.io/reregister`` to a new unique value each time (the
operator passes it on to the agent as a token; the same value twice would ask for nothing); pause sets
``sipfleet.io/paused: "true"``, resume removes it.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sipfleet.api import keys

ACTIONS = ("repair", "reregister", "pause", "resume")


def token(now: datetime, rand: str) -> str:
    """``20261202T044501.123Z-3f9a1c``: readable, sortable, unique with the random part."""
    t = now.astimezone(timezone.utc)
    return t.strftime("%Y%m%dT%H%M%S.") + f"{t.microsecond // 1000:03d}Z-{rand}"


def annotations(action: str, value: str | None = None) -> dict[str, str | None]:
    """The annotation change (a merge patch: None removes the key)."""
    if action == "repair":
        return {keys.ANNOTATION_REPAIR: value}
    if action == "reregister":
        return {keys.ANNOTATION_REREGISTER: value}
    if action == "pause":
        return {keys.ANNOTATION_PAUSED: "true"}
    if action == "resume":
        return {keys.ANNOTATION_PAUSED: None}
    raise ValueError(f"unknown action {action!r}")


def patch(action: str, value: str | None = None) -> dict:
    if action in ("repair", "reregister") and not value:
        raise ValueError(f"{action} needs a new value")
    return {"metadata": {"annotations": annotations(action, value)}}


def describe(action: str, value: str | None) -> str:
    return {"repair": f"repair requested ({keys.ANNOTATION_REPAIR}={value})",
            "reregister": f"re-registration requested ({keys.ANNOTATION_REREGISTER}={value})",
            "pause": f"paused ({keys.ANNOTATION_PAUSED}=true)",
            "resume": f"resumed ({keys.ANNOTATION_PAUSED} removed)"}[action]


def already(action: str, acc: dict) -> bool:
    """Whether pause/resume would change nothing on this account."""
    ann = ((acc.get("metadata") or {}).get("annotations") or {})
    if action == "pause":
        return ann.get(keys.ANNOTATION_PAUSED) == "true"
    if action == "resume":
        return keys.ANNOTATION_PAUSED not in ann
    return False
