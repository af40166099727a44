"""A SipAccount's life through the operator, against real parts: kube-apiserver + controllers + a real kubelet,
real sipfleet-agent pods (pjsua2) and the Kamailio lab (P proxy, R registrar, E edge).

apply -> Registered through P (seen on the wire) -> delete -> contacts gone at R, children garbage-collected.
A missing Secret shows as CredentialsMissing and heals when the Secret appears; a username that would inject SIP
headers is CredentialsInvalid and nothing is sent.
"""

from __future__ import annotations

import time

import pytest

from sipfleet.localenv.waiting import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.lab]


def registers(lab, user: str, since: float):
    return [r for r in lab.wire(since=since, method="REGISTER") if f":{user}@" in r.from_uri]


def assert_via_proxy(lab, user: str, since: float) -> None:
    """The agent sent REGISTER to P with Route <P;lr> (never to E), and P relayed it to R."""
    regs = registers(lab, user, since)
    at_p = [r for r in regs if r.node == "P"]
    assert at_p, f"no REGISTER for {user} reached P: {regs}"
    assert lab.ip("P") in at_p[-1].route[0] if at_p[-1].route else True
    assert not [r for r in regs if r.node == "E"], f"REGISTER for {user} reached E: {regs}"
    at_r = [r for r in regs if r.node == "R"]
    assert at_r and at_r[-1].src.startswith(lab.ip("P") + ":"), at_r


def test_apply_registers_through_the_proxy(operator, sipacc, lab, lab_user):
    user, password = lab_user("reg")
    sipacc.secret("creds", user, password)
    t0 = time.time()
    sipacc.create("alice", sipacc.spec(lab, user, "creds"))

    res = sipacc.kubectl("wait", "--for=condition=Registered", "sipaccount/alice", "--timeout=120s")
    assert "condition met" in res.stdout
    body = sipacc.wait_condition("alice", "Ready", timeout=60)
    st = body["status"]
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["Registered"]["reason"] == "Registered"
    assert conds["AgentReady"]["status"] == "True"
    assert conds["RouteInSync"]["status"] == "True"
    assert conds["Degraded"]["status"] == "False"
    assert st["observedGeneration"] == body["metadata"]["generation"]
    assert st["registration"]["state"] == "Registered"
    assert lab.ip("P") in (st["route"]["firstHop"] or "")

    wait_for(lambda: [r for r in registers(lab, user, t0) if r.node == "R"], timeout=30, message="REGISTER at R")
    assert_via_proxy(lab, user, t0)
    assert lab.contacts(user), "R holds no contact"

    # printer columns
    out = sipacc.kubectl("get", "sipacc", "alice").stdout.splitlines()
    assert out[0].split()[:5] == ["NAME", "REGISTERED", "FIRST", "HOP", "IN"], out
    assert out[1].split()[1] == "True" and lab.ip("P") in out[1] and out[1].split()[3] == "True", out
    wide = sipacc.kubectl("get", "sipacc", "alice", "-o", "wide").stdout
    assert "AOR" in wide and user in wide and "prevent" in wide

    # the agent the operator placed it on, and the status written by that agent
    agent = sipacc.hosting_agent("alice")
    assert agent and agent.startswith("sipfleet-agent-")
    pods = sipacc.agent_pods(agent)
    assert len(pods) == 1 and st["agent"]["pod"] == pods[0].metadata.name
    # no secret anywhere in what the operator wrote
    cm = sipacc.core.read_namespaced_config_map(agent, sipacc.ns)
    assert password not in cm.data["assignment.json"]
    assert password not in str(sipacc.get("alice"))


def test_a_username_that_would_inject_headers_is_refused(operator, sipacc, lab, lab_user):
    user, password = lab_user("inject")
    t0 = time.time()
    sipacc.secret("inj-creds", f"{user}\r\nX-Injected: yes", password)
    sipacc.create("inj", sipacc.spec(lab, user, "inj-creds"))
    body = sipacc.wait_condition("inj", "Registered", status="False", reason="CredentialsInvalid", timeout=60)
    cond = next(c for c in body["status"]["conditions"] if c["type"] == "Registered")
    assert "key username holds control characters" in cond["message"] and "X-Injected" not in cond["message"]
    assert sipacc.hosting_agent("inj") is None
    t_fix = time.time()
    assert not registers(lab, user, t0), "a REGISTER was sent with the refused username"
    # fixed: registered
    sipacc.core.patch_namespaced_secret("inj-creds", sipacc.ns, {"stringData": {"username": user}})
    sipacc.wait_condition("inj", "Registered", timeout=120)
    assert all(r.at >= t_fix for r in registers(lab, user, t0))
    assert operator.alive()


