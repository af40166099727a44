"""The chart's RBAC is least privilege and still lets the operator do its job.

* every rule the operator puts into a per-agent Role is covered by the operator's own rules in the same scope, so
  Kubernetes' escalation check lets it create that Role and RoleBinding without `escalate` or `bind`;
* every kind the operator's API client talks to is covered;
* nothing is wildcarded, secrets are read-only, cluster-scoped access is read-only discovery (namespaces, CRDs).
"""

from __future__ import annotations

import pytest

from sipfleet.api import models as m
from tests.unit.test_chart_render import by_kind, helm, one, render  # noqa: F401  (helm is a fixture)

DANGEROUS_VERBS = {"*", "escalate", "bind", "impersonate", "deletecollection"}


def covers(rules: list[dict], group: str, resource: str, verb: str, names: list[str] | None = None) -> bool:
    for r in rules:
        if group not in r.get("apiGroups", []) or resource not in r.get("resources", []):
            continue
        if verb not in r.get("verbs", []):
            continue
        limited = r.get("resourceNames")
        if limited and (not names or not set(names) <= set(limited)):
            continue
        return True
    return False


def agent_role_rules() -> list[dict]:
    from sipfleet_operator import builders as b
    from sipfleet_operator import placement as p

    accounts = []
    for name in ("alice", "bob"):
        spec = m.SipAccountSpec(aor=f"sip:{name}@example.com", registrar="sip:127.0.10.2",
                                route=["sip:127.0.10.1;lr"], credentials={"secretName": f"{name}-sip"})
        accounts.append(b.HostedAccount(name=name, namespace="team-a", uid=f"u-{name}", generation=1, spec=spec))
    tls = m.SipAccountSpec(aor="sip:carol@example.com", registrar="sip:127.0.10.2", route=["sips:127.0.10.1;lr"],
                           transport="tls", credentials={"secretName": "carol-sip"},
                           tls={"caRef": {"name": "lab-ca"}, "clientCertificateSecretRef": {"secretName": "carol-tls"}})
    accounts.append(b.HostedAccount(name="carol", namespace="team-a", uid="u-carol", generation=1, spec=tls))
    key = p.GroupKey.for_spec("team-a", "alice", accounts[0].spec)
    fleet: dict = {}
    for a in accounts:
        fleet = p.place(fleet, key, a.name, p.worker_key(a.spec)).fleet
    (agent,) = fleet.values()
    return b.build_role(agent, accounts)["rules"]


@pytest.fixture(scope="module", params=["cluster-wide", "namespaced"])
def operator_rules(request, helm):  # noqa: F811
    if request.param == "cluster-wide":
        docs = render(helm)
        return one(docs, "ClusterRole")["rules"]
    # the operator's permissions in a watched namespace: its Role plus the read-only discovery ClusterRole
    docs = render(helm, "--set", "watchNamespaces={team-a}")
    return one(docs, "Role")["rules"] + one(docs, "ClusterRole")["rules"]


def test_operator_can_create_agent_roles_without_escalate(operator_rules):
    rules = agent_role_rules()
    assert rules, "the operator builds no agent Role rules?"
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert covers(operator_rules, group, resource, verb, rule.get("resourceNames")), (
                        f"agent Role grants {verb} {group or 'core'}/{resource} which the operator lacks: "
                        "creating that Role would need `escalate`"
                    )


def test_operator_rules_cover_its_api_client(operator_rules, request):
    from sipfleet_operator import k8s

    for kind, (api_version, plural) in k8s._PLURALS.items():
        if kind == "ClusterKopfPeering" and request.node.callspec.params["operator_rules"] == "namespaced":
            continue  # a namespaced operator peers in a KopfPeering per namespace
        group = api_version.split("/")[0] if "/" in api_version else ""
        verb = "create" if kind == "Event" else "get"  # events are only ever written
        assert covers(operator_rules, group, plural, verb), f"{kind}: no {verb} on {group}/{plural}"
    children = {"": ["configmaps", "serviceaccounts"], "apps": ["deployments"],
                "rbac.authorization.k8s.io": ["roles", "rolebindings"]}
    for group, resources in children.items():
        for res in resources:
            for verb in ("create", "patch", "delete", "list", "watch"):
                assert covers(operator_rules, group, res, verb), f"{verb} {group}/{res}"
    assert covers(operator_rules, m.GROUP, m.PLURAL, "watch")
    assert covers(operator_rules, m.GROUP, m.PLURAL, "patch")  # kopf finalizers/annotations
    assert covers(operator_rules, m.GROUP, f"{m.PLURAL}/status", "patch")
    assert covers(operator_rules, "", "pods", "delete")  # the ladder's restart-pod step
    assert covers(operator_rules, "", "events", "create")


def test_operator_rules_are_least_privilege(operator_rules):
    for rule in operator_rules:
        assert "*" not in rule.get("apiGroups", []) and "*" not in rule.get("resources", []), rule
        assert not set(rule["verbs"]) & DANGEROUS_VERBS, rule
        assert "update" not in rule["verbs"], f"the operator never PUTs: {rule}"
        assert not rule.get("nonResourceURLs"), rule
    for verb in ("create", "patch", "update", "delete"):
        assert not covers(operator_rules, "", "secrets", verb), f"the operator must not {verb} secrets"
        assert not covers(operator_rules, m.GROUP, m.PLURAL, "create" if verb == "create" else "delete")
    # cluster-scoped resources: read-only discovery at most
    for rule in operator_rules:
        if "apiextensions.k8s.io" in rule["apiGroups"] or "namespaces" in rule["resources"]:
            assert set(rule["verbs"]) <= {"get", "list", "watch"}, rule
