"""The chart's optional objects, rendered with their values on and off: the PrometheusRule (exactly the alerts of
docs/operations.md, on metrics the code exports), the NetworkPolicies (operator and agents) and the operator's
PodDisruptionBudget.

``ALL_ON`` (every option on) is also what the kubeconform/kube-score tests and the integration test render.
"""

from __future__ import annotations

import re

import pytest

from tests.unit.test_chart_render import REPO, by_kind, helm, one, render  # noqa: F401  (helm is a fixture)

PROM_API = ("--api-versions", "monitoring.coreos.com/v1/PrometheusRule")
MONITORING_APIS = (*PROM_API, "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor",
                   "--api-versions", "monitoring.coreos.com/v1/PodMonitor")
API_SERVER = [{"cidr": "10.0.0.10/32", "port": 6443}]
SIP_PEERS = [{"cidr": "192.0.2.0/24", "ports": [{"port": 5060, "protocol": "UDP"}, {"port": 5060, "protocol": "TCP"}]},
             {"cidr": "198.51.100.7/32", "ports": [{"port": 5061, "protocol": "TCP"}]}]
METRICS_FROM = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}


def all_on(namespaces: list[str] | None = None) -> dict:
    """Every optional object of the chart on (namespaced mode in ``namespaces``, default team-a and team-b)."""
    return {
        "watchNamespaces": namespaces or ["team-a", "team-b"],
        "prometheusRule": {"enabled": True, "labels": {"release": "prom"}},
        "metrics": {"serviceMonitor": {"enabled": True}, "agentPodMonitor": {"enabled": True}},
        "networkPolicy": {"enabled": True, "apiServer": API_SERVER, "metricsFrom": METRICS_FROM,
                          "agents": {"sipPeers": SIP_PEERS}},
    }


