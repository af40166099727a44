"""The chart's alerts as a Prometheus rules file, and the Grafana dashboard's queries, for a real Prometheus.

Promise: :func:`chart_rules` renders ``charts/sipfleet`` with the pinned helm (``prometheusRule.enabled``, the
PrometheusRule capability) and returns its ``spec`` (``{"groups": [...]}``), which is a rules file as Prometheus
and promtool read it: the rules Prometheus runs are the chart's, never a copy. :func:`dashboard_queries` lists
every target of ``docs/grafana-dashboard.json`` with Grafana's ``$__rate_interval`` replaced; :func:`data_part`
is an alert expression without its final threshold comparison (what must return data for the alert to mean
anything). Pure except :func:`chart_rules`, which runs helm.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "sipfleet"
DASHBOARD = REPO / "docs" / "grafana-dashboard.json"
PROMETHEUS_RULE_API = "monitoring.coreos.com/v1/PrometheusRule"
_THRESHOLD = re.compile(r"^(?P<data>.*\S)\s*(?:==|!=|>=|<=|>|<)\s*(?:bool\s+)?-?[0-9.]+\s*$", re.S)


def chart_rules(helm: Path, *, release: str = "sipfleet", namespace: str = "sipfleet-system",
                set_values: dict[str, str] | None = None, kube_version: str = "1.35.0") -> dict:
    args = [str(helm), "template", release, str(CHART), "--namespace", namespace, "--kube-version", kube_version,
            "--api-versions", PROMETHEUS_RULE_API, "--set", "prometheusRule.enabled=true",
            "--show-only", "templates/prometheusrule.yaml"]
    for k, v in (set_values or {}).items():
        args += ["--set-string", f"{k}={v}"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"helm template of the PrometheusRule failed: {proc.stderr.strip()}")
    (rule,) = [d for d in yaml.safe_load_all(proc.stdout) if d]
    return rule["spec"]


def write_rules(spec: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def alerts(spec: dict) -> list[dict]:
    return [r for g in spec["groups"] for r in g["rules"] if "alert" in r]


def data_part(expr: str) -> str:
    """``sum(x) > 0`` -> ``sum(x)``; an expression without a final comparison is returned as it is."""
    m = _THRESHOLD.match(expr.strip())
    return m.group("data").strip() if m else expr.strip()


def dashboard_queries(path: Path = DASHBOARD, rate_interval: str = "1m") -> list[tuple[str, str, str]]:
    """(panel title, refId, expr) of every target, ``$__rate_interval`` -> ``rate_interval``."""
    dash = json.loads(path.read_text())
    return [(p["title"], t.get("refId", "?"), t["expr"].replace("$__rate_interval", rate_interval))
            for p in dash["panels"] for t in p.get("targets", [])]
