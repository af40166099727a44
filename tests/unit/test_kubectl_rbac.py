"""sipfleet.kubectl.rbac holds exactly the rules the chart grants the operator (charts/sipfleet)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from sipfleet.kubectl import rbac

CHART = Path(__file__).resolve().parents[2] / "charts" / "sipfleet" / "templates"


def expand(rules) -> set[tuple[str, str, str]]:
    return {(g, res, v) for r in rules for g in r["apiGroups"] for res in r["resources"] for v in r["verbs"]}


def test_namespaced_rules_are_the_charts():
    text = (CHART / "_helpers.tpl").read_text()
    block = re.search(r'define "sipfleet.namespacedRules" -}}\n(.*?)\{\{- end -}}', text, re.S).group(1)
    chart = expand(yaml.safe_load(block))
    ours = {(r.group, r.resource, v) for r in rbac.NAMESPACED for v in r.verbs}
    assert ours == chart


def test_cluster_rules_are_the_charts():
    text = (CHART / "rbac.yaml").read_text()
    cluster = set()
    for m in re.finditer(r'- apiGroups: \[(.*?)\]\n\s+resources: \[(.*?)\]\n\s+verbs: \[(.*?)\]', text):
        groups, resources, verbs = (yaml.safe_load(f"[{x}]") for x in m.groups())
        cluster |= {(g, r, v) for g in groups for r in resources for v in verbs}
    ours = {(r.group, r.resource, v) for r in rbac.CLUSTER for v in r.verbs}
    assert ours <= cluster and ("", "namespaces", "watch") in ours


def test_checks_cover_every_verb_in_every_namespace():
    rows = rbac.checks(["a", "b"], cluster_wide=False)
    per_ns = sum(len(r.verbs) for r in rbac.NAMESPACED)
    assert len([r for r in rows if r["namespace"] == "a"]) == per_ns
    assert all(r["required"] for r in rows if r["namespace"])
    assert not any(r["required"] for r in rows if r["namespace"] is None)
    assert all(r["required"] for r in rbac.checks([], cluster_wide=True))
