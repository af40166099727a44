"""Pure fleet summary for ``kubectl sipfleet status``: accounts by condition, drifting now, repairs in a window
(p50/p99, methods), agents with their accounts, restarts and memory, unschedulable agent pods.

``summarize`` takes the API objects (plain dicts), the memory readings and ``now``; it returns a JSON-ready dict
(the ``-o json|yaml`` output). ``render`` turns that dict into tables for a person.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

from sipfleet.api import keys

from . import objects as o
from .fmt import age, clock, iso, ms, paint, parse_time, percentile, size, status_colour, table

CONDITIONS = ("Ready", "Registered", "RouteInSync", "AgentReady", "Degraded")
#: Degraded is healthy when False
GOOD = {"Degraded": "False", keys.CONDITION_ROUTE_FLAPPING: "False"}


def _in_window(t: datetime | None, since: datetime) -> bool:
    return t is not None and t >= since


def repairs_in_window(accounts: list[dict], since: datetime) -> list[dict]:
    out = []
    for acc in accounts:
        for r in o.repair_records(acc):
            t = parse_time(r.get("completedAt")) or parse_time(r.get("startedAt"))
            if _in_window(t, since):
                out.append({"namespace": o.namespace(acc), "name": o.name(acc), "method": r.get("method"),
                            "trigger": r.get("trigger"), "result": r.get("result"),
                            "durationMs": r.get("durationMs"), "at": iso(t)})
    return sorted(out, key=lambda r: r["at"] or "")


def repair_stats(records: list[dict]) -> dict:
    done = [r for r in records if r["result"] == "repaired" and r["durationMs"] is not None]
    durations = [float(r["durationMs"]) for r in done]
    return {
        "count": len(records),
        "repaired": len([r for r in records if r["result"] == "repaired"]),
        "failed": len([r for r in records if r["result"] == "failed"]),
        "inProgress": len([r for r in records if r["result"] == "in-progress"]),
        "p50Ms": percentile(durations, 50),
        "p99Ms": percentile(durations, 99),
        "maxMs": max(durations) if durations else None,
        "methods": dict(sorted(Counter(r["method"] for r in records).items())),
        "triggers": dict(sorted(Counter(r["trigger"] for r in records).items())),
    }


def event_counts(events: list[dict], since: datetime) -> dict:
    """RouteDrift / RouteRepaired events on SipAccounts that last happened in the window (``count`` repeats
    included)."""
    out = {keys.EVENT_ROUTE_DRIFT: 0, keys.EVENT_ROUTE_REPAIRED: 0}
    for e in events:
        if e.get("reason") in out and (e.get("involvedObject") or {}).get("kind") == "SipAccount" \
                and _in_window(o.event_time(e), since):
            out[e["reason"]] += int(e.get("count") or 1)
    return out


def drifting(accounts: list[dict]) -> list[dict]:
    out = []
    for acc in accounts:
        st = o.status(acc)
        route, ladder = st.get("route") or {}, st.get("ladder") or {}
        if route.get("inSync") is False:
            out.append({"namespace": o.namespace(acc), "name": o.name(acc), "since": route.get("lastDriftAt"),
                        "ladder": ladder.get("phase") or "Idle", "attempts": ladder.get("attempts") or 0,
                        "effective": route.get("effective") or [], "firstHop": route.get("firstHop")})
    return out


def agents(deployments: list[dict], pods: list[dict], memory: dict[tuple[str, str], int] | None) -> list[dict]:
    by_agent: dict[tuple[str, str], list[dict]] = {}
    for p in pods:
        a = o.agent_of_pod(p)
        if a:
            by_agent.setdefault((o.namespace(p), a), []).append(p)
    out = []
    names = {o.ref(d) for d in deployments} | set(by_agent)
    deps = {o.ref(d): d for d in deployments}
    for ref in sorted(names):
        d = deps.get(ref)
        ready, want = o.deployment_ready(d) if d else (0, 0)
        plist = sorted(by_agent.get(ref, []), key=o.name)
        accounts = o.owned_accounts(d) if d else sorted({n for p in plist for n in o.owned_accounts(p)})
        out.append({
            "namespace": ref[0], "name": ref[1], "ready": f"{ready}/{want}", "accounts": accounts,
            "pods": [{
                "name": o.name(p), "phase": o.status(p).get("phase"), "ready": o.pod_ready(p),
                "restarts": o.pod_restarts(p), "node": (p.get("spec") or {}).get("nodeName"),
                "ip": o.status(p).get("podIP"),
                "memoryBytes": None if memory is None else memory.get(o.ref(p)),
                "waiting": [w[1] for w in o.pod_waiting(p)],
            } for p in plist],
        })
    return out


def unschedulable(pods: list[dict]) -> list[dict]:
    out = []
    for p in pods:
        c = o.pod_unschedulable(p)
        if c:
            out.append({"namespace": o.namespace(p), "pod": o.name(p), "agent": o.agent_of_pod(p),
                        "reason": c.get("reason"), "message": c.get("message") or "",
                        "since": c.get("lastTransitionTime")})
    return out


def condition_counts(accounts: list[dict]) -> dict:
    counts = {t: {"True": 0, "False": 0, "Unknown": 0} for t in CONDITIONS}
    for acc in accounts:
        for t in CONDITIONS:
            c = o.condition(acc, t)
            counts[t][(c or {}).get("status") if c and c.get("status") in ("True", "False") else "Unknown"] += 1
    return counts


def not_ready(accounts: list[dict]) -> list[dict]:
    out = []
    for acc in accounts:
        c = o.condition(acc, "Ready") or {}
        if c.get("status") != "True":
            out.append({"namespace": o.namespace(acc), "name": o.name(acc), "status": c.get("status") or "Unknown",
                        "reason": c.get("reason") or "NoConditions", "message": c.get("message") or "",
                        "since": c.get("lastTransitionTime")})
    return out


def summarize(accounts: list[dict], events: list[dict], deployments: list[dict], pods: list[dict],
              memory: dict[tuple[str, str], int] | None, memory_note: str | None, now: datetime,
              window_seconds: float, scope: str) -> dict:
    since = now - timedelta(seconds=window_seconds)
    records = repairs_in_window(accounts, since)
    return {
        "scope": scope,
        "now": iso(now),
        "window": {"seconds": window_seconds, "since": iso(since)},
        "accounts": {"total": len(accounts), "conditions": condition_counts(accounts), "notReady": not_ready(accounts),
                     "paused": sorted(f"{o.namespace(a)}/{o.name(a)}" for a in accounts if o.paused(a))},
        "drifting": drifting(accounts),
        "repairs": {**repair_stats(records), "events": event_counts(events, since), "records": records},
        "agents": agents(deployments, pods, memory),
        "memory": "ok" if memory is not None else f"n/a ({memory_note or 'not readable'})",
        "unschedulable": unschedulable(pods),
    }


# ------------------------------------------------------------------------------------------------------- rendering


def _names(names: list[str], wide: bool, limit: int = 4) -> str:
    if wide or len(names) <= limit:
        return ",".join(names) or "-"
    return ",".join(names[:limit]) + f",+{len(names) - limit}"


def _window(seconds: float) -> str:
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= n and seconds % n == 0:
            return f"{int(seconds // n)}{unit}"
    return f"{seconds:g}s"


def render(s: dict, colour: bool = False, wide: bool = False) -> str:
    now = parse_time(s["now"])
    ns_col = s["scope"] == "all namespaces"
    out = []
    acc = s["accounts"]
    out.append(paint(f"ACCOUNTS ({acc['total']} in {s['scope']})", "bold", colour))
    rows = []
    for t in CONDITIONS:
        c = acc["conditions"][t]
        good = GOOD.get(t, "True")
        bad = "False" if good == "True" else "True"
        rows.append([t, (str(c[good]), "green" if c[good] else None), (str(c[bad]), "red" if c[bad] else None),
                     (str(c["Unknown"]), "yellow" if c["Unknown"] else None)])
    out.append(table(["CONDITION", "HEALTHY", "UNHEALTHY", "UNKNOWN"], rows, colour))
    if acc["notReady"]:
        out.append("")
        out.append(paint("NOT READY", "bold", colour))
        rows = [([r["namespace"]] if ns_col else []) + [r["name"], (r["reason"], status_colour(r["status"])),
                age(parse_time(r["since"]), now)] + ([r["message"]] if wide else []) for r in acc["notReady"]]
        out.append(table((["NAMESPACE"] if ns_col else []) + ["NAME", "REASON", "SINCE"]
                         + (["MESSAGE"] if wide else []), rows, colour))

    out.append("")
    out.append(paint(f"DRIFTING NOW ({len(s['drifting'])})", "bold", colour))
    if s["drifting"]:
        rows = [([d["namespace"]] if ns_col else []) + [d["name"], age(parse_time(d["since"]), now),
                (d["ladder"], "yellow" if d["ladder"] != "Degraded" else "red"), d["attempts"],
                d["firstHop"] or "-", ",".join(d["effective"]) or "-"] for d in s["drifting"]]
        out.append(table((["NAMESPACE"] if ns_col else []) + ["NAME", "SINCE", "LADDER", "ATTEMPTS", "FIRST HOP",
                                                              "EFFECTIVE ROUTE"], rows, colour))
    else:
        out.append("none")

    r = s["repairs"]
    out.append("")
    win = _window(s["window"]["seconds"])
    out.append(paint(f"REPAIRS (last {win})", "bold", colour))
    methods = ", ".join(f"{k} {v}" for k, v in r["methods"].items()) or "-"
    triggers = ", ".join(f"{k} {v}" for k, v in r["triggers"].items()) or "-"
    out.append(table(["REPAIRS", "REPAIRED", "FAILED", "IN PROGRESS", "P50", "P99", "MAX", "METHODS", "TRIGGERS"],
                     [[r["count"], r["repaired"], (str(r["failed"]), "red" if r["failed"] else None), r["inProgress"],
                       ms(r["p50Ms"]), ms(r["p99Ms"]), ms(r["maxMs"]), methods, triggers]], colour))
    ev = r["events"]
    out.append(f"events: {keys.EVENT_ROUTE_DRIFT} {ev[keys.EVENT_ROUTE_DRIFT]}, "
               f"{keys.EVENT_ROUTE_REPAIRED} {ev[keys.EVENT_ROUTE_REPAIRED]}")
    if wide and r["records"]:
        rows = [([x["namespace"]] if ns_col else []) + [clock(parse_time(x["at"])), x["name"], x["method"],
                x["trigger"], (x["result"], "green" if x["result"] == "repaired" else "red"), ms(x["durationMs"])]
                for x in r["records"]]
        out.append(table((["NAMESPACE"] if ns_col else []) + ["AT (UTC)", "NAME", "METHOD", "TRIGGER", "RESULT",
                                                              "DURATION"], rows, colour))

    out.append("")
    out.append(paint(f"AGENTS ({len(s['agents'])})", "bold", colour) + ("" if s["memory"] == "ok"
                                                                       else f"  memory {s['memory']}"))
    rows = []
    for a in s["agents"]:
        pods = a["pods"] or [None]
        for p in pods:
            ready_ok = a["ready"].split("/")[0] == a["ready"].split("/")[1] and a["ready"] != "0/0"
            row = ([a["namespace"]] if ns_col else []) + [a["name"], (a["ready"], "green" if ready_ok else "red"),
                   len(a["accounts"]), _names(a["accounts"], wide)]
            if p is None:
                row += ["-", "-", "-", "-"]
            else:
                status = ",".join(p["waiting"]) or p["phase"] or "-"
                row += [p["name"], (status, "green" if p["ready"] else "red"),
                        (str(p["restarts"]), "yellow" if p["restarts"] else None),
                        size(p["memoryBytes"]) if s["memory"] == "ok" else "n/a"]
            if wide:
                row += [(p or {}).get("node") or "-", (p or {}).get("ip") or "-"]
            rows.append(row)
    out.append(table((["NAMESPACE"] if ns_col else []) + ["AGENT", "READY", "#", "ACCOUNTS", "POD", "STATUS",
                                                          "RESTARTS", "MEMORY"] + (["NODE", "IP"] if wide else []),
                     rows, colour))
    if s["unschedulable"]:
        out.append("")
        out.append(paint(f"UNSCHEDULABLE AGENT PODS ({len(s['unschedulable'])})", "bold", colour))
        rows = [([u["namespace"]] if ns_col else []) + [u["pod"], age(parse_time(u["since"]), now),
                (u["message"], "red")] for u in s["unschedulable"]]
        out.append(table((["NAMESPACE"] if ns_col else []) + ["POD", "SINCE", "SCHEDULER"], rows, colour))
    if acc["paused"]:
        out.append("")
        out.append("paused: " + ", ".join(acc["paused"]))
    return "\n".join(out)
