"""Operator HA through kopf's peering: which replica is the active one, read the way kopf decides it.

kopf keeps one peering object (``ClusterKopfPeering`` when the operator watches the whole cluster, a
``KopfPeering`` in each watched namespace otherwise) whose ``status`` maps each live replica's identity to its
priority, lifetime and last keep-alive. A replica pauses its handlers while another live replica has a higher
priority, and every replica pauses when two share the highest one; so the replicas get distinct priorities
(``auto_priority``: from the pod's name). kopf pauses only its handlers: the operator's own background work asks
:class:`Leadership` before it acts.

Pure: :func:`auto_priority`, :func:`is_active`, :func:`peering_objects`. Thin: :class:`Leadership` (reads the
peering objects, creates them when they are missing: kopf would wait for them forever).
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timedelta
from typing import Any, Callable, Sequence

from sipfleet.api import kerrors

log = logging.getLogger("sipfleet.operator")

#: kopf's peering objects: (kind, namespace) pairs; the name is the settings' peering name
PeeringRef = tuple[str, "str | None"]


def auto_priority(identity: str) -> int:
    """A priority in 1..2**31-1 derived from the replica's identity (its pod name): distinct for two pods of one
    Deployment with a probability of 1 - 2**-31, stable for the pod's life. Pure."""
    return 1 + int.from_bytes(hashlib.sha256(identity.encode()).digest()[:4], "big") % (2**31 - 2)


def _parse(ts: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(ts))
    except ValueError:
        return None


def is_active(status: dict | None, me: str, priority: int, now: datetime) -> bool:
    """Whether kopf lets replica ``me`` (of ``priority``) act, from one peering object's ``status``: no other live
    peer (last keep-alive + lifetime still ahead) has a priority as high or higher. Pure."""
    for identity, info in (status or {}).items():
        if identity == me or not isinstance(info, dict):
            continue
        seen = _parse(info.get("lastseen"))
        try:
            lifetime, prio = int(info.get("lifetime", 60)), int(info.get("priority", 0))
        except (TypeError, ValueError):
            continue
        if seen is None or seen + timedelta(seconds=lifetime) <= now:
            continue  # dead: kopf ignores it (and cleans it up)
        if prio >= priority:
            return False
    return True


def peering_objects(namespaces: Sequence[str]) -> list[PeeringRef]:
    """The peering objects kopf uses for these watched namespaces (none: the whole cluster). Pure."""
    if not namespaces:
        return [("ClusterKopfPeering", None)]
    return [("KopfPeering", ns) for ns in namespaces]


class Leadership:
    """Whether this replica is the active one, from the peering objects (read at most every ``cache_s``)."""

    def __init__(self, client: Any, *, name: str, namespaces: Sequence[str], identity: str, priority: int,
                 standalone: bool, clock: Callable[[], datetime], monotonic: Callable[[], float],
                 cache_s: float = 1.0):
        self.client, self.name, self.identity, self.priority = client, name, identity, priority
        self.refs = peering_objects(namespaces)
        self.standalone = standalone
        self.clock, self.monotonic, self.cache_s = clock, monotonic, cache_s
        self._last: bool | None = None
        self._read_at = float("-inf")

    async def ensure_objects(self) -> None:
        """Create the peering objects that do not exist yet (kopf never creates them, and pauses without)."""
        if self.standalone:
            return
        for kind, ns in self.refs:
            meta = {"name": self.name, **({"namespace": ns} if ns else {})}
            try:
                await self.client.create({"apiVersion": "kopf.dev/v1", "kind": kind, "metadata": meta})
                log.info("created the %s %s%s for operator peering", kind, self.name, f" in {ns}" if ns else "")
            except kerrors.AlreadyExists:
                pass

    async def active(self) -> bool:
        """True when no other live replica outranks this one in any peering object. Standalone: always. A failed
        read keeps the last answer (False before the first good read: a replica that cannot tell does not act)."""
        if self.standalone:
            return True
        if self.monotonic() - self._read_at < self.cache_s and self._last is not None:
            return self._last
        try:
            objs = [await self.client.get(kind, ns, self.name) for kind, ns in self.refs]
        except kerrors.KubeError as e:
            log.warning("cannot read the peering objects (%s): %s", "acting" if self._last else "standing by", e)
            return bool(self._last)
        now = self.clock()
        active = all(o is not None and is_active(o.get("status"), self.identity, self.priority, now) for o in objs)
        if active != self._last:
            log.info("this replica (%s, priority %d) is %s", self.identity, self.priority,
                     "the active one" if active else "a standby")
        self._last, self._read_at = active, self.monotonic()
        return active
