"""The chart's optional objects (PrometheusRule, NetworkPolicies, with ServiceMonitor and PodMonitor) against the
real apiserver: rendered with every option on and applied with ``kubectl apply --dry-run=server`` (strict field
validation, admission, the CRDs' own schemas).

The monitoring.coreos.com kinds need their CRDs: the test applies prometheus-operator's own CRDs for
PrometheusRule, ServiceMonitor and PodMonitor, taken from the pinned module (sipfleet/localenv/gomod/promcrds, the
same files kubeconform's schemas come from), and deletes them afterwards so other tests see a cluster without
prometheus-operator. The NetworkPolicies name the API server's real endpoints, read as docs/operations.md says.
"""

from __future__ import annotations

import json

import pytest
import yaml

from tests.fixtures.chart import CHART, KUBE_VERSION, ensure_crd, restricted
from tests.integration.test_chart_install import RELEASE, server_dry_run
from tests.unit.test_chart_options import MONITORING_APIS, all_on

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

MONITORING_CRDS = ("prometheusrules", "servicemonitors", "podmonitors")


def api_server_endpoints(cluster) -> list[dict]:
    res = cluster.kubectl("get", "endpointslices", "-n", "default", "-l", "kubernetes.io/service-name=kubernetes",
                          "-o", "json")
    out = []
    for s in json.loads(res.stdout)["items"]:
        ports = [p["port"] for p in s.get("ports") or []]
        for ep in s.get("endpoints") or []:
            for addr in ep["addresses"]:
                out += [{"cidr": f"{addr}/{128 if ':' in addr else 32}", "port": port} for port in ports]
    assert out, res.stdout
    return out


def test_every_option_on_is_accepted_by_the_apiserver(cluster, helm, namespace, tmp_path):
    from sipfleet.localenv import kubeschemas

    ensure_crd(cluster)
    restricted(cluster, namespace)
    crd_files = [f for f in kubeschemas.prometheus_crd_files() if any(f"_{n}." in f.name for n in MONITORING_CRDS)]
    assert len(crd_files) == len(MONITORING_CRDS), crd_files
    try:
        for f in crd_files:
            cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(f))
        for n in MONITORING_CRDS:
            cluster.kubectl("wait", "--for=condition=Established", f"crd/{n}.monitoring.coreos.com", "--timeout=60s")

        values = all_on([namespace])
        values["networkPolicy"]["apiServer"] = api_server_endpoints(cluster)
        vf = tmp_path / "values.yaml"
        vf.write_text(yaml.safe_dump(values))
        rendered = helm("template", RELEASE, str(CHART), "--namespace", namespace, "--kube-version", KUBE_VERSION,
                        "--values", str(vf), *MONITORING_APIS).stdout
        docs = [d for d in yaml.safe_load_all(rendered) if d]
        kinds = sorted(d["kind"] for d in docs)
        for kind in ("PrometheusRule", "ServiceMonitor", "PodMonitor"):
            assert kinds.count(kind) == 1, kinds
        assert kinds.count("NetworkPolicy") == 2, kinds  # the operator's and its namespace's agents'
        lines = server_dry_run(cluster, namespace, rendered)
        assert len(lines) == len(docs), lines
        for kind in ("prometheusrule", "networkpolicy", "servicemonitor", "podmonitor"):
            assert any(ln.startswith(f"{kind}.") for ln in lines), (kind, lines)

        # the apiserver does check them: a misspelt rule field and a port out of range are refused
        for d in docs:
            if d["kind"] == "PrometheusRule":
                d["spec"]["groups"][0]["rules"][0]["fro"] = "5m"
            if d["kind"] == "NetworkPolicy":
                d["spec"]["egress"][0]["ports"][0]["port"] = 70000
        bad = [d for d in docs if d["kind"] in ("PrometheusRule", "NetworkPolicy")]
        res = cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-",
                              input=yaml.safe_dump_all(bad), check=False)
        assert res.returncode != 0 and "fro" in res.stderr and "70000" in res.stderr, res.stderr
    finally:
        for n in MONITORING_CRDS:
            cluster.kubectl("delete", "crd", f"{n}.monitoring.coreos.com", "--ignore-not-found", "--wait=true",
                            check=False)
