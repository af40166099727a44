"""Every dashboard query and every alert expression of sipfleet, run against a real Prometheus.

Promise: :func:`run_all` evaluates each target of ``docs/grafana-dashboard.json`` (``$__rate_interval`` replaced)
and, for each alert of the chart's rules, its data part (the expression without its final threshold) and its full
expression, as instant queries; :func:`has_data` says whether a result holds a number (a non-empty vector that is
not only NaN); :func:`table` prints the rows for a person. Used by the metrics integration test and
``sipfleet demo --with-prometheus``.
"""

from __future__ import annotations

import dataclasses
import math

from . import rules as promrules


@dataclasses.dataclass
class Row:
    kind: str  # "panel" or "alert"
    name: str  # the panel's title or the alert's name
    ref: str  # the target's refId ("" for alerts)
    expr: str  # what was queried for the data (an alert's data part)
    result: list
    full: list | None = None  # an alert's full expression: non-empty = the alert's condition holds


def has_data(result: list) -> bool:
    return any(not math.isnan(float(r["value"][1])) for r in result)


def show(result: list, limit: int = 4) -> str:
    if not result:
        return "(empty)"
    parts = []
    for r in result[:limit]:
        labels = ",".join(f"{k}={v}" for k, v in sorted(r["metric"].items())
                          if k not in ("__name__", "instance", "job"))
        parts.append(f"{{{labels}}} {float(r['value'][1]):.4g}")
    return "; ".join(parts) + (f" (+{len(result) - limit} more)" if len(result) > limit else "")


def run_all(server, spec: dict, rate_interval: str = "5m") -> list[Row]:
    rows = [Row("panel", title, ref, expr, server.query(expr))
            for title, ref, expr in promrules.dashboard_queries(rate_interval=rate_interval)]
    for r in promrules.alerts(spec):
        data = promrules.data_part(r["expr"])
        rows.append(Row("alert", r["alert"], "", data, server.query(data), server.query(r["expr"])))
    return rows


def table(rows: list[Row], notes: dict | None = None) -> list[str]:
    notes = notes or {}
    lines = []
    for row in rows:
        what = f"{row.kind} {row.name}" + (f" [{row.ref}]" if row.ref else "")
        note = notes.get((row.name, row.ref)) or notes.get(row.name) or ""
        cond = "" if row.full is None else f"  | condition: {'holds (' + str(len(row.full)) + ')' if row.full else 'no'}"
        lines.append(f"{what[:60]:60} {show(row.result)}{cond}" + (f"  [needs: {note}]" if note else ""))
    return lines
