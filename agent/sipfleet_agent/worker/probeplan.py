"""When a worker probes its UDP first hop with OPTIONS, and when it calls the path dead. Pure: time passed in.

UDP has no connection whose loss the kernel could report (TCP and TLS: :mod:`.deadflow`), so a worker whose
accounts are registered over UDP sends an OPTIONS through their route every ``bound / 3`` seconds (one worker's
accounts share their route and transport: one probe speaks for all of them). Any final answer, whatever its code,
proves the path; none for ``bound`` seconds after the first unanswered probe makes it dead. A dead path is
reported once; probing rests until the re-REGISTER it causes has its outcome (``HOLD_S``: pjsip's Timer F, the
longest a REGISTER over UDP waits for its answer), then starts over: the retries are the retrier's.

RFC 5626: a registrar that offers outbound says in its 2xx how often the flow must be kept alive
(:func:`flow_timer`); such a flow is watched whether or not probing is on, with the bound :func:`flow_bound` (a
ping at least every Flow-Timer seconds, and the RFC's 10 s for its answer).
"""

from __future__ import annotations

import dataclasses

from ..siplog import message_headers

#: after a dead path: no probe and no verdict for this long (pjsip's Timer F, 64 * T1 = 32 s), so one dead path
#: causes one re-REGISTER, not one per bound while that REGISTER is still in flight
HOLD_S = 32.0
#: RFC 5626 4.4.1: a flow whose ping got no pong within 10 s has failed
PONG_WAIT_S = 10.0


@dataclasses.dataclass(frozen=True)
class ProbeState:
    unanswered_since: float | None = None  # when the first probe still without an answer was sent
    last_sent: float | None = None
    hold_until: float | None = None  # after a dead path: rest until then


@dataclasses.dataclass(frozen=True)
class Decision:
    state: ProbeState
    send: bool  # send a probe now
    dead: bool  # the path is dead: re-register the worker's UDP accounts


def interval(bound: float) -> float:
    return max(1.0, bound / 3.0)


def tick(st: ProbeState, *, now: float, bound: float, can_probe: bool) -> Decision:
    """One look at the clock. ``can_probe``: an account is registered over UDP (nothing to watch otherwise)."""
    if st.hold_until is not None and now < st.hold_until:
        return Decision(st, False, False)
    if not can_probe:
        return Decision(ProbeState(), False, False)
    if st.unanswered_since is not None and now - st.unanswered_since >= bound:
        return Decision(ProbeState(hold_until=now + max(bound, HOLD_S)), False, True)
    send = st.last_sent is None or now - st.last_sent >= interval(bound) - 1e-6
    if not send:
        return Decision(st, False, False)
    since = st.unanswered_since if st.unanswered_since is not None else now
    return Decision(ProbeState(unanswered_since=since, last_sent=now), True, False)  # (a hold ends here)


def answered(st: ProbeState) -> ProbeState:
    """Any final answer to a probe: the path lives."""
    return dataclasses.replace(st, unanswered_since=None)


def flow_timer(whole_msg: str) -> int | None:
    """The ``Flow-Timer`` seconds of a 2xx to REGISTER (``prm.rdata.wholeMsg``), None without one."""
    values = message_headers(whole_msg, {"flow-timer"}).get("flow-timer") or []
    head = values[0].strip() if values else ""
    return int(head) if head.isdigit() and 0 < int(head) <= 86400 else None


def flow_bound(flow_timer_s: int) -> float:
    """The dead-flow bound of a flow with this Flow-Timer: probes every third of it (at most every Flow-Timer
    seconds once it is 5 s or more), dead after it without an answer."""
    return float(flow_timer_s) + PONG_WAIT_S
