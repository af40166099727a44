"""JSON schemas for kubeconform, made offline from what the pinned Go modules already hold.

``ensure()`` returns a cached directory laid out for kubeconform's
``-schema-location '<dir>/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json'`` (core kinds under
``v1/``), with one strict schema per kind:

* the built-in kinds from ``api/openapi-spec/swagger.json`` of the ``k8s.io/kubernetes`` module the control
  plane is built from (``gomod/kube``: the same version as our apiserver);
* the ``monitoring.coreos.com`` kinds from the CRDs in ``example/prometheus-operator-crd/`` of the pinned
  prometheus-operator module (``gomod/promcrds``, source only);
and ``write_crd_schemas(base, files, dest)`` adds the kinds of other CRD files (the chart's SipAccount CRD, read
from the checkout at test time) in a second directory of the same layout (``locations(base, dest)``).

Strict means: every object schema with ``properties`` gets ``additionalProperties: false`` (unless it preserves
unknown fields), ``apiVersion``/``kind`` must name the kind, and a CRD's ``metadata`` is the real ObjectMeta.
int-or-string fields take a string or an integer, quantities a string or a number, as the apiserver does.
Nothing is fetched at test time: the modules come from the Go module cache (``go mod download``, which
needs the proxy only on a cold cache). The directory is cached under ``$SIPFLEET_CACHE/schemas/k8s-<version>-<key>/``,
``key`` hashing the module versions and this converter.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterable

import yaml

from .binsets import PROMCRDS_DIR, PROMCRDS_MODULE, SETS, BinarySet, KubebinError, cache_root, module_version

SWAGGER = "api/openapi-spec/swagger.json"
OBJECT_META_FILE = "objectmeta.json"
PROM_CRD_DIR = "example/prometheus-operator-crd"
SCHEMA_LOCATION = "{dir}/{{{{ .Group }}}}/{{{{ .ResourceKind }}}}_{{{{ .ResourceAPIVersion }}}}.json"
_OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
_QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
_INT_OR_STRING = {"oneOf": [{"type": "string"}, {"type": "integer"}]}


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads a bare ``=`` as the string it is (PyYAML resolves it to the unconstructable YAML
    1.1 ``!!value`` tag; prometheus-operator's CRDs have ``- =`` in a label-matcher enum)."""


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:value"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}


def load_all(text: str) -> list:
    return [d for d in yaml.load_all(text, Loader=_Loader) if d]

# ---------------------------------------------------------------------------------------------------------------
# pure conversion (unit-tested)
# ---------------------------------------------------------------------------------------------------------------


def schema_path(root: Path, group: str, version: str, kind: str) -> Path:
    """Where kubeconform looks for a kind with ``SCHEMA_LOCATION`` (its .Group is "v1" for the core group)."""
    return root / (group or version) / f"{kind.lower()}_{version}.json"


def _strict(node: Any) -> Any:
    """A copy of a schema tree with ``additionalProperties: false`` on closed objects and int-or-string fixed."""
    if isinstance(node, list):
        return [_strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) if k not in ("enum", "default", "example", "required") else v for k, v in node.items()}
    if out.get("format") == "int-or-string" or out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out.pop("format", None)
        out.update(copy.deepcopy(_INT_OR_STRING))
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    if "properties" in out and "additionalProperties" not in out \
            and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def _refs(node: Any) -> Iterable[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/definitions/"):
            yield ref[len("#/definitions/"):]
        for v in node.values():
            yield from _refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)


def _reachable(definitions: dict[str, Any], start: Iterable[str]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    todo = list(start)
    while todo:
        name = todo.pop()
        if name in seen or name not in definitions:
            continue
        seen[name] = definitions[name]
        todo.extend(_refs(definitions[name]))
    return seen


def _pin_gvk(schema: dict, group: str, version: str, kind: str) -> dict:
    props = schema.setdefault("properties", {})
    props["apiVersion"] = {"type": "string", "enum": [f"{group}/{version}" if group else version]}
    props["kind"] = {"type": "string", "enum": [kind]}
    return schema


def _prepared_definitions(swagger: dict) -> dict[str, Any]:
    defs = {name: _strict(d) for name, d in swagger["definitions"].items()}
    if _QUANTITY in defs:  # `cpu: 1` is a quantity too
        desc = defs[_QUANTITY].get("description", "")
        defs[_QUANTITY] = {"description": desc, "oneOf": [{"type": "string"}, {"type": "number"}]}
    return defs


def builtin_schemas(swagger: dict) -> dict[tuple[str, str, str], dict]:
    """(group, version, kind) -> a standalone strict schema (the kind's reachable definitions inlined as
    ``definitions``, referenced as ``#/definitions/...``) for every kind in a Kubernetes swagger.json."""
    defs = _prepared_definitions(swagger)
    out: dict[tuple[str, str, str], dict] = {}
    for name, raw in swagger["definitions"].items():
        for gvk in raw.get("x-kubernetes-group-version-kind", []):
            group, version, kind = gvk.get("group", ""), gvk["version"], gvk["kind"]
            if "properties" not in raw or "kind" not in raw["properties"]:
                continue  # list/option helper types that share a GVK (e.g. DeleteOptions)
            root = _pin_gvk(copy.deepcopy(defs[name]), group, version, kind)
            root["definitions"] = _reachable(defs, _refs(root))
            out[(group, version, kind)] = root
    return out


def crd_schemas(crd: dict, object_meta: dict) -> dict[tuple[str, str, str], dict]:
    """(group, version, kind) -> strict schema for every served version of a CustomResourceDefinition;
    ``object_meta`` is the built-in ObjectMeta schema (with its ``definitions``) put in for ``metadata``."""
    spec = crd["spec"]
    out = {}
    for v in spec["versions"]:
        if not v.get("served", True):
            continue
        root = _strict(copy.deepcopy((v.get("schema") or {}).get("openAPIV3Schema") or {"type": "object"}))
        root.setdefault("type", "object")
        _pin_gvk(root, spec["group"], v["name"], spec["names"]["kind"])
        meta = copy.deepcopy(object_meta)
        root["definitions"] = meta.pop("definitions", {})
        root["properties"]["metadata"] = meta
        if not root.get("x-kubernetes-preserve-unknown-fields"):
            root["additionalProperties"] = False
        out[(spec["group"], v["name"], spec["names"]["kind"])] = root
    return out


def object_meta_schema(swagger: dict) -> dict:
    defs = _prepared_definitions(swagger)
    meta = copy.deepcopy(defs[_OBJECT_META])
    meta["definitions"] = _reachable(defs, _refs(meta))
    return meta


def write_schemas(root: Path, schemas: dict[tuple[str, str, str], dict]) -> int:
    for (group, version, kind), schema in schemas.items():
        p = schema_path(root, group, version, kind)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(schema, sort_keys=True))
    return len(schemas)


