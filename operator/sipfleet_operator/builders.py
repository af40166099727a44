"""Pure builders for everything the operator creates per agent. No I/O: dicts in, dicts out.

Per agent ``sipfleet-agent-<id>-<n>`` in the accounts' namespace: a ConfigMap (``assignment.json``, an
``AgentAssignment``; no secrets, only Secret names/keys/resourceVersions), a ServiceAccount, a Role limited by
``resourceNames`` to what the agent hosts, a RoleBinding and a Deployment (1 replica, Recreate). Every child
carries a non-controller ownerReference to every SipAccount the agent hosts, so the garbage collector removes
the children when the last hosted account is gone.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from sipfleet.api import models as m
from sipfleet.api.budget import registrar_key

from . import sizing
from .config import Settings
from .placement import Agent, GroupKey, agent_key_id

# every label, annotation and key name lives in sipfleet.api.keys; builders' names for them stay importable from here
from sipfleet.api.keys import (  # noqa: F401 - re-exported
    AGENT_SELECTOR,
    ANNOTATION_APPLIED,
    ANNOTATION_GROUP_KEY,
    ANNOTATION_PAUSED,
    ANNOTATION_REPAIR,
    ANNOTATION_REREGISTER,
    ANNOTATION_SIZE,
    ANNOTATION_TEMPLATE_HASH,
    ASSIGNMENT_KEY,
    LABEL_AGENT,
    LABEL_COMPONENT,
    LABEL_GROUP,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    MANAGED_BY,
)


@dataclass(frozen=True)
class HostedAccount:
    """One SipAccount as the builders need it (taken from the API object by the handlers)."""

    name: str
    namespace: str
    uid: str
    generation: int | None
    spec: m.SipAccountSpec
    secret_version: str | None = None
    repair_token: str | None = None
    reregister_token: str | None = None


def combine_token(user: str | None, operator: str | None) -> str | None:
    """One token for the agent from the user's annotation and the ladder's token: either changing changes it."""
    parts = []
    if user:
        parts.append(f"user:{user}")
    if operator:
        parts.append(f"op:{operator}")
    return "|".join(parts) or None


def labels(agent: str, key: GroupKey) -> dict[str, str]:
    """The group label is the id in the agent's name: an agent an older operator named after another key keeps
    its labels (a changed pod template label would roll its pod and re-REGISTER every account)."""
    return {
        LABEL_NAME: "sipfleet-agent",
        LABEL_COMPONENT: "agent",
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_AGENT: agent,
        LABEL_GROUP: agent_key_id(agent) or key.id,
    }


def owner_references(accounts: Iterable[HostedAccount]) -> list[dict]:
    return [
        {
            "apiVersion": m.API_VERSION,
            "kind": m.KIND,
            "name": a.name,
            "uid": a.uid,
            "controller": False,
            "blockOwnerDeletion": False,
        }
        for a in sorted(accounts, key=lambda a: a.name)
    ]


def _metadata(agent: Agent, accounts: Sequence[HostedAccount], extra_annotations: dict | None = None) -> dict:
    meta = {
        "name": agent.name,
        "namespace": agent.namespace,
        "labels": labels(agent.name, agent.key),
        "ownerReferences": owner_references(accounts),
    }
    if extra_annotations:
        meta["annotations"] = dict(extra_annotations)
    return meta


def build_agent_account(a: HostedAccount, rates: Mapping[str, float] | None = None) -> m.AgentAccount:
    """``rates``: registrar key -> each account's share of the REGISTER budget (sipfleet.api.budget)."""
    spec = a.spec
    return m.AgentAccount(
        name=a.name,
        namespace=a.namespace,
        uid=a.uid,
        generation=a.generation,
        **{f: getattr(spec, f) for f in m.SipIdentity.model_fields},  # the SIP side, as the spec says it
        tls=m.AgentTls.from_spec(spec.tls) if spec.tls is not None else None,
        credentials=m.AgentCredentials(
            secret_name=spec.credentials.secret_name,
            username_key=spec.credentials.username_key,
            password_key=spec.credentials.password_key,
            secret_version=a.secret_version,
            realm=spec.credentials.realm,
        ),
        self_heal=spec.drift.self_heal,
        repair_token=a.repair_token,
        reregister_token=a.reregister_token,
        register_rate=(rates or {}).get(registrar_key(spec.registrar)),
    )


