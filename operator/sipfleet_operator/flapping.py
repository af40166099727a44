"""Counting an account's drifts for the ladder: is the route flapping? Pure: times passed in.

The agent counts the drifts it measured (``status.route.driftCount``); a self-healing agent repairs most of them
within milliseconds, so the operator may never see ``inSync: false`` for them and counts the increments instead.
The ladder keeps when it saw them (``status.ladder.recentDrifts``, at most ``flapThreshold + 1``) and the count it
last saw (``driftCountSeen``).

Promise: :func:`observe` returns the drifts new since the last look (a count smaller than the one seen means a new
agent process started counting afresh: all of its drifts are new; nothing seen yet counts as 0, and an account that
never drifted gets no ladder written at all) and the recent-drift list with entries older than
``flapWindowSeconds`` dropped - but only when the list changes anyway or the verdict flips, so time passing alone
costs at most one status write per verdict change. ``flapping`` is more than ``flapThreshold`` drifts in the window.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sipfleet.api import models as m

from .conditions import parse_time
from .conditions import rfc3339_ms as rfc3339


@dataclass(frozen=True)
class Drifts:
    new: int  # drifts since the last look
    seen: int | None  # the agent's count now (for ladder.driftCountSeen)
    recent: list[str]  # for ladder.recentDrifts
    flapping: bool
    #: when the verdict flips back to not flapping if nothing else happens (None: not flapping)
    calm_at: datetime | None


def _within(recent: list[str], since: datetime) -> list[str]:
    return [t for t in recent if (parse_time(t) or since) > since]


def observe(drift: m.DriftSettings, route: m.RouteStatus | None, ladder: m.LadderStatus, now: datetime) -> Drifts:
    count = route.drift_count if route is not None else 0
    seen = ladder.drift_count_seen
    if route is None or (seen is None and count == 0):
        new, seen_now = 0, seen
    else:
        before = seen or 0
        new, seen_now = (count - before if count >= before else count), count
    keep = drift.flap_threshold + 1
    since = now - timedelta(seconds=drift.flap_window_seconds)
    recent = list(ladder.recent_drifts)
    if new > 0:
        at = parse_time(route.last_drift_at) if route is not None else None
        stamp = rfc3339(at if at is not None and since < at <= now else now)
        recent = _within(recent, since) + [stamp] * min(new, keep)
        recent = sorted(recent)[-keep:]
    else:
        pruned = _within(recent, since)
        if (len(pruned) > drift.flap_threshold) != (len(recent) > drift.flap_threshold):
            recent = pruned
    live = _within(recent, since)
    flapping = len(live) > drift.flap_threshold
    calm_at = None
    if flapping:
        # the oldest drift that keeps the count above the threshold leaves the window then
        oldest = parse_time(sorted(live)[len(live) - drift.flap_threshold - 1])
        calm_at = (oldest or now) + timedelta(seconds=drift.flap_window_seconds)
    return Drifts(new, seen_now, recent, flapping, calm_at)
