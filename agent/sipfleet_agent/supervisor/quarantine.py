"""Which accounts the supervisor keeps out of every worker for now, and for how long. Pure (time passed in).

Promise: an account whose registrar sent an answer the worker had to refuse (:class:`~sipfleet_agent.protocol.Rejected`)
is quarantined for ``base_s``, doubled on every further rejection up to ``max_s``; ``strikes`` are forgotten when
the account has gone ``forget_s`` after its last release without a rejection. :func:`isolate` says whether an
account with strikes should run in a worker of its own (so that its next rejection ends no other account's worker).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping


@dataclasses.dataclass(frozen=True)
class QuarantinePolicy:
    base_s: float = 30.0
    max_s: float = 1800.0
    forget_s: float = 3600.0


@dataclasses.dataclass(frozen=True)
class Entry:
    strikes: int
    until: float  # monotonic time the quarantine ends
    reason: str
    message: str


def on_reject(policy: QuarantinePolicy, prev: Entry | None, now: float, reason: str, message: str) -> Entry:
    """The account's entry after one more rejection at ``now``."""
    strikes = 1 if prev is None or now - prev.until >= policy.forget_s else prev.strikes + 1
    delay = min(policy.max_s, policy.base_s * (2 ** (strikes - 1)))
    return Entry(strikes, now + delay, reason, message)


def status_message(entry: Entry, now: float) -> str:
    """The account's status reason while quarantined (at most 1024 characters)."""
    return (f"{entry.message}; account quarantined for {entry.until - now:.0f} s (rejection {entry.strikes}), "
            f"its worker's other accounts are restarted without it")[:1024]


def held(entries: Mapping, now: float) -> set:
    """The keys still quarantined at ``now``."""
    return {k for k, e in entries.items() if now < e.until}


def forget(policy: QuarantinePolicy, entries: Mapping, now: float) -> dict:
    """``entries`` without those whose release is ``forget_s`` old."""
    return {k: e for k, e in entries.items() if now - e.until < policy.forget_s}


def isolate(entry: Entry | None, now: float) -> bool:
    """Released but with strikes: run the account alone until its strikes are forgotten."""
    return entry is not None and now >= entry.until
