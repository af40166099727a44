"""Generate the SipAccount CustomResourceDefinition from the pydantic models.

``sipfleet crd generate`` writes ``crds/sipaccounts.sipfleet.io.yaml``; ``sipfleet crd check`` (and a unit
test) fails when the committed file differs from what the models generate.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from . import models as m

CRD_NAME = f"{m.PLURAL}.{m.GROUP}"
CRD_FILE = f"{CRD_NAME}.yaml"

_DROP_KEYS = {"title", "additionalProperties"}


def _inline(schema: Any, defs: dict[str, Any]) -> Any:
    """Inline ``$ref``s, fold ``Optional`` unions and drop keys Kubernetes' structural schemas reject."""
    if isinstance(schema, list):
        return [_inline(s, defs) for s in schema]
    if not isinstance(schema, dict):
        return schema
    schema = dict(schema)
    if "$ref" in schema:
        target = copy.deepcopy(defs[schema.pop("$ref").split("/")[-1]])
        target.update(schema)  # sibling keys (description, default) win
        schema = target
    if "anyOf" in schema:
        branches = [b for b in schema.pop("anyOf") if b.get("type") != "null"]
        if len(branches) != 1:
            raise ValueError(f"cannot express union in a structural schema: {branches}")
        merged = _inline(branches[0], defs)
        merged.update({k: v for k, v in schema.items() if k != "default" or v is not None})
        if schema.get("default", 0) is None:
            merged[_OPTIONAL] = True  # `X | None = None`: absent means None, never a filled-in default
        schema = merged
    if schema.get("default", 0) is None:
        del schema["default"]
    if "const" in schema:
        schema["enum"] = [schema.pop("const")]
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROP_KEYS or key == "$defs":
            continue
        if key == "properties":
            out[key] = {name: _inline(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out[key] = _inline(value, defs)
        else:
            out[key] = value
    if out.get("type") == "object" and "properties" in out:
        # A nested object whose fields are all optional defaults to its fully defaulted form, so the apiserver
        # fills it in. (Not `{}`: kube-apiserver checks a default against the object's CEL rules without
        # filling nested defaults first, so `{}` would be rejected by rules that read defaulted fields.)
        for name, sub in out["properties"].items():
            if sub.pop(_OPTIONAL, False):
                continue
            if (
                sub.get("type") == "object"
                and "properties" in sub
                and not sub.get("required")
                and name not in out.get("required", [])
                and "default" not in sub
            ):
                sub["default"] = _filled_default(sub)
    return out


#: marks (while inlining) an optional object whose Python default is None: it gets no default of its own
_OPTIONAL = "x-sipfleet-optional"


def _drop_marks(node: Any) -> Any:
    if isinstance(node, dict):
        node.pop(_OPTIONAL, None)
        for v in node.values():
            _drop_marks(v)
    elif isinstance(node, list):
        for v in node:
            _drop_marks(v)
    return node


def _filled_default(schema: dict[str, Any]) -> dict[str, Any]:
    """The object an empty value becomes once every property default is applied (recursively)."""
    filled: dict[str, Any] = {}
    for name, sub in schema.get("properties", {}).items():
        if "default" in sub:
            filled[name] = copy.deepcopy(sub["default"])
        elif sub.get("type") == "object" and "properties" in sub and not sub.get("required") \
                and not sub.get(_OPTIONAL):
            filled[name] = _filled_default(sub)
    return filled


def model_schema(model: type[m.ApiModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return _drop_marks(_inline(raw, raw.get("$defs", {})))


def _status_schema() -> dict[str, Any]:
    schema = model_schema(m.SipAccountStatus)
    # Nothing in status is defaulted by the apiserver: agent and operator own their fields.
    def strip_defaults(node: Any) -> None:
        if isinstance(node, dict):
            node.pop("default", None)
            for v in node.values():
                strip_defaults(v)
        elif isinstance(node, list):
            for v in node:
                strip_defaults(v)

    strip_defaults(schema)
    conditions = schema["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    return schema


def build_crd() -> dict[str, Any]:
    spec_schema = model_schema(m.SipAccountSpec)
    spec_schema["description"] = m.SipAccountSpec.__doc__.strip()
    root = {
        "type": "object",
        "description": "A SIP identity that sipfleet keeps registered through a fixed proxy route.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": _status_schema(),
        },
    }
    cond = '.status.conditions[?(@.type=="{}")].status'
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {"app.kubernetes.io/name": "sipfleet", "app.kubernetes.io/component": "crd"},
        },
        "spec": {
            "group": m.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": m.KIND,
                "listKind": f"{m.KIND}List",
                "plural": m.PLURAL,
                "singular": m.KIND.lower(),
                "shortNames": ["sipacc"],
                "categories": ["sipfleet"],
            },
            "versions": [
                {
                    "name": m.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Registered", "type": "string", "jsonPath": cond.format("Registered")},
                        {"name": "First hop", "type": "string", "jsonPath": ".status.route.firstHop"},
                        {"name": "In sync", "type": "string", "jsonPath": cond.format("RouteInSync")},
                        {"name": "AOR", "type": "string", "jsonPath": ".spec.aor", "priority": 1},
                        {"name": "Mode", "type": "string", "jsonPath": ".spec.routeMode", "priority": 1},
                        {"name": "Agent", "type": "string", "jsonPath": ".status.agent.pod", "priority": 1},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def render_crd_yaml() -> str:
    header = "# Generated by `sipfleet crd generate` from sipfleet/api/models.py. Do not edit.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=120)


def crd_paths(repo_root: Path) -> list[Path]:
    """The committed copies: ``crds/`` and the Helm chart's ``crds/``."""
    return [repo_root / "crds" / CRD_FILE, repo_root / "charts" / "sipfleet" / "crds" / CRD_FILE]


def write(repo_root: Path) -> list[Path]:
    text = render_crd_yaml()
    for path in crd_paths(repo_root):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return crd_paths(repo_root)


def check(repo_root: Path) -> str | None:
    """None when every committed copy matches the models, else a one-line explanation."""
    text = render_crd_yaml()
    for path in crd_paths(repo_root):
        if not path.exists():
            return f"{path} is missing; run `sipfleet crd generate`"
        if path.read_text() != text:
            return f"{path} differs from the models; run `sipfleet crd generate` and commit it"
    return None
