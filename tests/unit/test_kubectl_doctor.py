"""sipfleet.kubectl.doctor: verdicts and the exit code from what the client read."""

from __future__ import annotations

from sipfleet.api import models as m
from sipfleet.kubectl import doctor, rbac
from tests.unit import kubectl_objects as k


def crd(served=("v1alpha1",), storage="v1alpha1", established=True):
    return {"spec": {"versions": [{"name": v, "served": True, "storage": v == storage} for v in served]},
            "status": {"conditions": [{"type": "Established", "status": "True" if established else "False"}]}}


def operator(ready=1, watch=""):
    return {"metadata": {"name": "sf-sipfleet", "namespace": "sipfleet-system"},
            "spec": {"replicas": 1, "template": {"spec": {"serviceAccountName": "sf-sipfleet", "containers": [
                {"name": "operator", "env": [{"name": "SIPFLEET_WATCH_NAMESPACES", "value": watch}]}]}}},
            "status": {"readyReplicas": ready}}


def granted(namespaces=("demo",), cluster_wide=True, deny=()):
    rows = rbac.checks(list(namespaces), cluster_wide)
    for r in rows:
        r["allowed"] = (r["resource"], r["verb"]) not in deny
    return rows


def healthy(**kw) -> doctor.Facts:
    base = dict(crd=crd(), operators=[operator()], rbac=granted(), rbac_subject="system:serviceaccount:s:sf",
                deployments=[k.deployment(k.AGENT_A, ["alice"])], pods=[k.pod(f"{k.AGENT_A}-x", k.AGENT_A)],
                accounts=[k.account("alice", k.AGENT_A, f"{k.AGENT_A}-x")], namespaces=["demo"])
    base.update(kw)
    return doctor.Facts(**base)


def statuses(checks):
    return {(c["check"], c["status"]) for c in checks}


def test_all_well_exits_zero():
    checks = doctor.verdicts(healthy())
    assert {c["status"] for c in checks} == {"ok"}, checks
    assert doctor.exit_code(checks) == 0
    assert doctor.render(checks).splitlines()[-1] == "all good"


def test_crd_missing_or_not_serving_this_version_fails():
    assert doctor.exit_code(doctor.verdicts(healthy(crd=None))) == 1
    checks = doctor.verdicts(healthy(crd=crd(served=("v1beta1",), storage="v1beta1")))
    c = next(c for c in checks if c["check"] == "crd")
    assert c["status"] == "fail" and m.VERSION in c["message"] and "v1beta1" in c["message"]
    c = next(c for c in doctor.verdicts(healthy(crd=crd(served=("v1alpha1", "v1beta1"), storage="v1beta1")))
             if c["check"] == "crd")
    assert c["status"] == "warn"
    assert ("crd", "fail") in statuses(doctor.verdicts(healthy(crd=crd(established=False))))


def test_operator_missing_not_ready_or_not_watching_fails():
    assert ("operator", "fail") in statuses(doctor.verdicts(healthy(operators=[])))
    assert ("operator", "fail") in statuses(doctor.verdicts(healthy(operators=[operator(ready=0)])))
    checks = doctor.verdicts(healthy(operators=[operator(watch="op-*,prod")]))
    assert any(c["check"] == "operator" and c["status"] == "fail" and c["subject"] == "demo" for c in checks)
    assert doctor.exit_code(doctor.verdicts(healthy(operators=[operator(watch="de*")]))) == 0
    assert doctor.watches(operator(watch=""), "anything")


def test_missing_permissions_fail_and_unaskable_ones_warn():
    checks = doctor.verdicts(healthy(rbac=granted(deny={("pods", "delete")})))
    c = next(c for c in checks if c["check"] == "rbac")
    assert c["status"] == "fail" and "delete pods in demo" in c["message"]
    # cluster discovery is optional in namespaced mode: a warning
    checks = doctor.verdicts(healthy(rbac=granted(cluster_wide=False, deny={("namespaces", "list")})))
    assert ("rbac", "warn") in statuses(checks) and doctor.exit_code(checks) == 0
    checks = doctor.verdicts(healthy(rbac=[], rbac_error="403 Forbidden creating SubjectAccessReviews"))
    assert ("rbac", "warn") in statuses(checks) and doctor.exit_code(checks) == 0


def test_agents_unschedulable_crashlooping_or_restarting():
    pods = [k.pod("a-1", k.AGENT_A, unschedulable="0/1 nodes are available: 1 Insufficient cpu."),
            k.pod("a-2", k.AGENT_A, ready=False, restarts=5, waiting="CrashLoopBackOff"),
            k.pod("a-3", k.AGENT_A, restarts=1, last_terminated={"reason": "Error", "exitCode": 3})]
    checks = doctor.verdicts(healthy(pods=pods, deployments=[k.deployment(k.AGENT_A, ["alice"], ready=0)]))
    agent = [c for c in checks if c["check"] == "agent"]
    msgs = {c["subject"]: (c["status"], c["message"]) for c in agent}
    assert msgs["demo/a-1"] == ("fail", "unschedulable: 0/1 nodes are available: 1 Insufficient cpu.")
    assert msgs["demo/a-2"][0] == "fail" and "CrashLoopBackOff" in msgs["demo/a-2"][1]
    assert msgs["demo/a-3"] == ("warn", "1 restarts (last: Error, exit 3)")
    assert msgs[f"demo/{k.AGENT_A}"] == ("fail", "0/1 Ready (accounts alice)")
    assert doctor.exit_code(checks) == 1


def test_accounts_not_ready_fail_with_their_reason_paused_warns():
    missing = k.account("dave", None, None, conditions=[
        k.cond("Ready", "False", "CredentialsMissing", "2026-12-02T04:00:00Z", "Secret demo/dave-sip not found")])
    paused = k.account("bob", k.AGENT_A, "p", conditions=[k.cond("Ready", "False", "Paused", "2026-12-02T04:00:00Z")])
    fresh = k.account("erin", None, None, conditions=[])
    checks = doctor.verdicts(healthy(accounts=[missing, paused, fresh]))
    by = {c["subject"]: c for c in checks if c["check"] == "account"}
    assert by["demo/dave"]["status"] == "fail"
    assert by["demo/dave"]["message"] == "Ready=False CredentialsMissing: Secret demo/dave-sip not found"
    assert by["demo/bob"]["status"] == "warn"
    assert by["demo/erin"]["status"] == "fail" and "no conditions" in by["demo/erin"]["message"]
    assert doctor.exit_code(checks) == 1
    assert "problem(s)" in doctor.render(checks).splitlines()[-1]
    assert doctor.exit_code(doctor.verdicts(healthy(accounts=[paused]))) == 0