def build_assignment(agent: Agent, accounts: Sequence[HostedAccount], settings: Settings | None = None,
                     rates: Mapping[str, float] | None = None) -> m.AgentAssignment:
    by_name = {a.name: a for a in accounts}
    missing = set(agent.accounts) - set(by_name)
    if missing:
        raise ValueError(f"no account data for {sorted(missing)}")
    s = settings or Settings()
    return m.AgentAssignment(
        agent=agent.name,
        settings=m.AgentSettings(http_port=s.agent_http_port, dead_flow_seconds=s.agent_dead_flow_seconds,
                                 udp_dead_flow_seconds=s.agent_udp_dead_flow_seconds,
                                 registrar_probe_seconds=s.agent_registrar_probe_seconds),
        accounts=[build_agent_account(by_name[n], rates) for n in agent.accounts],
    )


def assignment_json(assignment: m.AgentAssignment) -> str:
    return json.dumps(assignment.to_api(), indent=1, sort_keys=True)


def build_configmap(agent: Agent, accounts: Sequence[HostedAccount], settings: Settings | None = None,
                    rates: Mapping[str, float] | None = None) -> dict:
    hosted = [a for a in accounts if a.name in agent.accounts]
    assignment = build_assignment(agent, hosted, settings, rates)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(agent, hosted, {ANNOTATION_GROUP_KEY: agent.key.to_json()}),
        "data": {ASSIGNMENT_KEY: assignment_json(assignment)},
    }


def build_service_account(agent: Agent, accounts: Sequence[HostedAccount]) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _metadata(agent, [a for a in accounts if a.name in agent.accounts]),
        "automountServiceAccountToken": True,
    }


def build_role(agent: Agent, accounts: Sequence[HostedAccount]) -> dict:
    hosted = sorted((a for a in accounts if a.name in agent.accounts), key=lambda a: a.name)
    names = [a.name for a in hosted]
    secrets = sorted({a.spec.credentials.secret_name for a in hosted} | tls_objects(hosted, "Secret"))
    rules = [
        {"apiGroups": [m.GROUP], "resources": [m.PLURAL], "resourceNames": names, "verbs": ["get", "list", "watch"]},
        {"apiGroups": [m.GROUP], "resources": [f"{m.PLURAL}/status"], "resourceNames": names, "verbs": ["get", "patch"]},
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": secrets, "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [agent.name], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": sorted(tls_objects(hosted, "ConfigMap")),
         "verbs": ["get"]},
        {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
    ]
    # An empty resourceNames list would mean "all names": drop rules that would have none.
    rules = [r for r in rules if r.get("resourceNames", True)]
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _metadata(agent, hosted),
        "rules": rules,
    }


def tls_objects(hosted: Iterable[HostedAccount], kind: str) -> set[str]:
    """Names of the ConfigMaps or Secrets the hosted accounts' TLS policies name (the agent reads them)."""
    out = set()
    for a in hosted:
        t = a.spec.tls if a.spec.transport == "tls" else None
        if t is None:
            continue
        if t.ca_ref is not None and t.ca_ref.kind == kind:
            out.add(t.ca_ref.name)
        if kind == "Secret" and t.client_certificate_secret_ref is not None:
            out.add(t.client_certificate_secret_ref.secret_name)
    return out


def build_role_binding(agent: Agent, accounts: Sequence[HostedAccount]) -> dict:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _metadata(agent, [a for a in accounts if a.name in agent.accounts]),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": agent.name},
        "subjects": [{"kind": "ServiceAccount", "name": agent.name, "namespace": agent.namespace}],
    }


def _field_env(name: str, path: str) -> dict:
    return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}


def agent_resources(agent: Agent, settings: Settings, size: int | None = None) -> dict:
    """The agent container's requests and limits: the chart's fixed ``agent.resources`` when set, else sized
    (sizing.py) for class ``size`` (default: the class the agent needs now)."""
    if settings.agent_resources:
        return settings.agent_resources
    size = size or sizing.size_class(agent.workers, bool(agent.key.dedicated))
    return sizing.resources(size, settings.accounts_per_agent, settings.agent_sizing, bool(agent.key.dedicated))


