"""Poll until a condition holds: the one way tests and the demo wait (never fixed sleeps)."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


class WaitTimeout(TimeoutError):
    """Raised by ``wait_for``; carries the last value observed and the last exception raised."""

    def __init__(self, message: str, last_value: object = None, last_error: BaseException | None = None):
        super().__init__(message)
        self.last_value = last_value
        self.last_error = last_error


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "...(truncated)"


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 60.0,
    interval: float = 0.25,
    message: str = "condition",
    *,
    ignore: tuple[type[BaseException], ...] = (Exception,),
) -> T:
    """Call ``predicate`` until it returns a truthy value, and return that value.

    Exceptions of the ``ignore`` types count as "not yet" (the last one is reported). After ``timeout`` seconds
    a ``WaitTimeout`` (a ``TimeoutError``) says what was awaited, for how long, the last value observed and the
    last error.
    """
    start = time.monotonic()
    deadline = start + timeout
    last: object = None
    last_error: BaseException | None = None
    attempts = 0
    while True:
        attempts += 1
        try:
            last = predicate()
            last_error = None
            if last:
                return last  # type: ignore[return-value]
        except ignore as exc:  # noqa: PERF203
            last_error = exc
        if time.monotonic() >= deadline:
            break
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
    detail = f"last value: {_short(repr(last), 800)}"
    if last_error is not None:
        detail += f"; last error: {type(last_error).__name__}: {_short(str(last_error), 400)}"
    raise WaitTimeout(
        f"timed out after {time.monotonic() - start:.1f} s ({attempts} checks) waiting for {message}; {detail}",
        last, last_error,
    )