def test_missing_secret_then_created(operator, sipacc, lab, lab_user):
    user, password = lab_user("late")
    sipacc.create("late", sipacc.spec(lab, user, "late-creds"))
    body = sipacc.wait_condition("late", "Registered", status="False", reason="CredentialsMissing", timeout=60)
    cond = next(c for c in body["status"]["conditions"] if c["type"] == "Registered")
    assert "late-creds" in cond["message"]
    assert sipacc.hosting_agent("late") is None  # nothing to run without credentials
    # a malformed Secret (no password key) is still missing credentials, and nothing crashes
    sipacc.core.create_namespaced_secret(sipacc.ns, {"metadata": {"name": "late-creds"}, "stringData": {"username": user}})
    wait_for(lambda: "password" in (sipacc.condition("late", "Registered") or {}).get("message", ""),
             timeout=60, message="CredentialsMissing naming the missing key")
    assert sipacc.condition("late", "Registered")["reason"] == "CredentialsMissing"
    assert operator.alive()
    # fixed: registered
    sipacc.core.patch_namespaced_secret("late-creds", sipacc.ns, {"stringData": {"password": password}})
    sipacc.wait_condition("late", "Registered", timeout=120)
    sipacc.wait_condition("late", "Ready", timeout=60)
    assert lab.contacts(user)


def test_delete_unregisters_and_collects_children(operator, sipacc, lab, lab_user):
    user, password = lab_user("del")
    sipacc.secret("creds", user, password)
    sipacc.create("bob", sipacc.spec(lab, user, "creds"))
    sipacc.wait_condition("bob", "Registered", timeout=120)
    agent = sipacc.hosting_agent("bob")
    assert agent and lab.contacts(user)
    kinds = {
        "ConfigMap": lambda: sipacc.core.list_namespaced_config_map(sipacc.ns, label_selector=f"sipfleet.io/agent={agent}").items,
        "Deployment": lambda: sipacc.apps.list_namespaced_deployment(sipacc.ns, label_selector=f"sipfleet.io/agent={agent}").items,
        "ServiceAccount": lambda: [s for s in sipacc.core.list_namespaced_service_account(sipacc.ns).items if s.metadata.name == agent],
        "Role": lambda: [r for r in sipacc.rbac.list_namespaced_role(sipacc.ns).items if r.metadata.name == agent],
        "RoleBinding": lambda: [r for r in sipacc.rbac.list_namespaced_role_binding(sipacc.ns).items if r.metadata.name == agent],
    }
    uid = sipacc.get("bob")["metadata"]["uid"]
    for kind, lister in kinds.items():
        (obj,) = lister()
        assert [(o.name, o.uid) for o in obj.metadata.owner_references] == [("bob", uid)], kind

    assert not sipacc.get("bob")["metadata"].get("finalizers")  # nothing of ours holds a deletion
    sipacc.delete("bob")
    wait_for(lambda: not sipacc.exists("bob"), timeout=60, message="SipAccount gone")
    wait_for(lambda: not lab.contacts(user), timeout=60, message=f"contacts of {user} removed at R")
    for kind, lister in kinds.items():
        wait_for(lambda: not lister(), timeout=60, message=f"{kind} {agent} collected")
    wait_for(lambda: not sipacc.agent_pods(agent), timeout=60, message="agent pod gone")


def test_an_account_deleted_while_no_operator_runs_is_unregistered(operator, sipacc, lab, lab_user):
    """No finalizer: the deletion completes at once even without an operator; the garbage collector removes the
    agent (its objects are owned by the account), the agent unregisters on SIGTERM; the restarted operator
    recreates nothing."""
    user, password = lab_user("orphan")
    sipacc.secret("creds", user, password)
    sipacc.create("ivy", sipacc.spec(lab, user, "creds", agent={"dedicated": True}))
    sipacc.wait_condition("ivy", "Registered", timeout=120)
    agent = sipacc.hosting_agent("ivy")
    assert agent and lab.contacts(user)
    operator.kill()
    try:
        sipacc.delete("ivy")
        wait_for(lambda: not sipacc.exists("ivy"), timeout=30, message="SipAccount gone without an operator")
        wait_for(lambda: not lab.contacts(user), timeout=90, message=f"contacts of {user} removed at R")
        wait_for(lambda: not sipacc.agent_pods(agent), timeout=60, message="agent pod collected")
    finally:
        operator.start()
    operator.wait_live()
    time.sleep(3)  # the restarted operator has listed the fleet: it must not bring the agent back
    assert agent not in sipacc.agent_configmaps() and not sipacc.agent_pods(agent)


