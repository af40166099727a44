"""Prometheus metrics of the operator (served by prometheus_client on SIPFLEET_METRICS_PORT).

Counters whose label values are known in advance are exported at 0 from the start: a series that first appears
at 1 is never counted by Prometheus' ``increase()``/``rate()`` (they need a sample before the first increment).
"""

from __future__ import annotations

from typing import get_args

from prometheus_client import Counter, Gauge, Histogram

from sipfleet.api.models import RepairMethod

ACCOUNTS = Gauge("sipfleet_accounts", "SipAccounts by condition type and status", ["condition", "status"])
AGENT_PODS = Gauge("sipfleet_agent_pods", "Agent pods by readiness", ["ready"])
AGENTS = Gauge("sipfleet_agents", "Agents (Deployments) the operator placed accounts on")
DRIFT_SEEN = Counter("sipfleet_drift_seen_total", "Route drifts seen (ladder started)")
DRIFT_REPAIRED = Counter("sipfleet_drift_repaired_total", "Route drifts repaired", ["method"])


def _zero(counter: Counter, label: str, values: tuple) -> Counter:
    for v in values:
        counter.labels(**{label: v})
    return counter


_zero(DRIFT_REPAIRED, "method", get_args(RepairMethod))
POD_RESTARTS = Counter("sipfleet_agent_pod_restarts_total", "Agent pods deleted by the repair ladder")
REPAIR_SECONDS = Histogram(
    "sipfleet_repair_seconds", "Drift seen to route in sync again",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600),
)
RECONCILE_ERRORS = Counter("sipfleet_reconcile_errors_total", "Reconcile errors", ["where"])
API_WRITES = Counter("sipfleet_operator_api_writes_total", "Write requests sent to the apiserver", ["verb", "kind"])
STATUS_PATCHES = Counter("sipfleet_status_patches_total", "Status patches of SipAccounts by the operator")


def count_write(verb: str, kind: str) -> None:
    API_WRITES.labels(verb=verb, kind=kind).inc()