def build_pod_template(agent: Agent, settings: Settings, size: int | None = None) -> dict:
    port = settings.agent_http_port
    probe = lambda path, period, failures: {  # noqa: E731
        "httpGet": {"path": path, "port": port, "scheme": "HTTP"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }
    return {
        "metadata": {"labels": labels(agent.name, agent.key)},
        "spec": {
            "serviceAccountName": agent.name,
            "automountServiceAccountToken": True,
            "terminationGracePeriodSeconds": 15,
            "enableServiceLinks": False,
            "securityContext": settings.agent_pod_security_context or {
                "runAsNonRoot": True,
                "runAsUser": 65532,
                "runAsGroup": 65532,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "agent",
                    "image": settings.agent_image,
                    "imagePullPolicy": settings.agent_image_pull_policy,
                    "args": [*settings.agent_args, *(["--debug-hooks"] if settings.agent_debug_hooks else [])],
                    "env": [
                        {"name": "SIPFLEET_AGENT_NAME", "value": agent.name},
                        {"name": "SIPFLEET_ASSIGNMENT_CONFIGMAP", "value": agent.name},
                        {"name": "SIPFLEET_LOG_LEVEL", "value": settings.agent_log_level},
                        _field_env("POD_NAME", "metadata.name"),
                        _field_env("POD_NAMESPACE", "metadata.namespace"),
                        _field_env("POD_IP", "status.podIP"),
                    ],
                    "ports": [
                        {"name": "http", "containerPort": port, "protocol": "TCP"},
                    ],
                    # pjsua start-up can take long on a busy node: liveness only counts once it has started
                    "startupProbe": probe("/healthz", 2, 90),
                    "readinessProbe": probe("/readyz", 2, 3),
                    "livenessProbe": probe("/healthz", 10, 3),
                    "resources": agent_resources(agent, settings, size),
                    "securityContext": settings.agent_security_context or {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "runAsNonRoot": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }


def template_hash(template: dict) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:16]


def build_deployment(agent: Agent, accounts: Sequence[HostedAccount], settings: Settings,
                     size: int | None = None) -> dict:
    size = size or sizing.size_class(agent.workers, bool(agent.key.dedicated))
    template = build_pod_template(agent, settings, size)
    meta = _metadata(
        agent, [a for a in accounts if a.name in agent.accounts],
        {ANNOTATION_TEMPLATE_HASH: template_hash(template), ANNOTATION_SIZE: str(size)},
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "revisionHistoryLimit": 2,
            "selector": {"matchLabels": {LABEL_AGENT: agent.name, LABEL_MANAGED_BY: MANAGED_BY}},
            "template": template,
        },
    }


def unchanged(desired: dict, current: dict | None, digest: str) -> bool:
    """Whether a child read from the API already is what ``desired`` (whose digest is ``digest``) would apply: the
    applied-digest annotation says so, and the fields that carry meaning were not changed by anyone since (the
    server defaults other fields, so those are not compared)."""
    if current is None:
        return False
    meta = current.get("metadata") or {}
    if (meta.get("annotations") or {}).get(ANNOTATION_APPLIED) != digest:
        return False
    want_ann = desired["metadata"].get("annotations") or {}
    if any((meta.get("annotations") or {}).get(k) != v for k, v in want_ann.items()):
        return False
    if [r.get("uid") for r in meta.get("ownerReferences") or []] != [
        r["uid"] for r in desired["metadata"].get("ownerReferences") or []
    ]:
        return False
    fields = {"ConfigMap": ("data",), "Role": ("rules",), "RoleBinding": ("roleRef", "subjects")}.get(desired["kind"], ())
    if desired["kind"] == "Deployment":
        return (current.get("spec") or {}).get("replicas") == desired["spec"]["replicas"]
    return all(current.get(f) == desired.get(f) for f in fields)


def size_to_apply(agent: Agent, settings: Settings, current: dict | None) -> int:
    """The size class for the agent's Deployment given the one in the cluster (``current``, None: none yet):
    sizing.choose with the class the current Deployment was built for, and whether its pod template would change
    anyway (then a smaller class costs nothing)."""
    needed = sizing.size_class(agent.workers, bool(agent.key.dedicated))
    meta = (current or {}).get("metadata") or {}
    annotations = meta.get("annotations") or {}
    try:
        previous = int(annotations.get(ANNOTATION_SIZE, ""))
    except ValueError:
        previous = None
    if previous not in sizing.CLASSES:
        return needed
    keep = template_hash(build_pod_template(agent, settings, previous))
    return sizing.choose(needed, previous, keep != annotations.get(ANNOTATION_TEMPLATE_HASH))


def build_children(agent: Agent, accounts: Sequence[HostedAccount], settings: Settings,
                   size: int | None = None, rates: Mapping[str, float] | None = None) -> list[dict]:
    """Every child of one agent, in creation order (ConfigMap first: it is the source of truth); the
    Deployment sized for class ``size`` (default: what the agent needs now); ``rates``: the REGISTER budget's
    share per account, by registrar key."""
    return [
        build_configmap(agent, accounts, settings, rates),
        build_service_account(agent, accounts),
        build_role(agent, accounts),
        build_role_binding(agent, accounts),
        build_deployment(agent, accounts, settings, size),
    ]
