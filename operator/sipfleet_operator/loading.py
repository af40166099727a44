"""Loading the fleet at start, scope by scope, without ever failing the start.

A *scope* is what one list call reads: the whole cluster (``None``, when the operator watches every namespace or
namespace globs) or one watched namespace. The operator may not place or remove an account before the scope it is
in has been read (that is what keeps a restart from inventing a second agent for a slot). So:

* :meth:`Loader.start` reads every scope once; a scope whose read fails (apiserver away, 403, timeout, or a bug)
  is logged with the reason and retried in the background with capped exponential back-off; the operator starts
  and serves the scopes it could read (its liveness endpoint is up, so no crash loop);
* :meth:`Loader.wait` lets a handler wait a little for its account's scope, then raises :class:`NotLoaded`, whose
  message says what could not be read (kopf retries the handler and shows the message on the object).

The read itself (``read(scope)``) and what to do with it (``apply(scope, result)``) are the engine's.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Generic, Sequence, TypeVar

from .k8s import ApiError

log = logging.getLogger("sipfleet.operator")

T = TypeVar("T")
Scope = str | None


class NotLoaded(Exception):
    """The account's scope has not been read yet; the message says why."""


def scopes_for(patterns: Sequence[str]) -> list[Scope]:
    """What to list at start: every watched namespace by name, or the whole cluster (``None``) when watching
    cluster-wide or through globs (pure)."""
    globbing = any(set(p) & set("*?[!") for p in patterns)
    if globbing or not patterns:
        return [None]
    return list(dict.fromkeys(patterns))


def retry_delay(failures: int, base: float = 1.0, cap: float = 30.0) -> float:
    """Back-off before the next read of a scope after ``failures`` failed reads (pure)."""
    return min(cap, base * 2 ** max(0, failures - 1))


def scope_name(scope: Scope) -> str:
    return "the whole cluster" if scope is None else f"namespace {scope}"


@dataclass
class _ScopeState:
    loaded: asyncio.Event = field(default_factory=asyncio.Event)
    failures: int = 0
    error: str | None = None


class Loader(Generic[T]):
    def __init__(
        self,
        scopes: Sequence[Scope],
        read: Callable[[Scope], Awaitable[T]],
        apply: Callable[[Scope, T], Awaitable[None]],
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_error: Callable[[Scope, str], None] = lambda scope, error: None,
    ):
        self._states = {s: _ScopeState() for s in scopes}
        self._read, self._apply, self._sleep, self._on_error = read, apply, sleep, on_error
        self._task: asyncio.Task | None = None

    def _state(self, namespace: str) -> _ScopeState | None:
        if None in self._states:
            return self._states[None]
        return self._states.get(namespace)

    def is_loaded(self, namespace: str) -> bool:
        st = self._state(namespace)
        return st is not None and st.loaded.is_set()

    @property
    def pending(self) -> dict[Scope, str]:
        """Scopes not read yet, with the last error."""
        return {s: st.error or "not read yet" for s, st in self._states.items() if not st.loaded.is_set()}

    async def _try(self, scope: Scope) -> bool:
        st = self._states[scope]
        try:
            result = await self._read(scope)
            await self._apply(scope, result)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - a start must survive anything; the reason is logged and shown
            st.failures += 1
            st.error = f"{type(e).__name__}: {e}"[:500]
            log.error("could not read the assignment ConfigMaps of %s (attempt %d, retrying in %.0f s): %s",
                      scope_name(scope), st.failures, retry_delay(st.failures), st.error,
                      exc_info=not isinstance(e, ApiError))  # a traceback only for what is not an API error
            self._on_error(scope, st.error)
            return False
        st.error = None
        st.loaded.set()
        return True

    async def start(self) -> None:
        """Read every scope once; keep retrying the failed ones in the background."""
        failed = [s for s in self._states if not await self._try(s)]
        if failed:
            self._task = asyncio.create_task(self._retry(failed), name="sipfleet-loader")

    async def _retry(self, scopes: list[Scope]) -> None:
        while scopes:
            await self._sleep(min(retry_delay(self._states[s].failures) for s in scopes))
            scopes = [s for s in scopes if not await self._try(s)]

    async def wait(self, namespace: str, timeout: float = 10.0) -> None:
        st = self._state(namespace)
        if st is None:
            raise NotLoaded(f"namespace {namespace} is not watched by this operator")
        if st.loaded.is_set():
            return
        try:
            await asyncio.wait_for(st.loaded.wait(), timeout)
        except asyncio.TimeoutError:
            scope = None if None in self._states else namespace
            raise NotLoaded(
                f"the operator could not read the assignment ConfigMaps of {scope_name(scope)} yet "
                f"({st.error or 'still reading'}); it keeps retrying and places this account then"
            ) from None

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass

