"""The Prometheus configuration sipfleet runs (pure: a dict, written out as YAML by ``server``).

Promise: two scrape jobs discovered through the Kubernetes API (``kubernetes_sd_configs`` with the cluster's
kubeconfig) as prometheus-operator would scrape the chart's ServiceMonitor and PodMonitor: the operator through
the endpoints of the chart's metrics Service (port ``metrics``; ``job`` = the Service's name, the job the chart's
SipOperatorDown alert expects) and every agent pod (labels ``app.kubernetes.io/component=agent``,
``app.kubernetes.io/managed-by=sipfleet-operator``, container port ``http``; ``job="sipfleet-agents"``). Each
series gets ``namespace`` and ``pod`` from its target. No remote write, no Alertmanager: nothing leaves the host.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

AGENT_JOB = "sipfleet-agents"


def _target_labels() -> list[dict]:
    return [
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
    ]


def build(*, kubeconfig: Path, operator_namespace: str, agent_namespaces: Sequence[str] = (),
          release: str | None = None, interval_s: float = 5.0, rule_files: Sequence[Path] = ()) -> dict:
    """``agent_namespaces`` empty: agents in every namespace; ``release``: only that Helm release's operator."""
    interval = f"{interval_s:g}s"
    keep_operator = [
        {"source_labels": ["__meta_kubernetes_service_label_app_kubernetes_io_name",
                           "__meta_kubernetes_service_label_app_kubernetes_io_component"],
         "regex": "sipfleet;operator", "action": "keep"},
        {"source_labels": ["__meta_kubernetes_endpoint_port_name"], "regex": "metrics", "action": "keep"},
    ]
    if release:
        keep_operator.append({"source_labels": ["__meta_kubernetes_service_label_app_kubernetes_io_instance"],
                              "regex": release, "action": "keep"})
    agent_sd: dict = {"role": "pod", "kubeconfig_file": str(kubeconfig)}
    if agent_namespaces:
        agent_sd["namespaces"] = {"names": list(agent_namespaces)}
    return {
        "global": {"scrape_interval": interval, "scrape_timeout": interval if interval_s < 10 else "10s",
                   "evaluation_interval": interval},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [
            {
                "job_name": "sipfleet-operator",
                "kubernetes_sd_configs": [{"role": "endpoints", "kubeconfig_file": str(kubeconfig),
                                           "namespaces": {"names": [operator_namespace]}}],
                "relabel_configs": [
                    *keep_operator,
                    *_target_labels(),
                    {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job"},
                ],
            },
            {
                "job_name": AGENT_JOB,
                "kubernetes_sd_configs": [agent_sd],
                "relabel_configs": [
                    {"source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_component",
                                       "__meta_kubernetes_pod_label_app_kubernetes_io_managed_by"],
                     "regex": "agent;sipfleet-operator", "action": "keep"},
                    {"source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": "http",
                     "action": "keep"},
                    {"source_labels": ["__meta_kubernetes_pod_phase"], "regex": "Running", "action": "keep"},
                    *_target_labels(),
                ],
            },
        ],
    }
