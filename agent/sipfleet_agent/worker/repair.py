"""Repair policy: the record of a repair (re-create the account) from start to result, and how often self-heal
may repair. Pure: no pjsua2; times passed in.

Promise: :func:`start` records what triggered a repair and the drift it answers (``drift_seen_at`` only when the
route is out of sync); :func:`finish` completes it as ``repaired`` or ``failed`` with the duration from the drift
(if one was seen) or else from the start; :class:`SelfHealGate` lets the first ``burst`` self-heal repairs of one
account start at once (the first drifted REGISTER is acted on within milliseconds) and spaces
any further ones exponentially (``base_s`` doubling up to ``cap_s``): a route that keeps drifting is never
re-created in a tight loop (the operator's ladder sees it flapping and escalates); after ``window_s`` without
a heal the burst is available again.
"""

from __future__ import annotations

import collections

from sipfleet.api.models import RepairRecord

REPAIR_TIMEOUT_S = 10.0
SELF_HEAL_BURST = 3
SELF_HEAL_WINDOW_S = 120.0
SELF_HEAL_BACKOFF_BASE_S = 1.0
SELF_HEAL_BACKOFF_CAP_S = 60.0


def start(trigger: str, token: str | None, in_sync: bool | None, last_drift_at: str | None, now: str) -> RepairRecord:
    drift_seen = last_drift_at if in_sync is False else None
    return RepairRecord(method="recreate-account", trigger=trigger, token=token, drift_seen_at=drift_seen,
                        started_at=now, result="in-progress")


def finish(rec: RepairRecord, ok: bool, *, started_mono: float, drift_mono: float | None, now_mono: float,
           now: str) -> tuple[RepairRecord, float]:
    """The completed record and the milliseconds from the repair's start."""
    elapsed = (now_mono - started_mono) * 1000.0
    duration = (now_mono - drift_mono) * 1000.0 if rec.drift_seen_at and drift_mono is not None else elapsed
    done = rec.model_copy(update={"completed_at": now, "duration_ms": round(duration, 3),
                                  "result": "repaired" if ok else "failed"})
    return done, elapsed


class SelfHealGate:
    def __init__(self, burst: int = SELF_HEAL_BURST, window_s: float = SELF_HEAL_WINDOW_S,
                 base_s: float = SELF_HEAL_BACKOFF_BASE_S, cap_s: float = SELF_HEAL_BACKOFF_CAP_S):
        self.burst, self.window_s, self.base_s, self.cap_s = burst, window_s, base_s, cap_s
        self.count = 0  # heals since the account was last quiet for window_s
        self.last: float | None = None  # when the last heal was allowed to start

    def delay(self, now: float) -> float:
        """Seconds to wait before the next self-heal repair may start (and reserve that slot)."""
        if self.last is not None and now - self.last >= self.window_s:
            self.count = 0
        at = now
        if self.count >= self.burst and self.last is not None:
            at = max(now, self.last + min(self.cap_s, self.base_s * 2 ** (self.count - self.burst)))
        self.count += 1
        self.last = at
        return at - now
