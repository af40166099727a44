"""A real link flap timed against a REGISTER the registrar holds: PJSIP issue 4066's drift path, provoked.

``handleIpChange()`` while a REGISTER of the account is in flight rebuilds the registration client from the stored
route set, whose last entry is R's Service-Route (E), so the next REGISTER goes straight to E. An agent calls
``handleIpChange()`` when it sees its link come back. :func:`flap_during_held_register`:

1. R holds its answers to REGISTER (``inject R delay:<hold_ms>``);
2. the pod's ``eth0`` goes down and up inside the pod's own netns (routes the kernel flushes with it are re-added):
   the agent's ``handleIpChange()`` sends a REGISTER through P, which R holds; R then answers new REGISTERs at once;
3. ``eth0`` goes down and up again between two retransmissions of that held REGISTER (UDP: again after 0.5, 1.5,
   3.5 and 7.5 s; a retransmission while the link is down would end the transaction with 503 and pjsua would
   forget the Service-Route): the second flap starts when P has logged the held REGISTER's fourth copy and lasts
   ``down_s`` (longer than the agent's 1 s poll), so its ``handleIpChange()`` meets the REGISTER in flight.

Whether a REGISTER then reaches E is the caller's question (an account-mode agent drifts; a prevent-mode agent,
whose route is the process' outbound proxy, must not). Everything is undone on the way out (link up, R normal).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from . import SipLab
    from .wire import WireRecord

HOLD_MS = 8000
DOWN_S = 2.0
COPIES_BEFORE_SECOND_FLAP = 4  # the held REGISTER and its retransmissions at +0.5, +1.5, +3.5 s


@dataclass
class FlapRun:
    """What happened: when R started holding, the flaps (down, up), the held REGISTER at P (None: none went out
    after the first flap), and timeline notes (time, where, what)."""

    started: float
    flaps: list[tuple[float, float]] = field(default_factory=list)
    held: "WireRecord | None" = None
    notes: list[tuple[float, str, str]] = field(default_factory=list)


def _flap(lab: "SipLab", netns: str, down_s: float, run: FlapRun, note: str, who: str) -> None:
    flushed = lab.link_down(netns=netns)
    t_down = time.time()
    run.notes.append((t_down, "network", f"eth0 of {who} down (ip link set eth0 down, inside the pod's netns){note}"))
    try:
        time.sleep(down_s)
    finally:
        restored = lab.link_up(netns=netns)
    t_up = time.time()
    run.notes.append((t_up, "network", "eth0 up again" + (f"; routes re-added: {', '.join(restored)}" if restored else "")))
    run.flaps.append((t_down, t_up))
    if flushed != restored:
        raise RuntimeError(f"the pod's routes were not restored: flushed {flushed}, re-added {restored}")


def flap_during_held_register(lab: "SipLab", netns: str, mine: Callable[["WireRecord"], bool], *,
                              hold_ms: int = HOLD_MS, down_s: float = DOWN_S, wait_held_s: float = 10.0,
                              who: str = "the pod") -> FlapRun:
    """Run the fault against the agent whose REGISTERs ``mine`` recognises, in pod netns ``netns`` (``who``
    names the pod in the notes)."""
    run = FlapRun(started=time.time())
    lab.inject("R", f"delay:{hold_ms}")
    run.notes.append((run.started, "lab R", f"holds its answers to REGISTER {hold_ms} ms"))
    try:
        try:
            _flap(lab, netns, down_s, run, "", who)
            up = run.flaps[-1][1]
            try:
                run.held = lab.wait_wire(mine, node="P", since=up, timeout=wait_held_s)
            except TimeoutError:
                run.held = None
        finally:
            lab.inject("R", "normal")
            run.notes.append((time.time(), "lab R", "answers new REGISTERs at once again (the held one stays held)"))
        if run.held is None:
            return run
        same = (run.held.call_id, run.held.cseq)
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            copies = [r for r in lab.wire(since=run.held.at - 0.001, node="P") if mine(r) and (r.call_id, r.cseq) == same]
            if len(copies) >= COPIES_BEFORE_SECOND_FLAP:
                break
            time.sleep(0.05)
        _flap(lab, netns, down_s, run, ", again: between two retransmissions of the REGISTER R holds", who)
        return run
    finally:
        lab.link_up(netns=netns)  # idempotent: a flap interrupted half-way leaves no link down
