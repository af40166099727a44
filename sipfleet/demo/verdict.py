"""The demo's verdict, as a pure function of what was recorded: did the account drift, was it repaired, and the
timeline rows that show it.

Input: the lab's wire log (requests as P and E received them), the SipAccount's status history (from the
watcher: when each field changed to what), the Kubernetes events of the account, the agent's own log lines
(rows) and what the fault step did (:class:`FaultRecord`). Output: :class:`Verdict`.

* **drifted**: a REGISTER of the account reached the edge E after the fault started (on the wire), and the
  status left the route (``route.inSync`` false or ``RouteInSync`` False). Not a drift of this fault when the
  account already sent a REGISTER to E between the calm check and the fault.
* **repaired**: after that REGISTER at E, a *new* registration client (a Call-ID not seen up to the drift)
  registered through P with the configured route, none of its REGISTERs went to E, the status records the
  repair (the agent's ``lastRepair``, else the ladder's pod restart, else a ``RouteRepaired`` event) and
  ``RouteInSync`` came back to True.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from .examples import fmt_route, norm
from .output import parse_time, utc
from .timeline import Row
from .watcher import Change


@dataclass(frozen=True)
class FaultRecord:
    """What the fault step did and knew."""

    user: str  # the account's SIP user (From: <sip:user@...>)
    configured_route: tuple[str, ...]  # normalised
    edge_route: tuple[str, ...]  # normalised: R's Service-Route, E
    calm_at: float  # the account was seen registered through its route, nothing being repaired
    started: float  # R began holding its answers
    held: Any = None  # the WireRecord at P that R held while the link flapped (None: not seen)
    actions: tuple[Row, ...] = ()  # what the demo did (lab R, network), with times


@dataclass(frozen=True)
class Event:
    at: float
    type: str
    reason: str
    message: str


@dataclass
class Verdict:
    drifted: bool
    repaired: bool
    method: str | None = None
    trigger: str | None = None
    duration_ms: float | None = None
    drift_evidence: list[str] = field(default_factory=list)
    repair_evidence: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.drifted and self.repaired and not self.problems


def first_change(history: Sequence[Change], key: str, pred, since: float) -> tuple[float, Any] | None:
    """(when, value) of the first change of ``key`` at or after ``since`` whose value matches ``pred``."""
    for t, k, v in history:
        if k == key and t >= since and pred(v):
            return t, v
    return None


def value_at(history: Sequence[Change], key: str, t: float) -> Any:
    """The value ``key`` had at time ``t`` (as recorded)."""
    value = None
    for tt, k, v in history:
        if tt > t:
            break
        if k == key:
            value = v
    return value


_REPAIRED_EVENT = re.compile(r"\((?P<method>[a-z-]+), (?P<ms>\d+) ms\)")


def _mine(wire: Iterable[Any], user: str) -> list[Any]:
    return sorted((r for r in wire if r.method == "REGISTER" and f":{user}@" in r.from_uri and r.node in ("P", "E")),
                  key=lambda r: r.at)


def judge(fault: FaultRecord, wire: Iterable[Any], history: Sequence[Change], events: Iterable[Event] = (),
          agent_rows: Iterable[Row] = ()) -> Verdict:
    mine = _mine(wire, fault.user)
    events = sorted(events, key=lambda e: e.at)
    v = Verdict(drifted=False, repaired=False, rows=[*fault.actions, *agent_rows])
    rows = v.rows

    if fault.held is not None:
        copies = sum(1 for r in mine if r.node == "P" and r.call_id == fault.held.call_id and r.cseq == fault.held.cseq)
        rows.append(Row(fault.held.at, "wire P", f"REGISTER in flight via P (Route {fmt_route(fault.held.route)}, Call-ID "
                                                 f"{fault.held.call_id[:10]}), held at R"
                                                 + (f"; {copies - 1} retransmissions while held" if copies > 1 else "")))

    # ---- the drift
    early = [r for r in mine if r.node == "E" and fault.calm_at <= r.at < fault.started]
    if early:
        v.problems.append(f"a REGISTER of {fault.user} reached E at {utc(early[0].at)}, before the fault started: "
                          "the account was off its route already")
    drift = next((r for r in mine if r.node == "E" and r.at >= fault.started), None)
    out = first_change(history, "inSync", lambda x: x is False, fault.started)
    ris_false = first_change(history, "RouteInSync", lambda x: x[0] == "False", fault.started)
    status_out = min((c for c in (out, ris_false) if c), default=None, key=lambda c: c[0])
    if drift is None:
        v.problems.append(f"no REGISTER of {fault.user} reached the edge E after the fault started")
    else:
        rows.append(Row(drift.at, "wire E", f"REGISTER sent straight to the edge E, bypassing P: Route "
                                            f"{fmt_route(drift.route)}, from {drift.src} (Call-ID {drift.call_id[:10]})"))
        v.drift_evidence.append(f"wire: REGISTER at E {drift.at - fault.started:.3f} s after the fault started, "
                                f"Route {fmt_route(drift.route)}")
        if tuple(norm(u) for u in drift.route) != fault.edge_route:
            v.problems.append(f"the REGISTER at E carried Route {fmt_route(drift.route)}, not the Service-Route "
                              f"{fmt_route(list(fault.edge_route))}")
    if status_out is None:
        if drift is not None:
            v.problems.append("the REGISTER went to E but the status never left the route (route.inSync, RouteInSync)")
    else:
        v.drift_evidence.append(f"status: out of sync {status_out[0] - fault.started:.3f} s after the fault started")
    drift_events = [e for e in events if e.reason == "RouteDrift" and e.at >= fault.started - 1]
    if drift_events:
        v.drift_evidence.append(f"event: {drift_events[0].type} RouteDrift: {drift_events[0].message}")
    v.drifted = drift is not None and status_out is not None and not early
    _status_rows(rows, history, fault)
    if drift is None:
        return v

    # ---- the repair
    old_ids = {r.call_id for r in mine if r.at <= drift.at}
    fresh = [r for r in mine if r.at > drift.at and r.call_id not in old_ids]
    back = next((r for r in fresh if r.node == "P" and r.expires != "0"), None)
    fresh_e = [r for r in fresh if r.node == "E"]
    if fresh_e:
        v.problems.append(f"repair not via P: the new registration client sent {len(fresh_e)} REGISTER(s) to E")
    if back is None:
        v.problems.append("no REGISTER of a new registration client through P after the drift")
    else:
        rows.append(Row(back.at, "wire P", f"first REGISTER through P again: Route {fmt_route(back.route)}, from "
                                           f"{back.src}, new Call-ID {back.call_id[:10]}"))
        v.repair_evidence.append(f"wire: a new registration client through P {back.at - drift.at:.3f} s after the "
                                 f"drift, Route {fmt_route(back.route)}")
        if tuple(norm(u) for u in back.route) != fault.configured_route:
            v.problems.append(f"repair not via the configured route: the REGISTER through P carried Route "
                              f"{fmt_route(back.route)}, not {fmt_route(list(fault.configured_route))}")
            back = None

    v.method, v.trigger, v.duration_ms = _recorded_repair(history, events, fault, drift.at, v.repair_evidence)
    if v.method is None:
        v.problems.append("no repair recorded (status.route.lastRepair, the ladder's pod restart, a RouteRepaired "
                          "event)")
    since_out = status_out[0] if status_out else drift.at
    back_in_sync = first_change(history, "RouteInSync", lambda x: x[0] == "True", since_out)
    if back_in_sync is None:
        v.problems.append("RouteInSync never came back to True after the drift")
    else:
        v.repair_evidence.append(f"status: RouteInSync True again {back_in_sync[0] - drift.at:.3f} s after the drift")
    v.repaired = back is not None and not fresh_e and v.method is not None and back_in_sync is not None
    if back is not None:
        v.notes.append(_after_note(mine, drift, old_ids, back))
    return v


def _recorded_repair(history: Sequence[Change], events: Sequence[Event], fault: FaultRecord, drift_at: float,
                     evidence: list[str]) -> tuple[str | None, str | None, float | None]:
    """(method, trigger, duration ms) of the repair as the cluster recorded it, newest record after the drift."""
    reps = [val for t, k, val in history if k == "lastRepair" and val and val[2] == "repaired"
            and (parse_time(val[4]) or 0) >= drift_at - 0.5]
    if reps:
        method, trigger, _result, _start, _done, ms = reps[-1]
        evidence.append(f"status: lastRepair {method} (trigger {trigger}), {ms or 0:.0f} ms")
        return method, trigger, ms
    restarted = first_change(history, "ladder", lambda x: x[0] == "PodRestarted", fault.started)
    if restarted:
        last = first_change(history, "ladderLast", lambda x: x[0] == "restart-pod", restarted[0])
        if last:
            evidence.append(f"status: ladder PodRestarted, then lastMethod restart-pod ({last[1][1] or 0:.0f} ms)")
            return "restart-pod", "operator", last[1][1]
    for e in events:
        m = _REPAIRED_EVENT.search(e.message)
        if e.reason == "RouteRepaired" and e.at >= fault.started - 1 and m:
            evidence.append(f"event: RouteRepaired: {e.message}")
            return m.group("method"), "operator", float(m.group("ms"))
    return None, None, None


def _status_rows(rows: list[Row], history: Sequence[Change], fault: FaultRecord) -> None:
    """The status changes after the fault started, as timeline rows (observed: when the watch delivered them)."""
    since = fault.started
    drift_at = first_change(history, "lastDriftAt", lambda x: bool(x), since)
    if drift_at and parse_time(drift_at[1]) is not None:
        eff = value_at(history, "effective", drift_at[0]) or ()
        rows.append(Row(parse_time(drift_at[1]), "agent",
                        f"measured the drift from its own transmit log: status.route.inSync=false, effective "
                        f"{fmt_route(list(eff))}, firstHop {value_at(history, 'firstHop', drift_at[0]) or '?'}"))
    out = first_change(history, "inSync", lambda x: x is False, since)
    if out:
        rows.append(Row(out[0], "agent", f"status patch: route.inSync=false, firstHop "
                                         f"{value_at(history, 'firstHop', out[0]) or '?'} (observed)"))
    ris = first_change(history, "RouteInSync", lambda x: x[0] == "False", since)
    if ris:
        rows.append(Row(ris[0], "operator", f"condition RouteInSync=False ({ris[1][1]}) (observed)"))
    for phase, what in (("RepairRequested", "a new repairToken in the agent's assignment ConfigMap"),
                        ("PodRestarted", "the operator deleted the agent pod")):
        c = first_change(history, "ladder", lambda x, p=phase: x[0] == p, since)
        if c:
            rows.append(Row(c[0], "operator", f"ladder {phase}: {what} (observed)"))
    rep = first_change(history, "lastRepair", lambda x: bool(x) and (parse_time(x[4]) or 0) >= since, since)
    if rep:
        method, trigger, result, started, done, ms = rep[1]
        if parse_time(started) is not None:
            rows.append(Row(parse_time(started), "agent", f"repair started: {method} (trigger {trigger})"))
        if parse_time(done) is not None:
            rows.append(Row(parse_time(done), "agent", f"repair done: {method}, {ms or 0:.0f} ms from drift seen to "
                                                       f"the first REGISTER via the route ({result})"))
    if ris:
        back = first_change(history, "RouteInSync", lambda x: x[0] == "True", ris[0])
        if back:
            rows.append(Row(back[0], "operator", "condition RouteInSync=True (observed)"))
        idle = first_change(history, "ladder", lambda x: x[0] == "Idle", ris[0])
        if idle:
            method, ms = value_at(history, "ladderLast", idle[0]) or (None, None)
            rows.append(Row(idle[0], "operator", f"ladder Idle: lastMethod {method}, lastDurationMs {ms or 0:.0f} "
                                                 "(observed)"))


def _after_note(mine: list[Any], drift: Any, old_ids: set[str], back: Any) -> str:
    rest = [r for r in mine if r.at > drift.at and not (r.call_id == drift.call_id and r.cseq == drift.cseq)]
    fresh = [r for r in rest if r.call_id not in old_ids]
    unreg = [r for r in rest if r.call_id in old_ids and r.expires == "0"]
    late = [r for r in rest if r.call_id in old_ids and r.expires != "0" and r.at > back.at]
    via_e = [r for r in fresh if r.node == "E"]
    note = (f"wire after the repair: the new registration client sent {len(fresh)} REGISTER(s), "
            f"{len(fresh) - len(via_e)} via P and {len(via_e)} via E")
    if unreg:
        note += (f"; the drifted client un-REGISTERed (Expires: 0) via {'/'.join(sorted({r.node for r in unreg}))} "
                 "when its account was re-created")
    if late:
        note += (f"; {len(late)} late REGISTER(s) of the old clients (a transaction held at R, completed by pjsip) "
                 f"via {'/'.join(sorted({r.node for r in late}))}")
    return note
