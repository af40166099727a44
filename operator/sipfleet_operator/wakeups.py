"""When each account wants to be looked at again: the repair ladder's own ``Step.wake_at`` (a repair
timeout, a pod-start grace, a back-off), kept per account so that the operator wakes for the accounts that are
due instead of scanning every account every second.

``schedule`` replaces an account's time (None removes it), ``due(now)`` takes out the accounts whose time has
come (time passed in), ``wait`` sleeps until the earliest time or until an earlier one is scheduled.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Hashable

#: wake this much after the time asked for, so the ladder sees its deadline passed (not a hair before it)
SLACK_SECONDS = 0.005


class Wakeups:
    def __init__(self) -> None:
        self._at: dict[Hashable, datetime] = {}
        self._earlier = asyncio.Event()

    def __len__(self) -> int:
        return len(self._at)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._at

    def get(self, key: Hashable) -> datetime | None:
        return self._at.get(key)

    def schedule(self, key: Hashable, at: datetime | None) -> None:
        if at is None:
            self._at.pop(key, None)
            return
        before = self.next_at()
        self._at[key] = at
        if before is None or at < before:
            self._earlier.set()

    def next_at(self) -> datetime | None:
        return min(self._at.values(), default=None)

    def due(self, now: datetime) -> list[Hashable]:
        keys = sorted((k for k, at in self._at.items() if at <= now), key=lambda k: self._at[k])
        for k in keys:
            del self._at[k]
        return keys

    async def wait(self, now: datetime, longest: float) -> None:
        """Sleep until the earliest wake-up (at most ``longest`` seconds), or until an earlier one is scheduled."""
        nxt = self.next_at()
        timeout = longest if nxt is None else min(longest, max(0.0, (nxt - now).total_seconds() + SLACK_SECONDS))
        self._earlier.clear()
        try:
            await asyncio.wait_for(self._earlier.wait(), timeout)
        except asyncio.TimeoutError:
            pass
