"""Pure route story of one SipAccount for ``kubectl sipfleet describe``: what its status remembers (conditions'
lastTransitionTime, registration, route lastDrift/repairs, ladder) and its Events, merged into one timeline.

``story`` returns a JSON-ready dict (``-o json|yaml``); ``render`` prints it for a person.
"""

from __future__ import annotations

from datetime import datetime

from sipfleet.api import keys

from . import objects as o
from .fmt import clock, iso, ms, paint, parse_time, status_colour, table

#: conditions that are healthy when False
HEALTHY_FALSE = frozenset({"Degraded", keys.CONDITION_ROUTE_FLAPPING})


def _entry(t: datetime | None, source: str, what: str, level: str = "info", raw: str | None = None) -> dict | None:
    """One timeline row; ``raw`` is the API's time string: without a fraction it is precise to the second only
    (conditions, events), which ``render`` shows."""
    if t is None:
        return None
    precise = raw is None or "." in raw
    return {"time": iso(t), "source": source, "what": what, "level": level, "precision": "ms" if precise else "s"}


def _event_order(e: dict) -> tuple:
    """Events are precise to the second: within one second the order they were written in (resourceVersion, which
    etcd hands out increasing; opaque by contract, so only a tie-break)."""
    rv = o.meta(e).get("resourceVersion") or ""
    return (iso(o.event_first_time(e)) or "", int(rv) if rv.isdigit() else 0)


def entries(acc: dict, events: list[dict]) -> list[dict]:
    st = o.status(acc)
    created = o.meta(acc).get("creationTimestamp")
    out: list[dict | None] = [_entry(parse_time(created), "api", "SipAccount created", raw=created)]
    for c in st.get("conditions") or []:
        bad = c.get("status") != ("False" if c.get("type") in HEALTHY_FALSE else "True")
        msg = f": {c['message']}" if c.get("message") else ""
        out.append(_entry(parse_time(c.get("lastTransitionTime")), "operator",
                          f"condition {c.get('type')}={c.get('status')} ({c.get('reason')}){msg}",
                          "warning" if bad else "info", raw=c.get("lastTransitionTime")))
    reg = st.get("registration") or {}
    if reg.get("registeredSince"):
        exp = f", expires {reg['expiresSeconds']} s" if reg.get("expiresSeconds") else ""
        out.append(_entry(parse_time(reg["registeredSince"]), "agent", f"registered{exp}"))
    if reg.get("lastFailure"):
        detail = " ".join(str(x) for x in (reg.get("code"), reg.get("reason")) if x not in (None, ""))
        out.append(_entry(parse_time(reg["lastFailure"]), "agent", f"registration failed {detail}".rstrip(), "warning"))
    route = st.get("route") or {}
    if route.get("lastDriftAt"):
        out.append(_entry(parse_time(route["lastDriftAt"]), "agent", "route drift seen (REGISTER off the configured "
                          "route)", "warning"))
    for r in o.repair_records(acc):
        tok = f", token {r['token']}" if r.get("token") else ""
        out.append(_entry(parse_time(r.get("startedAt")), "agent",
                          f"repair started: {r.get('method')} (trigger {r.get('trigger')}{tok})"))
        if r.get("completedAt"):
            out.append(_entry(parse_time(r["completedAt"]), "agent",
                              f"repair {r.get('result')}: {r.get('method')}, {ms(r.get('durationMs'))}"
                              + (" from drift seen" if r.get("driftSeenAt") else ""),
                              "info" if r.get("result") == "repaired" else "warning"))
    if route.get("observedAt"):
        sync = {True: "in sync", False: "OUT OF SYNC", None: "not compared"}[route.get("inSync")]
        out.append(_entry(parse_time(route["observedAt"]), "agent",
                          f"last REGISTER observed: first hop {route.get('firstHop') or '-'}, route "
                          f"{','.join(route.get('effective') or []) or '(none)'}, {sync}",
                          "warning" if route.get("inSync") is False else "info"))
    ladder = st.get("ladder") or {}
    if ladder.get("requestedAt"):
        out.append(_entry(parse_time(ladder["requestedAt"]), "operator",
                          f"ladder {ladder.get('phase')} (attempt {ladder.get('attempts', 0)}"
                          + (f", token {ladder['token']}" if ladder.get("token") else "") + ")",
                          "info" if ladder.get("phase") == "Idle" else "warning"))
    if ladder.get("nextAttemptAt"):
        out.append(_entry(parse_time(ladder["nextAttemptAt"]), "operator", "ladder: next attempt due", "warning"))
    for e in sorted(o.events_for(events, o.namespace(acc), o.name(acc)), key=_event_order):
        count = int(e.get("count") or 1)
        src = (e.get("source") or {}).get("component") or e.get("reportingComponent") or "event"
        lvl = "warning" if e.get("type") == "Warning" else "info"
        what = f"event {e.get('type')} {e.get('reason')}: {e.get('message') or ''}".rstrip(": ")
        first, last = o.event_first_time(e), o.event_time(e)
        out.append(_entry(first, src, what + (f" (first of {count})" if count > 1 else ""), lvl,
                          raw=e.get("firstTimestamp") or e.get("eventTime")))
        if count > 1 and last and first and last != first:
            out.append(_entry(last, src, what + f" (last of {count})", lvl, raw=e.get("lastTimestamp")))
    rows = [e for e in out if e is not None]
    return sorted(rows, key=lambda e: e["time"])


