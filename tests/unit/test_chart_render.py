"""The Helm chart lints and renders (``helm template``, no cluster) with default and non-default values.

helm is the real binary from ``sipfleet.localenv.kubebin`` (built from the pinned Go module).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "sipfleet"
# Render for the Kubernetes version the local control plane runs, whatever helm's built-in default is.
KUBE_VERSION = "1.35.0"


@pytest.fixture(scope="session")
def helm() -> Path:
    from sipfleet.localenv import kubebin

    return kubebin.ensure(["helm"], allow_path=False)["helm"]  # the pinned build, never a PATH helm


def run_helm(helm: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def render(helm: Path, *extra: str, namespace: str = "sipfleet-system", values: dict | None = None,
           tmp_path: Path | None = None, check: bool = True) -> list[dict] | subprocess.CompletedProcess:
    args = ["template", "rel", str(CHART), "--namespace", namespace, "--kube-version", KUBE_VERSION]
    if values is not None:
        assert tmp_path is not None
        f = tmp_path / "values.yaml"
        f.write_text(yaml.safe_dump(values))
        args += ["--values", str(f)]
    proc = run_helm(helm, *args, *extra, check=check)
    if not check:
        return proc
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict], kind: str) -> dict:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def assert_restricted(pod_sc: dict, sc: dict) -> None:
    """The restricted Pod Security Standard, as far as a pod and a container spec can show it."""
    assert pod_sc.get("runAsNonRoot") is True
    assert isinstance(pod_sc.get("runAsUser"), int) and pod_sc["runAsUser"] > 0
    assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
    assert sc.get("allowPrivilegeEscalation") is False
    assert sc.get("readOnlyRootFilesystem") is True
    assert sc.get("capabilities", {}).get("drop") == ["ALL"]
    assert not sc.get("privileged")


# ---------------------------------------------------------------------------------------------------------------


def test_chart_metadata():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["version"] == "0.1.0"
    assert str(chart["appVersion"]) == "0.1.0"
    import tomllib

    assert tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"] == str(chart["appVersion"])
    assert (CHART / "crds" / "sipaccounts.sipfleet.io.yaml").exists()


def test_lint_is_clean(helm, tmp_path):
    proc = run_helm(helm, "lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in proc.stdout
    assert "[ERROR]" not in proc.stdout and "[WARNING]" not in proc.stdout, proc.stdout
    f = tmp_path / "v.yaml"
    f.write_text(yaml.safe_dump({"watchNamespaces": ["team-a"], "replicaCount": 0, "metrics": {"enabled": False}}))
    proc = run_helm(helm, "lint", "--strict", str(CHART), "--values", str(f))
    assert "[ERROR]" not in proc.stdout and "[WARNING]" not in proc.stdout, proc.stdout


def test_default_render(helm):
    docs = render(helm)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Service", "Deployment"])
    for d in docs:
        if d["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert d["metadata"]["namespace"] == "sipfleet-system"
        assert d["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"

    dep = one(docs, "Deployment")
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"]
    (c,) = pod["containers"]
    assert c["image"] == "sipfleet/operator:0.1.0"
    assert c["imagePullPolicy"] == "IfNotPresent"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"healthz": 8081, "metrics": 9090}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    assert_restricted(pod["securityContext"], c["securityContext"])
    # the operator writes no files: no volumes besides the projected ServiceAccount token
    assert not c.get("volumeMounts") and not pod.get("volumes")

    env = env_of(c)
    assert env["SIPFLEET_AGENT_IMAGE"] == "sipfleet/agent:0.1.0"
    assert env["SIPFLEET_AGENT_IMAGE_PULL_POLICY"] == "IfNotPresent"
    assert env["SIPFLEET_WATCH_NAMESPACES"] == ""
    assert env["SIPFLEET_STANDALONE"] == "true"
    assert env["SIPFLEET_METRICS_PORT"] == "9090"
    assert env["SIPFLEET_LIVENESS_ENDPOINT"] == "http://$(POD_IP):8081/healthz"
    # $(POD_IP) expands only when POD_IP is defined earlier in the list
    names = [e["name"] for e in c["env"]]
    assert names.index("POD_IP") < names.index("SIPFLEET_LIVENESS_ENDPOINT")
    assert names.index("POD_IP") < names.index("SIPFLEET_METRICS_ADDRESS")
    # the agents' defaults travel to the operator as JSON: no fixed resources, a sizing, 64 accounts per pod
    assert json.loads(env["SIPFLEET_AGENT_RESOURCES"]) == {}
    sizing = json.loads(env["SIPFLEET_AGENT_SIZING"])
    assert sizing["requests"]["memory"]["perWorker"] and sizing["limits"]["cpu"]["base"]
    assert env["SIPFLEET_ACCOUNTS_PER_AGENT"] == "64"
    assert_restricted(json.loads(env["SIPFLEET_AGENT_POD_SECURITY_CONTEXT"]),
                      json.loads(env["SIPFLEET_AGENT_SECURITY_CONTEXT"]))

    svc = one(docs, "Service")
    assert svc["spec"]["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}]
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()

    crb = one(docs, "ClusterRoleBinding")
    assert crb["roleRef"]["name"] == one(docs, "ClusterRole")["metadata"]["name"]
    assert crb["subjects"] == [{"kind": "ServiceAccount", "name": pod["serviceAccountName"],
                                "namespace": "sipfleet-system"}]


def test_non_default_values_render(helm, tmp_path):
    values = {
        "fullnameOverride": "sf",
        "replicaCount": 0,
        "image": {"repository": "registry.example:5000/sf/operator", "digest": "sha256:" + "a" * 64,
                  "pullPolicy": "Always"},
        "agent": {"image": {"repository": "registry.example:5000/sf/agent", "tag": "0.1.0-rc1"},
                  "resources": {"limits": {"memory": "512Mi"}}, "logLevel": "debug", "accountsPerAgent": 8,
                  "sizing": {"limits": {"memory": {"perWorker": 40}}}},
        "metrics": {"enabled": False},
        "serviceAccount": {"create": False, "name": "existing-sa"},
        "imagePullSecrets": [{"name": "regcred"}],
        "extraEnv": [{"name": "SIPFLEET_LADDER_TICK_SECONDS", "value": "0.5"}],
        "podLabels": {"team": "voice"},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "logLevel": "DEBUG",
    }
    docs = render(helm, values=values, tmp_path=tmp_path)
    assert not by_kind(docs, "ServiceAccount")
    assert not by_kind(docs, "Service")
    dep = one(docs, "Deployment")
    assert dep["metadata"]["name"] == "sf"
    assert dep["spec"]["replicas"] == 0
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "existing-sa"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert dep["spec"]["template"]["metadata"]["labels"]["team"] == "voice"
    (c,) = pod["containers"]
    assert c["image"] == "registry.example:5000/sf/operator@sha256:" + "a" * 64
    assert c["imagePullPolicy"] == "Always"
    assert [p["name"] for p in c["ports"]] == ["healthz"]
    env = env_of(c)
    assert env["SIPFLEET_METRICS_PORT"] == "0"
    assert env["SIPFLEET_AGENT_IMAGE"] == "registry.example:5000/sf/agent:0.1.0-rc1"
    assert env["SIPFLEET_AGENT_LOG_LEVEL"] == "debug"
    assert env["SIPFLEET_LOG_LEVEL"] == "DEBUG"
    assert env["SIPFLEET_LADDER_TICK_SECONDS"] == "0.5"
    assert json.loads(env["SIPFLEET_AGENT_RESOURCES"])["limits"]["memory"] == "512Mi"
    assert env["SIPFLEET_ACCOUNTS_PER_AGENT"] == "8"
    from sipfleet_operator.config import Settings

    s = Settings.from_env(env)
    assert s.accounts_per_agent == 8 and s.agent_sizing.memory_limit.per_worker == 40
    assert s.agent_sizing.memory_limit.base == Settings().agent_sizing.memory_limit.base  # the rest: defaults
    assert one(docs, "ClusterRoleBinding")["subjects"][0]["name"] == "existing-sa"


def test_namespaced_rbac(helm):
    strict = render(helm, "--set", "watchNamespaces={team-a}", "--set", "rbac.clusterDiscovery=false")
    assert not by_kind(strict, "ClusterRole") and not by_kind(strict, "ClusterRoleBinding")

    docs = render(helm, "--set", "watchNamespaces={team-a,team-b}", namespace="ops")
    # the only cluster-scoped RBAC: read-only discovery of namespaces and CRDs for kopf
    discovery = one(docs, "ClusterRole")
    assert discovery["metadata"]["name"].endswith("-discovery")
    for rule in discovery["rules"]:
        assert set(rule["verbs"]) <= {"get", "list", "watch"}
        assert set(rule["resources"]) <= {"namespaces", "customresourcedefinitions"}
    assert one(docs, "ClusterRoleBinding")["roleRef"]["name"] == discovery["metadata"]["name"]
    roles = {d["metadata"]["namespace"]: d for d in by_kind(docs, "Role")}
    bindings = {d["metadata"]["namespace"]: d for d in by_kind(docs, "RoleBinding")}
    assert set(roles) == set(bindings) == {"team-a", "team-b"}
    sa = one(docs, "ServiceAccount")["metadata"]
    for ns, rb in bindings.items():
        assert rb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                 "name": roles[ns]["metadata"]["name"]}
        assert rb["subjects"] == [{"kind": "ServiceAccount", "name": sa["name"], "namespace": "ops"}]
    (c,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert env_of(c)["SIPFLEET_WATCH_NAMESPACES"] == "team-a,team-b"


def test_rbac_off(helm):
    docs = render(helm, "--set", "rbac.create=false")
    for kind in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
        assert not by_kind(docs, kind)


def test_service_monitor_needs_the_capability(helm):
    without = render(helm, "--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.agentPodMonitor.enabled=true")
    assert not by_kind(without, "ServiceMonitor") and not by_kind(without, "PodMonitor")

    docs = render(
        helm, "--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.serviceMonitor.labels.release=prom",
        "--set", "metrics.agentPodMonitor.enabled=true",
        "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor", "--api-versions", "monitoring.coreos.com/v1/PodMonitor",
    )
    sm = one(docs, "ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "prom"
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    svc = one(docs, "Service")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"] == {"matchNames": ["sipfleet-system"]}

    pm = one(docs, "PodMonitor")
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "http"

    off = render(helm, "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor")
    assert not by_kind(off, "ServiceMonitor")


def test_agent_defaults_match_the_operator_defaults(helm):
    """The chart's agent defaults are the operator's built-in ones, so an operator run without the chart builds
    the same agent pods."""
    from sipfleet_operator import builders as b
    from sipfleet_operator import placement as p
    from sipfleet_operator.config import Settings

    docs = render(helm)
    (c,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    env = env_of(c)
    s = Settings()
    assert env["SIPFLEET_AGENT_IMAGE"] == s.agent_image
    assert env["SIPFLEET_AGENT_IMAGE_PULL_POLICY"] == s.agent_image_pull_policy
    assert env["SIPFLEET_AGENT_LOG_LEVEL"] == s.agent_log_level
    from_chart = Settings.from_env(env)
    assert from_chart.agent_resources is None and from_chart.agent_sizing == s.agent_sizing
    assert from_chart.accounts_per_agent == s.accounts_per_agent == 64
    assert from_chart.agent_dead_flow_seconds == s.agent_dead_flow_seconds == 30
    assert from_chart.agent_udp_dead_flow_seconds == s.agent_udp_dead_flow_seconds == 0
    key = p.GroupKey(namespace="ns")
    agent = p.Agent(name="sipfleet-agent-x-0", key=key).with_accounts(["a"], {"a": ("udp", ("sip:127.0.10.1;lr",),
                                                                                     "prevent")})
    pod = b.build_pod_template(agent, s)["spec"]
    assert b.build_pod_template(agent, from_chart)["spec"]["containers"][0]["resources"] == \
        pod["containers"][0]["resources"] == b.agent_resources(agent, s)
    (agent,) = pod["containers"]
    assert json.loads(env["SIPFLEET_AGENT_POD_SECURITY_CONTEXT"]) == pod["securityContext"]
    chart_sc = json.loads(env["SIPFLEET_AGENT_SECURITY_CONTEXT"])
    assert {k: v for k, v in agent["securityContext"].items() if k != "runAsNonRoot"} == chart_sc


def test_ha_render_peers_with_distinct_priorities(helm, tmp_path):
    docs = render(helm, values={"replicaCount": 2, "peering": {"lifetimeSeconds": 20}}, tmp_path=tmp_path)
    dep = one(docs, "Deployment")
    assert dep["spec"]["replicas"] == 2 and dep["spec"]["strategy"] == {"type": "RollingUpdate"}
    env = env_of(dep["spec"]["template"]["spec"]["containers"][0])
    assert (env["SIPFLEET_STANDALONE"], env["SIPFLEET_PRIORITY"], env["SIPFLEET_PEERING_LIFETIME_SECONDS"]) == (
        "false", "auto", "20")
    rules = one(docs, "ClusterRole")["rules"]
    assert {"apiGroups": ["kopf.dev"], "resources": ["clusterkopfpeerings"],
            "verbs": ["get", "list", "watch", "create", "patch"]} in rules
    ns_docs = render(helm, values={"replicaCount": 2, "watchNamespaces": ["a"]}, tmp_path=tmp_path)
    role_rules = [r for d in by_kind(ns_docs, "Role") for r in d["rules"]]
    assert any(r["resources"] == ["kopfpeerings"] and "create" in r["verbs"] for r in role_rules)


def test_the_charts_peering_crds_are_the_operators():
    from sipfleet_operator.main import PEERING_CRDS

    chart = [d for d in yaml.safe_load_all((CHART / "crds" / "kopf-peering.yaml").read_text()) if d]
    assert chart == [d for d in yaml.safe_load_all(PEERING_CRDS) if d]
    assert sorted(d["spec"]["names"]["kind"] for d in chart) == ["ClusterKopfPeering", "KopfPeering"]
