"""The chart's alerts through the real promtool (built from the pinned Prometheus module, like the control plane):
``promtool check rules`` on the rules the chart renders, ``promtool test rules`` with the rule unit tests of
tests/unit/data/promrules/sipfleet_test.yml (every alert fires when its ``for:`` allows and not before), and
``promtool check config`` on the configuration sipfleet's Prometheus runs (Kubernetes discovery compiled in).

Each check is also shown to fail: a rule that does not parse fails ``check rules``, and a changed threshold of
SipRouteDrift fails the rule unit tests.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from sipfleet.localenv.prometheus import config as promconfig
from sipfleet.localenv.prometheus import rules as promrules

DATA = Path(__file__).resolve().parent / "data" / "promrules"


@pytest.fixture(scope="module")
def bins() -> dict[str, Path]:
    from sipfleet.localenv import kubebin

    return kubebin.ensure(["helm", "promtool"], allow_path=False)


@pytest.fixture(scope="module")
def spec(bins) -> dict:
    return promrules.chart_rules(bins["helm"])


def promtool(bins, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(bins["promtool"]), *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def _unit_tests_dir(tmp_path: Path, spec: dict) -> Path:
    """rules.yml (the chart's) next to a copy of the unit tests, each expected alert given its annotations."""
    promrules.write_rules(spec, tmp_path / "rules.yml")
    tests = yaml.safe_load((DATA / "sipfleet_test.yml").read_text())
    annotations = {r["alert"]: r["annotations"] for r in promrules.alerts(spec)}
    for t in tests["tests"]:
        for case in t["alert_rule_test"]:
            for exp in case["exp_alerts"]:
                exp["exp_annotations"] = annotations[case["alertname"]]
    (tmp_path / "sipfleet_test.yml").write_text(yaml.safe_dump(tests, sort_keys=False))
    return tmp_path


def test_check_rules_accepts_the_charts_rules_and_refuses_a_broken_one(bins, spec, tmp_path):
    good = promrules.write_rules(spec, tmp_path / "rules.yml")
    res = promtool(bins, "check", "rules", str(good))
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(promrules.alerts(spec))} rules found" in res.stdout + res.stderr
    broken = yaml.safe_load(good.read_text())
    broken["groups"][0]["rules"][0]["expr"] = "sum(sipfleet_accounts{condition=}) >"
    bad = promrules.write_rules(broken, tmp_path / "broken.yml")
    res = promtool(bins, "check", "rules", str(bad))
    assert res.returncode != 0 and "FAILED" in res.stdout + res.stderr


def test_rule_unit_tests_cover_every_alert_and_pass(bins, spec, tmp_path):
    d = _unit_tests_dir(tmp_path, spec)
    tested = {c["alertname"] for t in yaml.safe_load((d / "sipfleet_test.yml").read_text())["tests"]
              for c in t["alert_rule_test"] if c["exp_alerts"]}
    assert tested == {r["alert"] for r in promrules.alerts(spec)}, "an alert without a firing unit test"
    res = promtool(bins, "test", "rules", "sipfleet_test.yml", cwd=d)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout + res.stderr


def test_rule_unit_tests_fail_when_an_alert_changes(bins, spec, tmp_path):
    changed = yaml.safe_load(yaml.safe_dump(spec))
    for r in promrules.alerts(changed):
        if r["alert"] == "SipRouteDrift":
            r["expr"] = r["expr"].replace("> 0", "> 5")
    d = _unit_tests_dir(tmp_path, changed)
    res = promtool(bins, "test", "rules", "sipfleet_test.yml", cwd=d)
    assert res.returncode != 0, res.stdout
    assert "SipRouteDrift" in res.stdout + res.stderr


def test_the_operator_job_the_alert_expects_is_the_job_the_scrape_config_gives(spec):
    down = next(r for r in promrules.alerts(spec) if r["alert"] == "SipOperatorDown")
    assert down["expr"] == 'up{job="sipfleet-metrics"} == 0'  # release sipfleet: Service sipfleet-metrics
    cfg = promconfig.build(kubeconfig=Path("/k"), operator_namespace="sipfleet-system")
    op = cfg["scrape_configs"][0]
    assert {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job"} in op["relabel_configs"]


def test_check_config_accepts_the_config_sipfleet_runs(bins, spec, tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://10.213.1.1:6443"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}], "users": [{"name": "u", "user": {}}]}))
    rules = promrules.write_rules(spec, tmp_path / "rules.yml")
    cfg = promconfig.build(kubeconfig=kubeconfig, operator_namespace="sipfleet-system", agent_namespaces=["demo"],
                           release="sipfleet", interval_s=1, rule_files=[rules])
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    res = promtool(bins, "check", "config", str(tmp_path / "prometheus.yml"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout + res.stderr
    bad = dict(cfg, scrape_configs=[dict(cfg["scrape_configs"][0], kubernetes_sd_configs=[{"role": "nodez"}])])
    (tmp_path / "bad.yml").write_text(yaml.safe_dump(bad))
    assert promtool(bins, "check", "config", str(tmp_path / "bad.yml")).returncode != 0


def test_data_part_strips_only_the_final_threshold():
    assert promrules.data_part("sum(x) > 0") == "sum(x)"
    assert promrules.data_part('up{job="a"} == 0') == 'up{job="a"}'
    assert promrules.data_part("100 * sum(a) / sum(b) > 10") == "100 * sum(a) / sum(b)"
    assert promrules.data_part("sipfleet_agent_active_calls >= 4") == "sipfleet_agent_active_calls"
    assert promrules.data_part("rate(x[5m])") == "rate(x[5m])"
