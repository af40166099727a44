"""Third-party checkers over the rendered chart: ``kubeconform -strict`` (schemas of the built-in kinds, of
prometheus-operator's CRDs and of our SipAccount CRD; see sipfleet/localenv/kubeschemas.py) and ``kube-score``.
Both are the pinned builds from sipfleet/localenv/gomod/ (``sipfleet cluster build``, or built here on first use).

Every kube-score finding is fixed or explained: the deliberate ones are ``kube-score/ignore`` annotations with
their reasons in templates/deployment.yaml and templates/networkpolicy.yaml; the flags below are explained where
they are passed.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.unit.test_chart_options import MONITORING_APIS, all_on
from tests.unit.test_chart_render import CHART, REPO, helm, run_helm  # noqa: F401  (helm is a fixture)

KUBE_VERSION = "1.35.0"
# kube-score's container-resources wants a CPU limit: the operator sets a CPU request and a memory limit but
# no CPU limit on purpose (CFS throttling would stall kopf's event loop and its watch keep-alives under a burst
# of events, when it matters most; the request already gives it its share under contention).
KUBE_SCORE_FLAGS = ["--kubernetes-version", "v1.35", "--ignore-container-cpu-limit", "--exit-one-on-warning",
                    "--output-format", "ci", "--color", "never"]


@pytest.fixture(scope="session")
def checkers() -> dict[str, Path]:
    from sipfleet.localenv import kubebin

    return kubebin.ensure(kubebin.CHART_CHECK, allow_path=False)


@pytest.fixture(scope="session")
def schema_args(tmp_path_factory) -> list[str]:
    from sipfleet.localenv import kubeschemas

    base = kubeschemas.ensure()
    own = tmp_path_factory.mktemp("crd-schemas")
    assert kubeschemas.write_crd_schemas(base, [CHART / "crds" / "sipaccounts.sipfleet.io.yaml"], own) == 1
    return kubeschemas.locations(base, own)


def rendered(helm: Path, tmp_path: Path, values: dict | None = None, *extra: str) -> Path:
    args = ["template", "rel", str(CHART), "--namespace", "sipfleet-system", "--kube-version", KUBE_VERSION]
    if values is not None:
        vf = tmp_path / "values.yaml"
        vf.write_text(yaml.safe_dump(values))
        args += ["--values", str(vf)]
    out = tmp_path / f"rendered-{len(list(tmp_path.glob('rendered-*')))}.yaml"
    out.write_text(run_helm(helm, *args, *extra).stdout)
    return out


def kubeconform(checkers, schema_args, *files: Path) -> tuple[int, dict]:
    proc = subprocess.run([str(checkers["kubeconform"]), "-strict", "-summary", "-output", "json",
                           "-kubernetes-version", KUBE_VERSION, *schema_args, *map(str, files)],
                          capture_output=True, text=True, timeout=120)
    return proc.returncode, json.loads(proc.stdout)


def kube_score(checkers, *files: Path, extra: tuple[str, ...] = ()) -> tuple[int, list[str]]:
    proc = subprocess.run([str(checkers["kube-score"]), "score", *KUBE_SCORE_FLAGS, *extra, *map(str, files)],
                          capture_output=True, text=True, timeout=120)
    findings = [ln for ln in proc.stdout.splitlines() if ln.startswith(("[CRITICAL]", "[WARNING]"))]
    return proc.returncode, findings


def doc_count(*files: Path) -> int:
    return sum(1 for f in files for d in yaml.safe_load_all(f.read_text()) if d)


# ---------------------------------------------------------------------------------------------------------------


def test_kubeconform_strict_accepts_the_chart_and_the_examples(helm, checkers, schema_args, tmp_path):
    files = [
        rendered(helm, tmp_path),
        rendered(helm, tmp_path, all_on(), *MONITORING_APIS),
        rendered(helm, tmp_path, {"watchNamespaces": ["a"], "replicaCount": 0, "metrics": {"enabled": False}}),
        *sorted((REPO / "examples").glob("*.yaml")),
    ]
    rc, out = kubeconform(checkers, schema_args, *files)
    summary = out["summary"]
    assert rc == 0 and summary["invalid"] == 0 and summary["errors"] == 0, out["resources"]
    assert summary["skipped"] == 0  # every kind had a schema (a missing one is an error, not a skip)
    assert summary["valid"] == doc_count(*files)
    kinds = {d["kind"] for f in files for d in yaml.safe_load_all(f.read_text()) if d}
    assert {"PrometheusRule", "NetworkPolicy", "ServiceMonitor", "PodMonitor", "SipAccount", "Deployment"} <= kinds


def test_kubeconform_strict_finds_unknown_fields_and_wrong_types(helm, checkers, schema_args, tmp_path):
    docs = [d for d in yaml.safe_load_all(rendered(helm, tmp_path, all_on(), *MONITORING_APIS).read_text()) if d]
    for d in docs:
        if d["kind"] == "Deployment":
            d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
        elif d["kind"] == "NetworkPolicy":
            d["spec"]["egress"][0]["ports"][0]["port"] = [6443]
        elif d["kind"] == "PrometheusRule":
            d["spec"]["groups"][0]["rules"][0]["fro"] = "5m"
    accounts = [d for f in sorted((REPO / "examples").glob("sipaccount-*.yaml"))
                for d in yaml.safe_load_all(f.read_text()) if d and d["kind"] == "SipAccount"]
    accounts[0]["spec"]["routez"] = []
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump_all([*docs, accounts[0]]))
    rc, out = kubeconform(checkers, schema_args, bad)
    assert rc != 0
    invalid = {(r["kind"], r["name"]): r["msg"] for r in out["resources"] if r["status"] == "statusInvalid"}
    assert "imagePullPolicyy" in invalid[("Deployment", "rel-sipfleet")]
    assert "fro" in invalid[("PrometheusRule", "rel-sipfleet")]
    assert "routez" in invalid[("SipAccount", accounts[0]["metadata"]["name"])]
    assert any(k == "NetworkPolicy" for k, _ in invalid)


def test_kube_score_has_no_findings_with_every_option_on(helm, checkers, tmp_path):
    f = rendered(helm, tmp_path, all_on(), *MONITORING_APIS)
    rc, findings = kube_score(checkers, f)
    assert not findings and rc == 0, findings


def test_kube_score_has_no_findings_by_default(helm, checkers, tmp_path):
    # pod-networkpolicy: the default render has no NetworkPolicy, by choice (networkPolicy.enabled=false: the
    # chart cannot know the API server's endpoints or the SIP peers); with it on, the test above passes the check
    rc, findings = kube_score(checkers, rendered(helm, tmp_path), extra=("--ignore-test", "pod-networkpolicy"))
    assert not findings and rc == 0, findings
    rc, findings = kube_score(checkers, rendered(helm, tmp_path))
    assert rc != 0 and len(findings) == 1 and "NetworkPolicy" in findings[0], findings


def test_kube_score_reports_what_it_should(helm, checkers, tmp_path):
    """kube-score is not silenced wholesale: a pod without a memory limit and with a writable root filesystem is
    a finding."""
    docs = [d for d in yaml.safe_load_all(rendered(helm, tmp_path, all_on(), *MONITORING_APIS).read_text()) if d]
    for d in docs:
        if d["kind"] == "Deployment":
            c = d["spec"]["template"]["spec"]["containers"][0]
            del c["resources"]["limits"]
            c["securityContext"]["readOnlyRootFilesystem"] = False
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump_all(docs))
    rc, findings = kube_score(checkers, bad)
    assert rc != 0
    text = "\n".join(findings)
    assert "Memory limit is not set" in text and "writable root filesystem" in text, findings
