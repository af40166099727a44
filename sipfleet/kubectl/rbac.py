"""What the operator's ServiceAccount must be allowed to do: the rules of charts/sipfleet/templates/_helpers.tpl
(``sipfleet.namespacedRules``, in every watched namespace) and the cluster-wide read access kopf uses to notice
namespaces and CRDs. ``tests/unit/test_kubectl_rbac.py`` keeps these equal to the chart.
"""

from __future__ import annotations

from typing import NamedTuple


class Rule(NamedTuple):
    group: str
    resource: str
    verbs: tuple[str, ...]


NAMESPACED = (
    Rule("sipfleet.io", "sipaccounts", ("get", "list", "watch", "patch")),
    Rule("sipfleet.io", "sipaccounts/status", ("get", "patch")),
    Rule("", "configmaps", ("get", "list", "watch", "create", "patch", "delete")),
    Rule("", "serviceaccounts", ("get", "list", "watch", "create", "patch", "delete")),
    Rule("apps", "deployments", ("get", "list", "watch", "create", "patch", "delete")),
    Rule("rbac.authorization.k8s.io", "roles", ("get", "list", "watch", "create", "patch", "delete")),
    Rule("rbac.authorization.k8s.io", "rolebindings", ("get", "list", "watch", "create", "patch", "delete")),
    Rule("", "secrets", ("get", "list", "watch")),
    Rule("", "pods", ("get", "list", "watch", "delete")),
    Rule("", "events", ("create", "patch")),
    Rule("events.k8s.io", "events", ("create", "patch")),
    Rule("kopf.dev", "kopfpeerings", ("get", "list", "watch", "create", "patch")),
)

#: needed cluster-wide when the operator watches every namespace; optional (rbac.clusterDiscovery) otherwise
CLUSTER = (
    Rule("", "namespaces", ("get", "list", "watch")),
    Rule("apiextensions.k8s.io", "customresourcedefinitions", ("get", "list", "watch")),
)


def checks(namespaces: list[str], cluster_wide: bool) -> list[dict]:
    """Every (namespace, group, resource, verb) to ask a SubjectAccessReview about; ``required`` False for the
    cluster discovery rules in namespaced mode."""
    out = []
    for ns in namespaces:
        for r in NAMESPACED:
            for v in r.verbs:
                out.append({"namespace": ns, "group": r.group, "resource": r.resource, "verb": v, "required": True})
    for r in CLUSTER:
        for v in r.verbs:
            out.append({"namespace": None, "group": r.group, "resource": r.resource, "verb": v,
                        "required": cluster_wide})
    return out
