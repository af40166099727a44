"""Builders are pure: the assignment carries no secrets, RBAC is resourceNames-limited, owners are all hosts."""

from __future__ import annotations


import pytest

from sipfleet.api import models as m
from sipfleet_operator import builders as b
from sipfleet_operator import placement as p
from sipfleet_operator import stored
from sipfleet_operator.config import Settings

P = "sip:127.0.20.1;lr"


def account(name: str, secret="creds", **extra) -> b.HostedAccount:
    spec = m.SipAccountSpec(
        aor=f"sip:{name}@example.com",
        registrar="sip:127.0.20.2",
        route=[P],
        credentials={"secretName": secret, "passwordKey": "pw"},
        **extra,
    )
    return b.HostedAccount(name=name, namespace="ns1", uid=f"uid-{name}", generation=3, spec=spec, secret_version="42")


def agent_for(accounts) -> p.Agent:
    key = p.GroupKey.for_spec("ns1", accounts[0].name, accounts[0].spec)
    fleet: dict = {}
    for a in accounts:
        fleet = p.place(fleet, key, a.name, p.worker_key(a.spec)).fleet
    (agent,) = fleet.values()
    return agent


def test_configmap_holds_a_valid_assignment_without_secrets():
    accs = [account("alice"), account("bob", secret="bob-creds")]
    agent = agent_for(accs)
    cm = b.build_configmap(agent, accs, Settings())
    text = cm["data"][b.ASSIGNMENT_KEY]
    assignment = m.AgentAssignment.model_validate_json(text)
    assert assignment.agent == agent.name
    assert [a.name for a in assignment.accounts] == ["alice", "bob"]
    creds = assignment.accounts[1].credentials
    assert (creds.secret_name, creds.password_key, creds.secret_version) == ("bob-creds", "pw", "42")
    assert creds.password_file is None and "password\"" not in text.replace("passwordKey", "")
    assert stored.read_configmap(cm) == stored.StoredAgent(agent.namespace, agent.name, agent.key, ("alice", "bob"),
                                                           shapes=agent.shapes)
    # deterministic: same input, same bytes (so unchanged assignments are never rewritten)
    assert b.build_configmap(agent, list(reversed(accs)), Settings()) == cm


def test_configmap_refuses_missing_account_data():
    accs = [account("alice"), account("bob")]
    agent = agent_for(accs)
    with pytest.raises(ValueError):
        b.build_configmap(agent, accs[:1], Settings())


def test_tokens_are_combined_and_carried():
    assert b.combine_token(None, None) is None
    assert b.combine_token("x", None) == "user:x"
    assert b.combine_token("x", "y") == "user:x|op:y"
    a = account("alice")
    a = b.HostedAccount(**{**a.__dict__, "repair_token": "op:1", "reregister_token": "user:7"})
    acc = b.build_agent_account(a)
    assert (acc.repair_token, acc.reregister_token) == ("op:1", "user:7")


def test_every_child_is_owned_by_every_hosted_account():
    accs = [account("alice"), account("bob")]
    agent = agent_for(accs)
    children = b.build_children(agent, accs, Settings())
    assert [c["kind"] for c in children] == ["ConfigMap", "ServiceAccount", "Role", "RoleBinding", "Deployment"]
    for child in children:
        refs = child["metadata"]["ownerReferences"]
        assert [(r["name"], r["uid"]) for r in refs] == [("alice", "uid-alice"), ("bob", "uid-bob")]
        assert all(r["controller"] is False and r["blockOwnerDeletion"] is False for r in refs)
        assert all(r["apiVersion"] == m.API_VERSION and r["kind"] == m.KIND for r in refs)
        assert child["metadata"]["name"] == agent.name and child["metadata"]["namespace"] == "ns1"


def test_role_is_limited_to_hosted_names():
    accs = [account("alice"), account("bob", secret="bob-creds")]
    agent = agent_for(accs)
    rules = b.build_role(agent, accs)["rules"]
    by_res = {tuple(r["resources"]): r for r in rules}
    assert by_res[("sipaccounts",)]["resourceNames"] == ["alice", "bob"]
    assert set(by_res[("sipaccounts",)]["verbs"]) == {"get", "list", "watch"}
    assert by_res[("sipaccounts/status",)]["verbs"] == ["get", "patch"]
    assert by_res[("secrets",)]["resourceNames"] == ["bob-creds", "creds"]
    assert by_res[("secrets",)]["verbs"] == ["get"]
    assert by_res[("configmaps",)]["resourceNames"] == [agent.name]
    assert "create" in by_res[("events",)]["verbs"]
    for r in rules:
        if r["resources"] != ["events"]:
            assert r["resourceNames"], r  # never an empty list (that would mean every name)
    binding = b.build_role_binding(agent, accs)
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": agent.name, "namespace": "ns1"}]


def test_deployment_shape():
    accs = [account("alice")]
    agent = agent_for(accs)
    s = Settings(agent_image="sipfleet/agent:9")
    d = b.build_deployment(agent, accs, s)
    assert d["spec"]["replicas"] == 1 and d["spec"]["strategy"] == {"type": "Recreate"}
    tpl = d["spec"]["template"]
    sel = d["spec"]["selector"]["matchLabels"]
    assert all(tpl["metadata"]["labels"][k] == v for k, v in sel.items())
    (c,) = tpl["spec"]["containers"]
    assert c["image"] == "sipfleet/agent:9"
    env = {e["name"]: e for e in c["env"]}
    assert env["SIPFLEET_AGENT_NAME"]["value"] == agent.name
    assert env["SIPFLEET_ASSIGNMENT_CONFIGMAP"]["value"] == agent.name
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 8080, "scheme": "HTTP"}
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 120
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert tpl["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["resources"]["limits"] and c["resources"]["requests"]
    assert tpl["spec"]["serviceAccountName"] == agent.name
    # the template does not depend on who is hosted: adding an account never restarts the pod
    accs2 = accs + [account("bob")]
    agent2 = agent_for(accs2)
    d2 = b.build_deployment(agent2, accs2, s)
    assert d2["spec"]["template"] == tpl
    assert d2["metadata"]["annotations"] == d["metadata"]["annotations"]
    assert d2["metadata"]["ownerReferences"] != d["metadata"]["ownerReferences"]


def test_the_agent_gets_the_sip_side_of_the_spec_as_it_is():
    a = account("alice")
    spec = a.spec.model_copy(update={
        "registration": a.spec.registration.model_copy(update={"expires_seconds": 120, "backoff_multiplier": 3.0}),
        "incoming_calls": a.spec.incoming_calls.model_copy(update={"policy": "reject", "reject_code": 603}),
    })
    acc = b.build_agent_account(b.HostedAccount(**{**a.__dict__, "spec": spec}))
    assert issubclass(m.AgentAccount, m.SipIdentity) and issubclass(m.SipAccountSpec, m.SipIdentity)
    for f in m.SipIdentity.model_fields:  # declared once, on SipIdentity; copied whole
        assert getattr(acc, f) == getattr(spec, f), f
    assert acc.registration.expires_seconds == 120 and acc.incoming_calls.reject_code == 603
