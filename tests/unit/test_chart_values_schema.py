"""values.schema.json rejects wrong values with a message that names the value, and accepts good ones."""

from __future__ import annotations

import json

import pytest

from tests.unit.test_chart_render import CHART, helm, render  # noqa: F401  (helm is a fixture)

BAD = [
    # (values, the path helm must name, a phrase from the reason)
    ({"replicaCount": -1}, "/replicaCount", "minimum"),
    ({"replicaCount": 6}, "/replicaCount", "maximum"),
    ({"peering": {"lifetimeSeconds": 1}}, "/peering/lifetimeSeconds", "minimum"),
    ({"replicaCount": "one"}, "/replicaCount", "want integer"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy", "must be one of"),
    ({"agent": {"image": {"pullPolicy": "always"}}}, "/agent/image/pullPolicy", "must be one of"),
    ({"replicas": 1}, "additional properties 'replicas' not allowed", ""),
    ({"image": {"tagg": "x"}}, "additional properties 'tagg' not allowed", ""),
    ({"metrics": {"port": "9090"}}, "/metrics/port", "want integer"),
    ({"metrics": {"port": 70000}}, "/metrics/port", "maximum"),
    ({"watchNamespaces": ["Team_A"]}, "/watchNamespaces/0", "does not match pattern"),
    ({"watchNamespaces": "team-a"}, "/watchNamespaces", "want array"),
    ({"logLevel": "verbose"}, "/logLevel", "must be one of"),
    ({"serviceAccount": {"create": "yes"}}, "/serviceAccount/create", "want boolean"),
    ({"agent": {"resources": {"limits": {"memory": "lots"}}}}, "/agent/resources/limits/memory", "pattern"),
    ({"metrics": {"serviceMonitor": {"interval": "soon"}}}, "/metrics/serviceMonitor/interval", "pattern"),
    ({"image": {"digest": "md5:abc"}}, "/image/digest", "pattern"),
    ({"livenessProbe": {"periodSeconds": 0}}, "/livenessProbe/periodSeconds", "minimum"),
    ({"agent": {"accountsPerAgent": 0}}, "/agent/accountsPerAgent", "minimum"),
    ({"agent": {"accountsPerAgent": 65}}, "/agent/accountsPerAgent", "maximum"),
    ({"agent": {"accountsPerAgent": "64"}}, "/agent/accountsPerAgent", "want integer"),
    ({"agent": {"sizing": {"requests": {"cpu": {"perWorker": -1}}}}}, "/agent/sizing/requests/cpu/perWorker", "minimum"),
    ({"agent": {"sizing": {"limits": {"memory": {"perPod": 1}}}}}, "additional properties 'perPod' not allowed", ""),
]


@pytest.mark.parametrize("values,path,reason", BAD, ids=[json.dumps(b[0]) for b in BAD])
def test_bad_values_are_rejected_with_a_clear_message(helm, tmp_path, values, path, reason):  # noqa: F811
    proc = render(helm, values=values, tmp_path=tmp_path, check=False)
    assert proc.returncode != 0, f"{values} was accepted:\n{proc.stdout[:500]}"
    assert "values don't meet the specifications of the schema" in proc.stderr
    assert path in proc.stderr, proc.stderr
    assert reason in proc.stderr, proc.stderr


def test_schema_rejects_unknown_top_level_keys_but_allows_global():
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    assert "global" in schema["properties"]


def test_every_default_value_is_described_by_the_schema():
    """values.yaml and values.schema.json list the same keys (two levels deep)."""
    import yaml

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())

    def props(node):
        if "$ref" in node:
            node = schema["$defs"][node["$ref"].split("/")[-1]]
        return node.get("properties", {})

    top = props(schema)
    assert set(values) <= set(top), set(values) - set(top)
    for key, value in values.items():
        if isinstance(value, dict) and top[key].get("additionalProperties") is False:
            assert set(value) <= set(props(top[key])), (key, set(value) - set(props(top[key])))


@pytest.mark.parametrize("values", [
    {"replicaCount": 0},
    {"watchNamespaces": ["a", "b-2"], "rbac": {"create": True}},
    {"image": {"tag": "0.1.0-rc.1", "pullPolicy": "Never"}, "agent": {"image": {"digest": "sha256:" + "0" * 64}}},
    {"resources": {"requests": {"cpu": 0.25, "memory": "100M"}}, "global": {"anything": 1}},
    {"metrics": {"serviceMonitor": {"enabled": True, "interval": "1m30s", "labels": {"release": "kps"}}}},
])
def test_good_values_are_accepted(helm, tmp_path, values):  # noqa: F811
    docs = render(helm, values=values, tmp_path=tmp_path)
    assert any(d["kind"] == "Deployment" for d in docs)
