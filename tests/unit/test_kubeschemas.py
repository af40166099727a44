"""kubeschemas' conversion (swagger.json and CRDs -> strict kubeconform schemas) on small inputs, and the layout
kubeconform's ``-schema-location`` template finds."""

from __future__ import annotations

from pathlib import Path

from sipfleet.localenv import kubeschemas as ks

SWAGGER = {"definitions": {
    "io.k8s.api.demo.v1.Widget": {
        "x-kubernetes-group-version-kind": [{"group": "demo.example", "version": "v1", "kind": "Widget"}],
        "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                       "metadata": {"$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"},
                       "spec": {"$ref": "#/definitions/io.k8s.api.demo.v1.WidgetSpec"}},
        "type": "object"},
    "io.k8s.api.demo.v1.WidgetSpec": {
        "properties": {"port": {"type": "string", "format": "int-or-string"},
                       "size": {"$ref": "#/definitions/io.k8s.apimachinery.pkg.api.resource.Quantity"},
                       "free": {"type": "object", "additionalProperties": {"type": "string"}}},
        "required": ["port"], "type": "object"},
    "io.k8s.api.demo.v1.Unused": {"properties": {"x": {"type": "string"}}, "type": "object"},
    "io.k8s.apimachinery.pkg.api.resource.Quantity": {"type": "string", "description": "q"},
    "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta": {
        "properties": {"name": {"type": "string"}, "labels": {"type": "object",
                                                             "additionalProperties": {"type": "string"}}},
        "type": "object"},
    "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent": {  # a GVK without a kind property: not a kind
        "x-kubernetes-group-version-kind": [{"group": "demo.example", "version": "v1", "kind": "WatchEvent"}],
        "properties": {"type": {"type": "string"}}, "type": "object"},
}}

CRD = {"kind": "CustomResourceDefinition", "spec": {
    "group": "sipfleet.io", "names": {"kind": "Thing"},
    "versions": [
        {"name": "v1", "served": True, "schema": {"openAPIV3Schema": {"type": "object", "properties": {
            "spec": {"type": "object", "properties": {
                "port": {"x-kubernetes-int-or-string": True},
                "note": {"type": "string", "nullable": True},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                          "properties": {"a": {"type": "string"}}}}}}}}},
        {"name": "v0", "served": False}]}}


def test_builtin_kinds_are_strict_standalone_schemas():
    schemas = ks.builtin_schemas(SWAGGER)
    assert list(schemas) == [("demo.example", "v1", "Widget")]
    w = schemas[("demo.example", "v1", "Widget")]
    assert w["properties"]["apiVersion"]["enum"] == ["demo.example/v1"]
    assert w["properties"]["kind"]["enum"] == ["Widget"]
    assert w["additionalProperties"] is False
    defs = w["definitions"]
    assert "io.k8s.api.demo.v1.Unused" not in defs  # only what the kind reaches
    spec = defs["io.k8s.api.demo.v1.WidgetSpec"]
    assert spec["additionalProperties"] is False and spec["required"] == ["port"]
    assert spec["properties"]["port"] == {"oneOf": [{"type": "string"}, {"type": "integer"}]}
    assert spec["properties"]["free"]["additionalProperties"] == {"type": "string"}  # maps stay open
    assert {"type": "number"} in defs["io.k8s.apimachinery.pkg.api.resource.Quantity"]["oneOf"]


def test_crd_kinds_get_object_meta_and_keep_open_what_preserves_unknown_fields():
    meta = ks.object_meta_schema(SWAGGER)
    schemas = ks.crd_schemas(CRD, meta)
    assert list(schemas) == [("sipfleet.io", "v1", "Thing")]  # v0 is not served
    t = schemas[("sipfleet.io", "v1", "Thing")]
    assert t["additionalProperties"] is False
    assert t["properties"]["apiVersion"]["enum"] == ["sipfleet.io/v1"]
    assert t["properties"]["metadata"]["additionalProperties"] is False
    assert "labels" in t["properties"]["metadata"]["properties"]
    spec = t["properties"]["spec"]
    assert spec["additionalProperties"] is False
    assert spec["properties"]["port"] == {"oneOf": [{"type": "string"}, {"type": "integer"}]}
    assert spec["properties"]["note"]["type"] == ["string", "null"]
    assert "additionalProperties" not in spec["properties"]["extra"]


def test_layout_is_what_the_schema_location_template_names(tmp_path: Path):
    n = ks.write_schemas(tmp_path, {("", "v1", "Service"): {}, ("apps", "v1", "Deployment"): {},
                                    ("monitoring.coreos.com", "v1", "PrometheusRule"): {}})
    assert n == 3
    assert (tmp_path / "v1" / "service_v1.json").is_file()  # kubeconform's .Group is "v1" for the core group
    assert (tmp_path / "apps" / "deployment_v1.json").is_file()
    assert (tmp_path / "monitoring.coreos.com" / "prometheusrule_v1.json").is_file()
    loc_flag, loc = ks.locations(tmp_path)
    assert loc_flag == "-schema-location"
    assert loc == f"{tmp_path}/{{{{ .Group }}}}/{{{{ .ResourceKind }}}}_{{{{ .ResourceAPIVersion }}}}.json"


def test_a_bare_equals_sign_is_a_string():
    assert ks.load_all("enum:\n- =\n- '!='\n") == [{"enum": ["=", "!="]}]


def test_no_go_is_one_clear_line(monkeypatch, tmp_path):
    import shutil

    import pytest

    from sipfleet.localenv import kubebin

    monkeypatch.setenv("SIPFLEET_CACHE", str(tmp_path))
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(kubebin.KubebinError) as e:
        ks.ensure()
    assert "\n" not in str(e.value) and "Go is needed to fetch k8s.io/kubernetes" in str(e.value)


def test_no_module_proxy_is_one_clear_line(monkeypatch, tmp_path):
    import shutil

    import pytest

    from sipfleet.localenv import kubebin

    if not shutil.which("go"):
        pytest.fail("this test needs Go (the project builds its binaries with it)")
    monkeypatch.setenv("GOMODCACHE", str(tmp_path / "empty-modcache"))  # a cold cache, and no proxy to fill it
    monkeypatch.setenv("GOPROXY", "off")
    with pytest.raises(kubebin.KubebinError) as e:
        ks.prometheus_crd_files()
    msg = str(e.value)
    assert "\n" not in msg and "github.com/prometheus-operator/prometheus-operator" in msg and "GOPROXY=off" in msg