def documented_alerts() -> dict[str, tuple[str, str]]:
    """name -> (expr, for) from the "Suggested alerts" table of docs/operations.md."""
    text = (REPO / "docs" / "operations.md").read_text()
    section = text.split("## Suggested alerts", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (Sip\w+) \| `(.+?)` \| (\w+) \|", section, re.M)
    assert len(rows) >= 10, rows
    return {name: (expr, dur) for name, expr, dur in rows}


def np_by_ns(docs: list[dict]) -> dict[tuple[str, str], dict]:
    return {(d["metadata"]["namespace"], d["metadata"]["name"]): d for d in by_kind(docs, "NetworkPolicy")}


# ---------------------------------------------------------------------------------------------------------------


def test_everything_optional_is_off_by_default(helm):
    docs = render(helm, *MONITORING_APIS)
    for kind in ("PrometheusRule", "NetworkPolicy", "PodDisruptionBudget"):
        assert not by_kind(docs, kind), kind


def test_prometheus_rule_has_exactly_the_documented_alerts(helm, tmp_path):
    docs = render(helm, *PROM_API, values={"prometheusRule": {"enabled": True, "labels": {"release": "prom"},
                                                              "alertLabels": {"team": "voice"}}}, tmp_path=tmp_path)
    rule = one(docs, "PrometheusRule")
    assert rule["metadata"]["namespace"] == "sipfleet-system"
    assert rule["metadata"]["labels"]["release"] == "prom"
    (group,) = rule["spec"]["groups"]
    rendered = {r["alert"]: r for r in group["rules"]}
    documented = documented_alerts()
    assert sorted(rendered) == sorted(documented)
    for name, (expr, dur) in documented.items():
        r = rendered[name]
        assert r["expr"] == expr.replace("<release>-sipfleet-metrics", "rel-sipfleet-metrics"), name
        assert r.get("for", "0m") == dur, name
        assert r["labels"]["severity"] in ("critical", "warning") and r["labels"]["team"] == "voice"
        assert r["annotations"]["summary"]


def test_prometheus_rule_names_only_exported_metrics(helm, tmp_path):
    from tests.unit.test_docs_metrics import agent_families, documented_names, exposed, operator_families

    known = exposed(operator_families()) | exposed(agent_families())
    docs = render(helm, *PROM_API, values={"prometheusRule": {"enabled": True}}, tmp_path=tmp_path)
    rules = one(docs, "PrometheusRule")["spec"]["groups"][0]["rules"]
    for r in rules:
        names = documented_names(r["expr"])
        if r["alert"] == "SipOperatorDown":
            assert not names and r["expr"].startswith("up{")
            continue
        assert names and names <= known, (r["alert"], names - known)


def test_prometheus_rule_job_and_capability(helm, tmp_path):
    values = {"prometheusRule": {"enabled": True, "operatorJob": "sipfleet-operator"}}
    docs = render(helm, *PROM_API, values=values, tmp_path=tmp_path)
    down = {r["alert"]: r for r in one(docs, "PrometheusRule")["spec"]["groups"][0]["rules"]}["SipOperatorDown"]
    assert down["expr"] == 'up{job="sipfleet-operator"} == 0'
    # a cluster without prometheus-operator gets no PrometheusRule (NOTES.txt warns about it)
    assert not by_kind(render(helm, values=values, tmp_path=tmp_path), "PrometheusRule")


def test_network_policies_namespaced(helm, tmp_path):
    from sipfleet_operator.builders import AGENT_SELECTOR

    docs = render(helm, values=all_on(), tmp_path=tmp_path)
    pols = np_by_ns(docs)
    assert sorted(pols) == [("sipfleet-system", "rel-sipfleet"), ("team-a", "rel-sipfleet-agents"),
                            ("team-b", "rel-sipfleet-agents")]
    dep = one(docs, "Deployment")

    op = pols[("sipfleet-system", "rel-sipfleet")]["spec"]
    assert op["policyTypes"] == ["Ingress", "Egress"]
    assert op["podSelector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert op["egress"] == [{"to": [{"ipBlock": {"cidr": "10.0.0.10/32"}}], "ports": [{"port": 6443, "protocol": "TCP"}]}]
    assert op["ingress"] == [{"from": [METRICS_FROM], "ports": [{"port": 9090, "protocol": "TCP"}]}]

    for ns in ("team-a", "team-b"):
        ag = pols[(ns, "rel-sipfleet-agents")]["spec"]
        want = dict(kv.split("=") for kv in AGENT_SELECTOR.split(","))
        assert ag["podSelector"] == {"matchLabels": want}  # the labels the operator puts on agent pods
        assert ag["policyTypes"] == ["Ingress", "Egress"]
        api, dns, *sip = ag["egress"]
        assert api == op["egress"][0]
        assert dns["to"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "kube-system"}
        assert dns["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
        assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {(53, "UDP"), (53, "TCP")}
        assert sip == [{"to": [{"ipBlock": {"cidr": p["cidr"]}}], "ports": p["ports"]} for p in SIP_PEERS]
        peers_in, metrics_in = ag["ingress"]
        assert peers_in == {"from": [{"ipBlock": {"cidr": p["cidr"]}} for p in SIP_PEERS]}
        assert metrics_in == {"from": [METRICS_FROM], "ports": [{"port": 8080, "protocol": "TCP"}]}


def test_network_policies_without_metrics_sources_deny_scrapes(helm, tmp_path):
    values = all_on()
    values["networkPolicy"]["metricsFrom"] = {"namespaceSelector": {}, "podSelector": {}}
    pols = np_by_ns(render(helm, values=values, tmp_path=tmp_path))
    assert pols[("sipfleet-system", "rel-sipfleet")]["spec"]["ingress"] == []
    assert len(pols[("team-a", "rel-sipfleet-agents")]["spec"]["ingress"]) == 1  # only the SIP peers
    values["networkPolicy"]["metricsFrom"] = {"podSelector": {"matchLabels": {"app": "prom"}}}
    values["metrics"] = {"enabled": False}
    pols = np_by_ns(render(helm, values=values, tmp_path=tmp_path))
    assert pols[("sipfleet-system", "rel-sipfleet")]["spec"]["ingress"] == []  # no metrics port to reach
    assert pols[("team-a", "rel-sipfleet-agents")]["spec"]["ingress"][1]["from"] == [{"podSelector": {
        "matchLabels": {"app": "prom"}}}]


def test_network_policies_cluster_wide(helm, tmp_path):
    values = all_on()
    values["watchNamespaces"] = []
    proc = render(helm, values=values, tmp_path=tmp_path, check=False)
    assert proc.returncode != 0 and "networkPolicy.agents.namespaces" in proc.stderr
    values["networkPolicy"]["agents"]["namespaces"] = ["voice"]
    assert sorted(np_by_ns(render(helm, values=values, tmp_path=tmp_path))) == [
        ("sipfleet-system", "rel-sipfleet"), ("voice", "rel-sipfleet-agents")]
    values["networkPolicy"]["agents"] = {"enabled": False}
    assert sorted(np_by_ns(render(helm, values=values, tmp_path=tmp_path))) == [("sipfleet-system", "rel-sipfleet")]


@pytest.mark.parametrize("drop, message", [("apiServer", "networkPolicy.apiServer"),
                                           ("sipPeers", "networkPolicy.agents.sipPeers")])
def test_network_policies_refuse_to_cut_off_the_api_or_the_sip_peers(helm, tmp_path, drop, message):
    values = all_on()
    if drop == "apiServer":
        values["networkPolicy"]["apiServer"] = []
    else:
        values["networkPolicy"]["agents"]["sipPeers"] = []
    proc = render(helm, values=values, tmp_path=tmp_path, check=False)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr


@pytest.mark.parametrize("bad, where", [
    ({"apiServer": [{"cidr": "10.0.0.10", "port": 6443}]}, "cidr"),
    ({"apiServer": [{"cidr": "10.0.0.10/32", "port": 0}]}, "port"),
    ({"agents": {"sipPeers": [{"cidr": "192.0.2.0/24", "ports": [{"port": 5060, "protocol": "udp"}]}]}}, "protocol"),
    ({"agents": {"sipPeers": [{"cidr": "192.0.2.0/24", "ports": []}]}}, "ports"),
    ({"metricsFrom": {"namespace": "monitoring"}}, "namespace"),
])
def test_network_policy_values_are_checked(helm, tmp_path, bad, where):
    proc = render(helm, values={"networkPolicy": bad}, tmp_path=tmp_path, check=False)
    assert proc.returncode != 0 and "values don't meet the specifications of the schema" in proc.stderr
    assert where in proc.stderr, proc.stderr


def test_pod_disruption_budget_only_for_more_than_one_replica(helm, tmp_path):
    for replicas in (0, 1):
        assert not by_kind(render(helm, "--set", f"replicaCount={replicas}"), "PodDisruptionBudget")
    # two replicas peer (distinct priorities per pod) and keep one available
    docs = render(helm, "--set", "replicaCount=2")
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1 and "maxUnavailable" not in pdb["spec"]
    labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_lint_is_clean_with_every_option_on(helm, tmp_path):
    import yaml

    from tests.unit.test_chart_render import CHART, run_helm

    f = tmp_path / "on.yaml"
    f.write_text(yaml.safe_dump(all_on()))
    out = run_helm(helm, "lint", "--strict", str(CHART), "--values", str(f)).stdout
    assert "0 chart(s) failed" in out and "[ERROR]" not in out and "[WARNING]" not in out, out
