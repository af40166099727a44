"""Prometheus metrics of the operator (served by prometheus_client on SIPFLEET_METRICS_PORT)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ACCOUNTS = Gauge("sipfleet_accounts", "SipAccounts by condition type and status", ["condition", "status"])
AGENT_PODS = Gauge("sipfleet_agent_pods", "Agent pods by readiness", ["ready"])
AGENTS = Gauge("sipfleet_agents", "Agents (Deployments) the operator placed accounts on")
DRIFT_SEEN = Counter("sipfleet_drift_seen_total", "Route drifts seen (ladder started)")
DRIFT_REPAIRED = Counter("sipfleet_drift_repaired_total", "Route drifts repaired", ["method"])
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
