"""Repair policy: the record of a repair (re-create the account) from start to result, and how often self-heal
may repair. Pure: no pjsua2; times passed in.

Promise: :func:`start` records what triggered a repair and the drift it answers (``drift_seen_at`` only when the
route is out of sync); :func:`finish` completes it as ``repaired`` or ``failed`` with the duration from the drift
(if one was seen) or else from the start; :class:`SelfHealGate` spaces self-heal repairs of one account at least
``min_interval_s`` apart.
"""

from __future__ import annotations

from sipfleet.api.models import RepairRecord

REPAIR_TIMEOUT_S = 10.0
SELF_HEAL_MIN_INTERVAL_S = 5.0


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
    def __init__(self, min_interval_s: float = SELF_HEAL_MIN_INTERVAL_S):
        self.min_interval_s = min_interval_s
        self.last = 0.0

    def delay(self, now: float) -> float:
        """Seconds to wait before the next self-heal repair may start (and reserve that slot)."""
        wait = self.last + self.min_interval_s - now
        self.last = max(now, self.last + self.min_interval_s)
        return max(0.0, wait)
