"""When to restart a failed worker: exponential back-off, reset after a stable run. Pure (time passed in).

Promise: the first failure of a worker that had been up for at least ``stable_s`` restarts after ``base_s``; every
further failure within that window doubles the delay up to ``max_s``.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class RestartPolicy:
    base_s: float = 0.5
    max_s: float = 30.0
    stable_s: float = 60.0


@dataclasses.dataclass(frozen=True)
class RestartState:
    failures: int = 0  # consecutive failures (each within stable_s of its start)
    restarts: int = 0  # all restarts, for status and metrics


def on_failure(policy: RestartPolicy, state: RestartState, started_at: float, now: float) -> tuple[RestartState, float]:
    """The new state and the delay before the restart, for a worker that started at ``started_at`` and failed now."""
    failures = 1 if now - started_at >= policy.stable_s else state.failures + 1
    delay = min(policy.max_s, policy.base_s * (2 ** (failures - 1)))
    return RestartState(failures=failures, restarts=state.restarts + 1), delay


def hung(last_heartbeat: float, now: float, timeout_s: float) -> bool:
    return now - last_heartbeat > timeout_s