# ---------------------------------------------------------------------------------------------------------------
# the modules' files and the cache
# ---------------------------------------------------------------------------------------------------------------


def _module_dir(bset: BinarySet) -> Path:
    from .kubebin import module_source_dir

    return module_source_dir(None, bset)


def _promcrds_set() -> BinarySet:
    return BinarySet(name="promcrds", module_dir=PROMCRDS_DIR, main_module=PROMCRDS_MODULE, packages={},
                     ldflags_template="")


def prometheus_crd_files() -> list[Path]:
    """The prometheus-operator CRDs of the pinned module (downloaded into the Go module cache if needed)."""
    files = sorted((_module_dir(_promcrds_set()) / PROM_CRD_DIR).glob("monitoring.coreos.com_*.yaml"))
    if not files:
        raise KubebinError(f"{PROMCRDS_MODULE} has no CRDs in {PROM_CRD_DIR}")
    return files


def cache_key() -> str:
    h = hashlib.sha256()
    h.update(module_version(SETS["kube"].module_dir / "go.mod", SETS["kube"].main_module).encode())
    h.update(module_version(PROMCRDS_DIR / "go.mod", PROMCRDS_MODULE).encode())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()[:12]


def _schemas_of_crd_files(files: Iterable[Path], object_meta: dict) -> dict[tuple[str, str, str], dict]:
    out: dict[tuple[str, str, str], dict] = {}
    for f in files:
        for doc in load_all(Path(f).read_text()):
            if doc.get("kind") == "CustomResourceDefinition":
                out.update(crd_schemas(doc, object_meta))
    return out


def ensure() -> Path:
    """The cached schema directory of the built-in and monitoring.coreos.com kinds (built if missing), with
    ``objectmeta.json`` for ``write_crd_schemas``. ``sipfleet cluster build`` makes it, so CI does it once."""
    dest = cache_root() / "schemas" / f"k8s-{SETS['kube'].version()}-{cache_key()}"
    if (dest / ".complete").exists():
        return dest
    swagger_file = _module_dir(SETS["kube"]) / SWAGGER
    if not swagger_file.is_file():
        raise KubebinError(f"{SETS['kube'].main_module} has no {SWAGGER}")
    swagger = json.loads(swagger_file.read_text())
    schemas = builtin_schemas(swagger)
    meta = object_meta_schema(swagger)
    schemas.update(_schemas_of_crd_files(prometheus_crd_files(), meta))
    tmp = dest.with_name(dest.name + f".{os.getpid()}.tmp")
    write_schemas(tmp, schemas)
    (tmp / OBJECT_META_FILE).write_text(json.dumps(meta, sort_keys=True))
    (tmp / ".complete").write_text(f"{len(schemas)}\n")
    try:
        os.replace(tmp, dest)
    except OSError:  # somebody else finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def write_crd_schemas(base: Path, crd_files: Iterable[Path], dest: Path) -> int:
    """Schemas of the CRDs in ``crd_files`` (e.g. the chart's own, read at test time) into ``dest``, with the
    ObjectMeta of ``base`` (a directory from ``ensure``); returns how many kinds."""
    meta = json.loads((base / OBJECT_META_FILE).read_text())
    return write_schemas(dest, _schemas_of_crd_files(crd_files, meta))


def locations(*roots: Path) -> list[str]:
    """``-schema-location`` arguments for directories made by ``ensure`` / ``write_crd_schemas``."""
    return [arg for root in roots for arg in ("-schema-location", SCHEMA_LOCATION.format(dir=root))]
