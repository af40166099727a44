"""Which route a failover group registers through, and when it returns to the primary. Pure: time passed in.

A group is the accounts of one agent that share a worker key with fallback routes (``AgentAccount.worker_key``:
transport, route, routeMode, TLS, the fallback routes and the failover settings): the same first hop fails for all
of them, so they fail over and back together. Routes are numbered as ``status.route.active.index`` is: 0 the
primary (``spec.route``), n ``spec.fallbackRoutes[n-1]``.

- **Over**: a path failure (the first hop did not answer a REGISTER, refused it, or left the dead-flow probes
  unanswered) reported from the *active* route moves the group to the next route. A report about a route that is no
  longer active (a worker still busy with the old one) changes nothing, so one outage moves a group one step, not
  one per account. On the last route there is nowhere to go: the retries go on there.
- **Back**: while not on the primary, the primary's first hop is probed with OPTIONS every ``interval`` seconds
  (one probe in flight at a time); ``return_after`` answers in a row move the group back to the primary, an
  unanswered probe starts the count again (the hysteresis).
"""

from __future__ import annotations

import dataclasses

from sipfleet.api import reasons

OVER, BACK = "over", "back"


@dataclasses.dataclass(frozen=True)
class Group:
    routes: tuple[tuple[str, ...], ...]  # the primary first, then the fallback routes
    interval: float  # seconds between probes of the primary
    return_after: int  # answers in a row before the return


@dataclasses.dataclass(frozen=True)
class State:
    active: int = 0
    reason: str = reasons.PRIMARY
    message: str = ""
    answers: int = 0  # the primary's probes answered in a row
    next_probe: float | None = None
    probing: bool = False  # a probe is in flight
    failovers: int = 0


@dataclasses.dataclass(frozen=True)
class Change:
    state: State
    event: str | None = None  # OVER, BACK or None


def on_path_failure(g: Group, st: State, *, route: tuple[str, ...], cause: str, detail: str, now: float) -> Change:
    """A worker reports that ``route``'s first hop failed (``cause``: reasons.PATH_FAILURE_REASONS)."""
    if tuple(route) != g.routes[st.active] or st.active + 1 >= len(g.routes):
        return Change(st)  # a late report about a route left already, or nowhere to go from the last one
    nxt = st.active + 1
    what = "the primary route" if st.active == 0 else f"fallback route {st.active}"
    message = f"{what} ({', '.join(route)}) failed: {cause}" + (f" ({detail})" if detail else "")
    return Change(State(active=nxt, reason=cause, message=message[:1024], answers=0,
                        next_probe=now + g.interval, probing=False, failovers=st.failovers + 1), OVER)


def probe_due(st: State, now: float) -> bool:
    return st.active > 0 and not st.probing and st.next_probe is not None and now >= st.next_probe - 1e-9


def probe_started(st: State) -> State:
    return dataclasses.replace(st, probing=True)


def on_probe(g: Group, st: State, *, answered: bool, now: float) -> Change:
    """A probe of the primary ended: answered (any final response) or not."""
    if st.active == 0:
        return Change(dataclasses.replace(st, probing=False, next_probe=None, answers=0))
    answers = st.answers + 1 if answered else 0
    if answers >= g.return_after:
        message = f"the primary route ({', '.join(g.routes[0])}) answered {answers} probes in a row"
        return Change(State(active=0, reason=reasons.PRIMARY, message=message,
                            failovers=st.failovers), BACK)
    return Change(dataclasses.replace(st, answers=answers, probing=False, next_probe=now + g.interval))


def probe_timeout(g: Group) -> float:
    """How long a probe waits for its answer: at most 4 s, never longer than the interval."""
    return min(4.0, g.interval)
