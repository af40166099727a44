"""The engine of the active replica: built when this replica becomes the active one, dropped when it pauses.

It promises (with kopf peering, ``replicaCount`` > 1):

* a standby reads nothing and writes nothing (two replicas starting at once may each see itself alone for a
  moment, as kopf does, and stop again when they see the other): its engine (placements read from the assignment ConfigMaps, the
  background wake-ups and sweeps) exists only while it is the active replica (peering.Leadership);
* a replica that was paused and becomes active again starts from a fresh read of the ConfigMaps, never from
  what it read before the pause (the other replica changed the fleet meanwhile);
* kopf calls handlers only on the active replica; a handler asks for the engine here, so one that runs right
  after kopf resumed (before the watch below noticed) builds it first.

Standalone (one replica): the engine is built once at start, as before. The engine lives in this holder, which
kopf's operator memo carries (each resource's memo is a copy of the operator's: a holder object is shared, a key
set in one copy is not).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from .engine import Engine
from .peering import Leadership

log = logging.getLogger("sipfleet.operator")

WATCH_SECONDS = 1.0


class Activation:
    def __init__(self, build: Callable[[], Engine], leadership: Leadership,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        self._build, self.leadership, self._sleep = build, leadership, sleep
        self._engine: Engine | None = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task | None = None

    @property
    def current(self) -> Engine | None:
        return self._engine

    async def start(self) -> None:
        """Standalone: build the engine now. Peering: make sure the peering objects exist and watch leadership."""
        if self.leadership.standalone:
            await self.engine()
            return
        await self.leadership.ensure_objects()
        self._task = asyncio.create_task(self._watch(), name="sipfleet-activation")

    async def engine(self) -> Engine:
        """The active replica's engine, built (fleet read, background started) if there is none."""
        async with self._lock:
            if self._engine is None:
                eng = self._build()
                await eng.load()
                eng.start_background()
                self._engine = eng
                log.info("engine started: the fleet is read and the background work runs")
            return self._engine

    async def _drop(self, why: str) -> None:
        async with self._lock:
            eng, self._engine = self._engine, None
        if eng is not None:
            log.info("engine stopped: %s", why)
            await eng.stop()

    async def check(self) -> None:
        """One look at leadership: build the engine when active, drop it when not."""
        if await self.leadership.active():
            if self._engine is None:
                await self.engine()
        elif self._engine is not None:
            await self._drop("standing by, another replica is active")

    async def _watch(self) -> None:
        while True:
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - looked at again next time
                log.exception("leadership check failed")
            await self._sleep(WATCH_SECONDS)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        await self._drop("the operator is stopping")