def test_the_finalizer_of_an_older_version_is_removed(operator, sipacc, lab, lab_user):
    """SipAccounts made under a version that put sipfleet.io/finalizer on them lose it (kopf removes a finalizer no
    handler needs), so they can be deleted with or without an operator."""
    user, password = lab_user("legacy")
    sipacc.secret("creds", user, password)
    body = {"apiVersion": "sipfleet.io/v1alpha1", "kind": "SipAccount",
            "metadata": {"name": "old", "finalizers": ["sipfleet.io/finalizer"]},
            "spec": sipacc.spec(lab, user, "creds")}
    sipacc.custom.create_namespaced_custom_object("sipfleet.io", "v1alpha1", sipacc.ns, "sipaccounts", body)
    wait_for(lambda: not sipacc.get("old")["metadata"].get("finalizers"), timeout=60,
             message="the old finalizer removed")
    sipacc.wait_condition("old", "Registered", timeout=120)
    sipacc.delete("old")
    wait_for(lambda: not sipacc.exists("old"), timeout=30, message="SipAccount gone")
    wait_for(lambda: not lab.contacts(user), timeout=60, message=f"contacts of {user} removed at R")


def test_deleting_the_namespace_completes(operator, cluster, k8s, lab, lab_user):
    """Nothing of ours may hold a namespace that is being deleted (no finalizers)."""
    import uuid

    from kubernetes import client
    from kubernetes.client.rest import ApiException

    from tests.fixtures.operator import SipAccounts

    core = client.CoreV1Api(k8s)
    ns = f"op-nsdel-{uuid.uuid4().hex[:5]}"
    core.create_namespace({"metadata": {"name": ns, "labels": {"sipfleet.io/test": "operator"}}})
    acc = SipAccounts(k8s, cluster, ns)
    user, password = lab_user("nsdel")
    acc.secret("creds", user, password)
    for i in range(2):
        acc.create(f"n{i}", acc.spec(lab, user, "creds") if i == 0 else
                   {**acc.spec(lab, user, "creds"), "aor": lab.aor(user + "x")})
    acc.wait_condition("n0", "Registered", timeout=120)
    core.delete_namespace(ns)

    def gone():
        try:
            core.read_namespace(ns)
            return False
        except ApiException as e:
            return e.status == 404

    wait_for(gone, timeout=120, interval=1, message=f"namespace {ns} deleted")
    wait_for(lambda: not lab.contacts(user), timeout=60, message="contacts removed when the namespace went")



def test_secret_rotation_reaches_the_agent(operator, sipacc, lab, lab_user):
    """A changed Secret changes secretVersion in the assignment; the agent re-reads it and registers with it."""
    import secrets as pysecrets

    user, password = lab_user("rot")
    sipacc.secret("creds", user, password)
    sipacc.create("gina", sipacc.spec(lab, user, "creds"))
    sipacc.wait_condition("gina", "Ready", timeout=120)
    agent = sipacc.hosting_agent("gina")
    v0 = next(a for a in sipacc.agent_configmaps()[agent]["accounts"] if a["name"] == "gina")["credentials"]["secretVersion"]

    new_password = pysecrets.token_urlsafe(12)
    lab.add_user(user, new_password)  # R now only accepts the new password
    t0 = time.time()
    sipacc.core.patch_namespaced_secret("creds", sipacc.ns, {"stringData": {"password": new_password}})
    wait_for(lambda: next(a for a in sipacc.agent_configmaps()[agent]["accounts"] if a["name"] == "gina")
             ["credentials"]["secretVersion"] != v0, timeout=60, message="secretVersion updated in the assignment")
    # the agent registers again, and R accepts it (authenticated with the new password)
    wait_for(lambda: [r for r in registers(lab, user, t0) if r.node == "R" and r.has_auth], timeout=60,
             message="an authenticated REGISTER after the rotation")
    # registered anew after the rotation (a wrong password would end in Failed 401/403 instead)
    from datetime import datetime

    def registered_again():
        reg = (sipacc.get("gina").get("status") or {}).get("registration") or {}
        since = reg.get("registeredSince")
        return reg.get("state") == "Registered" and since and \
            datetime.fromisoformat(since.replace("Z", "+00:00")).timestamp() > t0

    wait_for(registered_again, timeout=60, message="registered again with the new password")
    sipacc.wait_condition("gina", "Registered", timeout=60)
    assert lab.contacts(user)
    assert new_password not in str(sipacc.agent_configmaps())
