"""A fix for a race in kopf 1.45's namespace observation: a namespace is served from the moment it exists.

With watched namespaces (``SIPFLEET_WATCH_NAMESPACES``, the chart's ``watchNamespaces``) kopf lists the namespaces
once, then starts a watch whose own first listing it skips (its events have no type), and skips it again whenever
the watch lists anew (after 410 Gone). A namespace created in between, for example just after the operator
starts, is then never served, nor are its SipAccounts, until the namespace itself changes (seen: 2 minutes of
silence in our packing test, then every account at once when the namespace was deleted). kopf's master has the
same code. ``install()`` swaps kopf's event processor for one that also takes the listed namespaces into account,
as kopf's own first listing does: adding a listed namespace kopf already serves changes nothing.

kopf's internals are private: ``install()`` checks that they have the shape this was written against (the pinned
kopf) and otherwise leaves kopf as it is and says so.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

log = logging.getLogger("sipfleet.operator")

_EXPECTED = {"raw_event", "namespaces", "insights"}


async def process_namespace_event(*, raw_event: dict, namespaces: Any, insights: Any, **_: Any) -> None:
    """kopf's processor of namespace watch events, with the listed ones (type None) revised too."""
    from kopf._core.reactor import observation

    async with insights.revised:
        if raw_event.get("type") is None:  # listed: kopf's own first listing handles them as bodies
            observation.revise_namespaces(raw_bodies=[raw_event["object"]], insights=insights, namespaces=namespaces)
        else:
            observation.revise_namespaces(raw_events=[raw_event], insights=insights, namespaces=namespaces)
        insights.revised.notify_all()


def install() -> bool:
    """Use ``process_namespace_event`` in kopf's namespace observer; False (and a warning) if kopf's internals
    are not what this fix expects."""
    try:
        from kopf._core.reactor import observation
    except ImportError:
        log.warning("kopf's namespace observation was not found: namespaces created while it lists are missed")
        return False
    current = getattr(observation, "process_discovered_namespace_event", None)
    if current is process_namespace_event:
        return True
    params = set(inspect.signature(current).parameters) if callable(current) else set()
    if not (_EXPECTED <= params and callable(getattr(observation, "revise_namespaces", None))):
        log.warning("kopf's namespace observation is not the one this fix was written for (kopf 1.45): left "
                    "as it is; a namespace created while kopf lists namespaces is not served until it changes")
        return False
    observation.process_discovered_namespace_event = process_namespace_event
    return True
