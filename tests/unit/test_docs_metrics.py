"""Every metric name in docs/operations.md and docs/grafana-dashboard.json exists in the code's registries, and
every metric the code exports is documented.

The names come from the collectors themselves: the operator's module-level metrics
(``sipfleet_operator.metrics``), a fresh agent worker registry (``sipfleet_agent.metrics.Metrics().registry``) and
the agent supervisor's per-account state gauge (``sipfleet_agent.supervisor.metricsagg.AccountStates``).
If either module is missing, these tests fail (they do not pass vacuously).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
OPERATIONS = REPO / "docs" / "operations.md"
DASHBOARD = REPO / "docs" / "grafana-dashboard.json"
NAME_RE = re.compile(r"\bsipfleet_[a-z0-9_]*[a-z0-9]")

# what prometheus_client exposes for each family type
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "enum": ("",),
}


def _families(collectors) -> dict[str, str]:
    out: dict[str, str] = {}
    for collector in collectors:
        for fam in collector.collect():
            out[fam.name] = fam.type
    return out


def operator_families() -> dict[str, str]:
    from prometheus_client.metrics import MetricWrapperBase

    from sipfleet_operator import metrics

    collectors = [v for v in vars(metrics).values() if isinstance(v, MetricWrapperBase)]
    return _families(collectors)


def agent_families() -> dict[str, str]:
    from sipfleet_agent.metrics import Metrics
    from sipfleet_agent.supervisor.metricsagg import AccountStates
    from sipfleet_agent.supervisor.failover import Failover
    from sipfleet_agent.supervisor.pacing import Pacing

    pacing = Pacing(5.0, lambda key: None)
    pacing.plan.configure({("ns", "alice"): ("r.lab", 1.0)})
    try:
        return _families([Metrics().registry, AccountStates(lambda: [("alice", None)]), pacing,
                          Failover(None, "127.0.0.1")])
    finally:
        pacing.stop()


def exposed(families: dict[str, str]) -> set[str]:
    """Sample names on /metrics, plus the family names of histograms/summaries (how docs name them)."""
    out = {name + suffix for name, typ in families.items() for suffix in SUFFIXES[typ]}
    return out | {name for name, typ in families.items() if typ in ("histogram", "summary")}


def doc_name(name: str, typ: str) -> str:
    """How the docs' metric tables name a family: counters with _total, everything else by family name."""
    return name + "_total" if typ == "counter" else name


def documented_names(text: str) -> set[str]:
    return set(NAME_RE.findall(text))


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert exprs, "the dashboard has no queries"
    return exprs


@pytest.fixture(scope="module")
def known() -> set[str]:
    ops, agent = operator_families(), agent_families()
    assert len(ops) >= 5 and len(agent) >= 5, (ops, agent)
    assert all(n.startswith("sipfleet_") for n in list(ops) + list(agent))
    return exposed(ops) | exposed(agent)


def test_operations_doc_names_only_real_metrics(known):
    names = documented_names(OPERATIONS.read_text())
    assert len(names) >= 15
    unknown = sorted(names - known)
    assert not unknown, f"docs/operations.md names metrics the code does not export: {unknown}"


def test_dashboard_uses_only_real_metrics(known):
    names: set[str] = set()
    for expr in dashboard_exprs():
        found = documented_names(expr)
        assert found, f"a dashboard query uses no sipfleet metric: {expr}"
        names |= found
    unknown = sorted(names - known)
    assert not unknown, f"docs/grafana-dashboard.json uses metrics the code does not export: {unknown}"


def test_every_exported_metric_is_documented_and_on_the_dashboard():
    doc = documented_names(OPERATIONS.read_text())
    dash = set().union(*(documented_names(e) for e in dashboard_exprs()))
    for name, typ in {**operator_families(), **agent_families()}.items():
        main = doc_name(name, typ)
        assert main in doc, f"{main} is exported but not listed in docs/operations.md"
        assert any(n == main or n.startswith(name + "_") or n == name for n in dash), \
            f"{main} is exported but not on the Grafana dashboard"


def test_documented_label_values_match_the_code():
    """Label names in the metric tables are the collectors' label names."""
    from prometheus_client.metrics import MetricWrapperBase

    from sipfleet_agent.metrics import Metrics
    from sipfleet_operator import metrics

    from sipfleet_agent.supervisor.metricsagg import STATE_GAUGE

    wrappers = [v for v in vars(metrics).values() if isinstance(v, MetricWrapperBase)]
    wrappers += [v for v in vars(Metrics()).values() if isinstance(v, MetricWrapperBase)]
    rows = {}
    for line in OPERATIONS.read_text().splitlines():
        m = re.match(r"^\| `(sipfleet_[a-z0-9_]+)` \| (\w+) \|\s*([^|]*?)\s*\|", line)
        if m:
            cell = re.sub(r"\([^)]*\)", "", m.group(3))  # drop "(value, value)" lists of label values
            rows[m.group(1)] = (m.group(2), set(re.findall(r"`([a-z_]+)`", cell)))
    assert rows
    for w in wrappers:
        fam = next(iter(w.describe()))
        main = doc_name(fam.name, fam.type)
        assert main in rows, f"{main} has no row in the metric tables of docs/operations.md"
        typ, labels = rows[main]
        assert typ == fam.type, (main, typ, fam.type)
        assert labels == set(w._labelnames), (main, labels, w._labelnames)
    assert rows[STATE_GAUGE] == ("gauge", {"account"}), rows.get(STATE_GAUGE)  # the supervisor's own collector
