"""Step 5: detection and repair, followed until the verdict (:func:`sipfleet.demo.verdict.judge`, re-evaluated on
fresh data) says drifted and repaired, the ladder is Idle and the wire has settled; then the timeline, what the
wire showed after the repair and the account's Kubernetes events are printed."""

from __future__ import annotations

import time
from pathlib import Path

from .agentlog import read as read_log
from .agentlog import rows as log_rows
from .context import Demo, DemoError
from .fault import HOLD_MS, Target
from .output import utc
from .timeline import Row, render
from .verdict import Event, FaultRecord, Verdict, judge
from .watcher import StatusWatcher


def events(d: Demo, name: str) -> list[Event]:
    from kubernetes import client

    with d.api() as api:
        evs = client.CoreV1Api(api).list_namespaced_event(
            d.namespace, field_selector=f"involvedObject.name={name},involvedObject.kind=SipAccount").items

    def when(e) -> float:
        for ts in (e.last_timestamp, e.event_time, e.first_timestamp):
            if ts is not None:
                return ts.timestamp()
        return 0.0

    evs.sort(key=lambda e: (int(when(e)), int(e.metadata.resource_version or 0)))
    return [Event(when(e), e.type or "", e.reason or "", e.message or "") for e in evs]


class _AgentLog:
    """The agent pod's log lines, kept across reads (a pod the ladder deletes takes its log file with it)."""

    def __init__(self, d: Demo, t: Target):
        self.d, self.t, self.lines = d, t, []

    def refresh(self) -> None:
        try:
            lines = read_log(self.d.cluster.container_log(self.t.pod, self.d.namespace))
        except Exception:  # noqa: BLE001 - the pod is gone: keep what was read
            return
        if len(lines) >= len(self.lines):
            self.lines = lines

    def rows(self, since: float) -> list[Row]:
        return log_rows(self.lines, since, account=self.t.name)


def _quiet(d: Demo, t: Target, seconds: float) -> bool:
    return not [r for r in d.lab.wire(since=time.time() - seconds) if t.mine(r)]


def step_follow(d: Demo, t: Target, fault: FaultRecord, watcher: StatusWatcher) -> Verdict:
    out = d.out
    out.step(5, f"detection and repair of {t.name!r}")
    log = _AgentLog(d, t)
    log.refresh()

    def verdict(with_events: bool = False) -> Verdict:
        wire = d.lab.wire(since=fault.calm_at - 600, method="REGISTER")
        return judge(fault, wire, watcher.history(), events(d, t.name) if with_events else (),
                     log.rows(fault.started - 1))

    waits = [
        (lambda: verdict().drifted, 60, f"{t.name} out of sync on the wire and in the status"),
        (lambda: verdict().repaired and (watcher.current("ladder") or ("",))[0] == "Idle", 120,
         f"{t.name} repaired: a new registration client through P, the repair recorded, RouteInSync True, "
         "ladder Idle"),
        # the REGISTER R held ends HOLD_MS after it arrived: wait past that, then for a quiet wire
        (lambda: time.time() > fault.started + HOLD_MS / 1000 + 2 and _quiet(d, t, 1.5), 30,
         f"{t.name}'s REGISTERs settled after the repair"),
    ]
    missed = []
    for pred, cap, what in waits:
        try:
            d.wait(pred, cap, what)
        except DemoError as e:
            missed.append(str(e).splitlines()[0])
            break
        log.refresh()
    log.refresh()
    wire = d.lab.wire(since=fault.calm_at - 600, method="REGISTER")
    evs = events(d, t.name)
    v = judge(fault, wire, watcher.history(), evs, log.rows(fault.started - 1))
    if d.args.record:
        from .recording import dump

        dump(Path(d.args.record), fault, [r for r in wire if t.mine(r)], watcher.history(), evs,
             log.rows(fault.started - 1))
        out.line(f"the verdict's inputs written to {d.args.record}")
    v.problems += [m for m in missed if m not in v.problems]

    out.line("timeline (wire = the lab nodes' own logs; agent, pjsua = the agent's log; observed = when a watch on "
             "the SipAccount delivered the change)")
    out.block(render(v.rows, fault.started))
    for note in v.notes:
        out.line(note)
    _print_events(d, t.name, fault.started)
    return v


def _print_events(d: Demo, name: str, since: float) -> None:
    out = d.out
    evs = events(d, name)
    recent = [e for e in evs if e.at >= since - 2]
    out.line()
    out.line(f"Kubernetes events of sipaccount/{name} (this run; kubectl{d.ns_flag} get events "
             f"--field-selector involvedObject.name={name})")
    if not recent:
        out.line("  (none)")
    for e in recent:
        out.line(f"  {utc(e.at)[:8]}  {e.type:<7}  {e.reason:<16}  {e.message}")
    if len(evs) > len(recent):
        out.line(f"  ({len(evs) - len(recent)} older events from earlier runs not shown)")

