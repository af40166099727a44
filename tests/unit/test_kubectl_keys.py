"""sipfleet.api.keys holds the same strings the operator and the chart use (the plugin must not import either)."""

from __future__ import annotations

from pathlib import Path

from sipfleet.api import keys

REPO = Path(__file__).resolve().parents[2]


def test_the_operator_defines_no_label_annotation_condition_or_event_name_of_its_own():
    import re

    from sipfleet_operator import builders as b

    for name in ("ANNOTATION_PAUSED", "ANNOTATION_REPAIR", "ANNOTATION_REREGISTER", "LABEL_MANAGED_BY",
                 "LABEL_COMPONENT", "LABEL_NAME", "LABEL_AGENT", "LABEL_GROUP", "MANAGED_BY", "AGENT_SELECTOR",
                 "ASSIGNMENT_KEY", "ANNOTATION_GROUP_KEY", "ANNOTATION_TEMPLATE_HASH", "ANNOTATION_SIZE",
                 "ANNOTATION_APPLIED"):
        assert getattr(b, name) is getattr(keys, name), name  # the same object: imported, not re-declared
    pkg = REPO / "operator" / "sipfleet_operator"
    for f in pkg.glob("*.py"):
        text = f.read_text()
        # a sipfleet.io/... key, a condition type or an event reason written out in the operator
        assert not re.search(r'"sipfleet\.io/[a-z-]+"', text), f.name
        assert not re.search(r'Event\("(Normal|Warning)", "', text), f.name
        assert not re.search(r'\bC\("', text), f.name


def test_event_reasons_are_the_ladders():
    text = (REPO / "operator" / "sipfleet_operator" / "ladder.py").read_text()
    # the ladder takes its event reasons from sipfleet.api.keys (the plugin counts events by these names)
    for name in ("EVENT_ROUTE_DRIFT", "EVENT_ROUTE_REPAIRED", "EVENT_ROUTE_FLAPPING"):
        assert f"k.{name}" in text, name


def test_operator_selector_matches_the_chart():
    helpers = (REPO / "charts" / "sipfleet" / "templates" / "_helpers.tpl").read_text()
    assert "app.kubernetes.io/component: operator" in helpers
    assert "app.kubernetes.io/part-of: sipfleet" in helpers
    deployment = (REPO / "charts" / "sipfleet" / "templates" / "deployment.yaml").read_text()
    assert f"name: {keys.ENV_WATCH_NAMESPACES}" in deployment