def story(acc: dict, events: list[dict]) -> dict:
    st = o.status(acc)
    spec = acc.get("spec") or {}
    return {
        "namespace": o.namespace(acc),
        "name": o.name(acc),
        "aor": spec.get("aor"),
        "registrar": spec.get("registrar"),
        "route": spec.get("route") or [],
        "routeMode": spec.get("routeMode", "prevent"),
        "paused": o.paused(acc),
        "agent": (st.get("agent") or {}).get("name"),
        "pod": (st.get("agent") or {}).get("pod"),
        "registration": st.get("registration") or {},
        "routeStatus": {k: v for k, v in (st.get("route") or {}).items() if k not in ("repairHistory",)},
        "ladder": st.get("ladder") or {},
        "conditions": [{k: c.get(k) for k in ("type", "status", "reason", "message", "lastTransitionTime")}
                       for c in st.get("conditions") or []],
        "timeline": entries(acc, events),
    }


def _clock(e: dict) -> str:
    text = clock(parse_time(e["time"]))
    return text[:-4] + "    " if e.get("precision") == "s" else text


def render(s: dict, colour: bool = False, wide: bool = False) -> str:
    rs = s["routeStatus"]
    lines = [
        paint(f"{s['namespace']}/{s['name']}", "bold", colour) + (paint("  (paused)", "yellow", colour)
                                                                 if s["paused"] else ""),
        f"AOR:        {s['aor']}",
        f"Registrar:  {s['registrar']}",
        f"Route:      {','.join(s['route']) or '(none)'}   mode {s['routeMode']}",
        f"Agent:      {s['agent'] or '-'}   pod {s['pod'] or '-'}",
        f"Registered: {s['registration'].get('state', '-')}"
        + (f" ({s['registration'].get('code')} {s['registration'].get('reason') or ''})".rstrip()
           if s["registration"].get("code") is not None else ""),
        f"Effective:  {','.join(rs.get('effective') or []) or '-'}   first hop {rs.get('firstHop') or '-'}   "
        f"in sync {rs.get('inSync') if rs.get('inSync') is not None else '-'}",
        f"Ladder:     {s['ladder'].get('phase', 'Idle')}"
        + (f", last {s['ladder']['lastMethod']} {ms(s['ladder'].get('lastDurationMs'))}"
           if s["ladder"].get("lastMethod") else ""),
        "",
        table(["CONDITION", "STATUS", "REASON"] + (["MESSAGE"] if wide else []),
              [[c["type"], (c["status"], status_colour(c["status"], "False" if c["type"] in HEALTHY_FALSE else "True")),
                c["reason"]] + ([c.get("message") or ""] if wide else []) for c in s["conditions"]], colour),
        "",
        paint("TIMELINE", "bold", colour),
        table(["TIME (UTC)", "SOURCE", "WHAT"],
              [[_clock(e), e["source"], (e["what"], "yellow" if e["level"] == "warning" else None)]
               for e in s["timeline"]], colour),
        "(times without milliseconds are precise to the second only: conditions and events)"
        if any(e.get("precision") == "s" for e in s["timeline"]) else "",
    ]
    return "\n".join(lines).rstrip()
