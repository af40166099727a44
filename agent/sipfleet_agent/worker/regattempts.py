"""Registration attempts as RFC 6076 counts them, for one account. Pure: no pjsua2, time passed in.

Promise: an attempt starts at the first REGISTER of a registration client after the previous attempt's final
answer (retransmissions and the REGISTER re-sent with credentials after a 401/407 challenge carry the same Call-ID
and belong to the attempt); it ends at the account's final answer. A 2xx that grants a binding gives the
Registration Request Delay (RRD: first REGISTER to that 2xx); any other final answer makes it an Ineffective
Registration Attempt (IRA), reason ``timeout`` for 408 (pjsip's own Timer F expiry or a registrar's 408), else
``failure``. An attempt begun while the account held a binding is a re-registration (a refresh). An attempt left
without an answer (the account re-created: a new Call-ID; an un-REGISTER's 2xx) counts as neither. Un-REGISTERs
are no attempts (the caller does not pass them).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Pending:
    started: float  # monotonic seconds of the attempt's first REGISTER
    call_id: str
    refresh: bool  # the account held a binding when it began


@dataclasses.dataclass(frozen=True)
class Ended:
    delay: float | None  # RRD in seconds (a granted 2xx), else None
    ineffective: str | None  # IRA reason "timeout" / "failure", else None
    refresh: bool


def on_register(pending: Pending | None, *, call_id: str, now: float, registered: bool) -> Pending | None:
    """A (non-retransmitted) REGISTER went out: the new attempt, or None when it belongs to ``pending``."""
    if pending is not None and pending.call_id == call_id:
        return None
    return Pending(started=now, call_id=call_id, refresh=registered)


def on_final(pending: Pending | None, *, code: int, expiration: int, now: float) -> Ended | None:
    """The account's final answer (pjsua's onRegState): how the pending attempt ended; None: nothing to count."""
    if pending is None:
        return None
    if 200 <= code < 300:
        if expiration <= 0:
            return None  # the answer to an un-REGISTER: the attempt was abandoned
        return Ended(delay=max(0.0, now - pending.started), ineffective=None, refresh=pending.refresh)
    return Ended(delay=None, ineffective="timeout" if code == 408 else "failure", refresh=pending.refresh)
