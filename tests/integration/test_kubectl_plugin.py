"""``kubectl sipfleet`` against the real local cluster: the chart's operator (helm install, namespaced mode), a
fleet of three accounts registered at the real SIP lab (alice and bob share an agent, carol uses routeMode
account in an agent of her own), and the plugin run as a person runs it (``kubectl sipfleet ...`` found on PATH
by kubectl's plugin mechanism, and the console script with ``--kubeconfig``).

* status: every account Ready, the agents with their accounts, pod restarts, memory from the kubelet summary;
* reregister carol: acknowledged, and no drift (the agent re-creates the account); then carol drifts for real
  (routeMode account, selfHeal off, the agents' debug hook ``POST /debug/drift``: pjsua follows the Service-Route
  to E, PJSIP issue 4066): the drift and the ladder's repair show in status (repairs in the window, p50/p99,
  methods, RouteDrift/RouteRepaired events) and in describe's timeline;
* repair alice bob: a new unique value each, acknowledged by the agent;
* pause/resume (and --all needs a confirmation);
* logs: only the account's lines from the hosting agent pod;
* doctor: exit 0 when all is well, 1 once an account's Secret is missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from kubernetes import client

from sipfleet.api import keys
from sipfleet.localenv.waiting import wait_for
from tests.fixtures.chart import CHART, ensure_crd, restricted
from tests.fixtures.operator import SipAccounts

pytestmark = [pytest.mark.cluster, pytest.mark.lab, pytest.mark.slow]

RELEASE = "kp"
BIN = Path(sys.executable).parent
PLUGIN = BIN / "kubectl-sipfleet"


class Fleet:
    def __init__(self, cluster, lab, accs: SipAccounts, users: dict[str, str]):
        self.cluster, self.lab, self.accs, self.ns, self.users = cluster, lab, accs, accs.ns, users

    def plugin(self, *args: str, input: str | None = None, check_rc: int | None = 0) -> subprocess.CompletedProcess:
        """The console script, as ``kubectl-sipfleet --kubeconfig ... ARGS``."""
        res = subprocess.run([str(PLUGIN), "--kubeconfig", str(self.cluster.kubeconfig), *args], capture_output=True,
                             text=True, input=input, timeout=120, env={**os.environ, "NO_COLOR": ""})
        if check_rc is not None:
            assert res.returncode == check_rc, f"{args}: rc {res.returncode}\n{res.stdout}\n{res.stderr}"
        return res

    def via_kubectl(self, *args: str) -> subprocess.CompletedProcess:
        """``kubectl sipfleet ARGS``: kubectl finds the plugin on PATH; the kubeconfig comes from $KUBECONFIG."""
        env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
               "KUBECONFIG": str(self.cluster.kubeconfig)}
        return subprocess.run([str(self.cluster.kubectl_path()), "sipfleet", *args], capture_output=True, text=True,
                              timeout=120, env=env)

    def record(self, what: str) -> None:
        """With SIPFLEET_KUBECTL_RECORD=DIR, write what the plugin reads now to DIR/<what>.json (the unit tests'
        recorded objects, tests/unit/data/kubectl/)."""
        out = os.environ.get("SIPFLEET_KUBECTL_RECORD")
        if not out:
            return
        from sipfleet.kubectl.client import Client

        c = Client(str(self.cluster.kubeconfig))
        try:
            pods = c.agent_pods(self.ns)
            memory, _ = c.memory(pods)
            doc = {"accounts": c.accounts(self.ns), "events": c.events(self.ns),
                   "deployments": c.agent_deployments(self.ns), "pods": pods,
                   "memory": [[ns, pod, b] for (ns, pod), b in sorted((memory or {}).items())],
                   "crd": c.crd(), "operators": c.operators(self.ns)}
        finally:
            c.close()
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / f"{what}.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")

    def json(self, *args: str, check_rc: int | None = 0):
        return json.loads(self.plugin(*args, "-o", "json", check_rc=check_rc).stdout)


@pytest.fixture(scope="module")
def fleet(cluster, k8s, helm_bin, lab, tmp_path_factory):
    core = client.CoreV1Api(k8s)
    ns = f"kp-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": ns, "labels": {"sipfleet.io/test": "true"}}})
    wait_for(lambda: core.list_namespaced_service_account(ns).items, timeout=60, message="default ServiceAccount")
    restricted(cluster, ns)
    ensure_crd(cluster)
    lab.join(cluster.netns, cluster.net.slot)  # pods reach P, R and E (the autouse join comes after module fixtures)
    home = tmp_path_factory.mktemp("helm")
    env = {**os.environ, **{v: str(home / v.lower()) for v in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME",
                                                                "HELM_DATA_HOME")}}

    def helm(*args: str) -> None:
        subprocess.run([str(helm_bin), "--kubeconfig", str(cluster.kubeconfig), *args], check=True, env=env,
                       capture_output=True, text=True, timeout=180)

    helm("install", RELEASE, str(CHART), "--namespace", ns, "--set", f"watchNamespaces={{{ns}}}",
         "--set", "extraEnv[0].name=SIPFLEET_AGENT_DEBUG_HOOKS", "--set-string", "extraEnv[0].value=true")
    accs = SipAccounts(k8s, cluster, ns)
    users = {}
    try:
        for name in ("alice", "bob", "carol"):
            user = f"kp{name}{uuid.uuid4().hex[:6]}"
            password = uuid.uuid4().hex
            lab.add_user(user, password)
            users[name] = user
            accs.secret(f"{name}-sip", user, password)
        accs.create("alice", accs.spec(lab, users["alice"], "alice-sip"))
        accs.create("bob", accs.spec(lab, users["bob"], "bob-sip"))
        accs.create("carol", accs.spec(lab, users["carol"], "carol-sip", routeMode="account",
                                       drift={"selfHeal": False, "repairTimeoutSeconds": 20, "maxPodRestarts": 1}))
        for name in users:
            accs.wait_condition(name, "Ready", timeout=180)
        yield Fleet(cluster, lab, accs, users)
    finally:
        subprocess.run([str(helm_bin), "--kubeconfig", str(cluster.kubeconfig), "uninstall", RELEASE, "--namespace",
                        ns, "--wait", "--timeout", "120s"], env=env, capture_output=True, timeout=180)
        core.delete_namespace(ns, propagation_policy="Background")


def test_status_shows_the_fleet(fleet):
    res = fleet.via_kubectl("status", "-n", fleet.ns)
    assert res.returncode == 0, res.stderr
    print(res.stdout)
    assert f"ACCOUNTS (3 in namespace {fleet.ns})" in res.stdout
    assert "\x1b[" not in res.stdout  # not a tty: no colour

    # the kubelet measures a new pod's memory within its housekeeping interval: until then it is not known ("-")
    s = wait_for(lambda: (lambda s: s if all(p["memoryBytes"] for a in s["agents"] for p in a["pods"]) else None)(
        fleet.json("status", "-n", fleet.ns)), timeout=90, interval=3, message="agent memory reported")
    assert s["accounts"]["total"] == 3
    assert s["accounts"]["conditions"]["Ready"] == {"True": 3, "False": 0, "Unknown": 0}
    assert s["drifting"] == []
    hosted = {tuple(a["accounts"]) for a in s["agents"]}
    # one namespace's accounts share a pod (carol, routeMode account, in a worker of its own)
    assert hosted == {("alice", "bob", "carol")}, s["agents"]
    for a in s["agents"]:
        assert a["ready"] == "1/1"
        (pod,) = a["pods"]
        assert pod["ready"] and pod["restarts"] == 0
        assert pod["name"] == fleet.accs.get(a["accounts"][0])["status"]["agent"]["pod"]
        # the kubelet's summary through the apiserver's node proxy (the admin may read it)
        assert pod["memoryBytes"] and pod["memoryBytes"] > 1 << 20, pod
    assert s["memory"] == "ok"
    assert s["unschedulable"] == []


def test_reregister_then_drift_shows_in_status_and_describe(fleet):
    import urllib.request

    fleet.plugin("reregister", "-n", fleet.ns, "carol")
    token = fleet.accs.get("carol")["metadata"]["annotations"][keys.ANNOTATION_REREGISTER]
    wait_for(lambda: fleet.accs.get("carol")["status"]["agent"].get("reregisterTokenAck") == f"user:{token}",
             timeout=60, message="reregister acknowledged")
    fleet.accs.wait_condition("carol", "Ready", timeout=60)
    assert not [e for e in fleet.accs.events("carol") if e.reason == "RouteDrift"]  # a re-register never drifts
    # now a real drift (the agent's debug hook); the ladder repairs it
    pod = fleet.accs.core.read_namespaced_pod(fleet.accs.get("carol")["status"]["agent"]["pod"], fleet.ns)
    urllib.request.urlopen(urllib.request.Request(f"http://{pod.status.pod_ip}:8080/debug/drift?account=carol",
                                                  data=b"", method="POST"), timeout=20).read()
    wait_for(lambda: [e for e in fleet.accs.events("carol") if e.reason == "RouteDrift"], timeout=90,
             message="RouteDrift event")
    fleet.accs.wait_condition("carol", "RouteInSync", timeout=90)
    wait_for(lambda: [e for e in fleet.accs.events("carol") if e.reason == "RouteRepaired"], timeout=30,
             message="RouteRepaired event")
    fleet.accs.wait_condition("carol", "Ready", timeout=60)
    st = fleet.accs.get("carol")["status"]
    assert st["agent"]["reregisterTokenAck"] == f"user:{token}"

    s = fleet.json("status", "-n", fleet.ns, "--since", "30m")
    r = s["repairs"]
    assert r["events"]["RouteDrift"] >= 1 and r["events"]["RouteRepaired"] >= 1, r
    carol = [x for x in r["records"] if x["name"] == "carol"]
    assert carol and carol[-1]["result"] == "repaired", r
    assert r["methods"].get(st["ladder"]["lastMethod"], 0) >= 1, r
    assert r["p50Ms"] is not None and r["p50Ms"] <= r["p99Ms"], r
    assert st["route"]["lastRepair"]["durationMs"] in [x["durationMs"] for x in carol]
    wide = fleet.plugin("status", "-n", fleet.ns, "-o", "wide").stdout
    print(wide)
    assert "carol" in wide and ("recreate-account" in wide or "restart-pod" in wide)

    fleet.record("after-drift")
    d = fleet.json("describe", "-n", fleet.ns, "carol")
    what = [e["what"] for e in d["timeline"]]
    times = [e["time"] for e in d["timeline"]]
    assert times == sorted(times)
    assert any(w.startswith("event Warning RouteDrift") for w in what), what
    assert any(w.startswith("event Normal RouteRepaired") for w in what), what
    assert any(w.startswith("repair repaired") for w in what), what
    assert any(w.startswith("route drift seen") for w in what), what
    assert any(w.startswith("condition RouteInSync=True") for w in what), what
    # the drift comes before its repair in the story
    first_drift = next(i for i, w in enumerate(what) if w.startswith("route drift seen"))
    assert any(w.startswith("repair repaired") for w in what[first_drift:]), what
    text = fleet.plugin("describe", "-n", fleet.ns, "carol").stdout
    print(text)
    assert "TIMELINE" in text and "RouteDrift" in text


def test_repair_sets_a_new_value_each_time_and_the_agent_acts(fleet):
    out = fleet.plugin("repair", "-n", fleet.ns, "alice", "bob").stdout
    assert "sipaccount/alice repair requested" in out and "sipaccount/bob repair requested" in out
    values = {n: fleet.accs.get(n)["metadata"]["annotations"][keys.ANNOTATION_REPAIR] for n in ("alice", "bob")}
    assert values["alice"] != values["bob"]
    for n, v in values.items():
        wait_for(lambda: (fleet.accs.get(n)["status"].get("agent") or {}).get("repairTokenAck") == f"user:{v}",
                 timeout=60, message=f"{n} repair acknowledged")
    fleet.plugin("repair", "-n", fleet.ns, "alice")
    again = fleet.accs.get("alice")["metadata"]["annotations"][keys.ANNOTATION_REPAIR]
    assert again != values["alice"]
    wait_for(lambda: (fleet.accs.get("alice")["status"].get("agent") or {}).get("repairTokenAck") == f"user:{again}",
             timeout=60, message="second repair acknowledged")
    for n in ("alice", "bob"):
        fleet.accs.wait_condition(n, "Ready", timeout=60)


def test_pause_resume_and_all_needs_confirmation(fleet):
    # --all without --yes and without a terminal: refused, nothing changed
    res = fleet.plugin("pause", "-n", fleet.ns, "--all", input="", check_rc=1)
    assert "--yes" in res.stderr
    assert not any(keys.ANNOTATION_PAUSED in (fleet.accs.get(n)["metadata"].get("annotations") or {})
                   for n in fleet.users)

    fleet.plugin("pause", "-n", fleet.ns, "-l", "nothing-has=this-label", check_rc=1)  # matches nothing
    fleet.plugin("pause", "-n", fleet.ns, "bob")
    fleet.accs.wait_condition("bob", "Ready", status="False", reason="Paused", timeout=60)
    s = fleet.json("status", "-n", fleet.ns)
    assert s["accounts"]["paused"] == [f"{fleet.ns}/bob"]
    checks = fleet.json("doctor", "-n", fleet.ns)["checks"]  # paused is a warning, not a failure
    assert {c["status"] for c in checks if c["subject"] == f"{fleet.ns}/bob"} == {"warn"}, checks

    out = fleet.plugin("resume", "-n", fleet.ns, "--all", "--yes").stdout
    assert "sipaccount/bob resumed" in out and "sipaccount/alice unchanged" in out
    assert keys.ANNOTATION_PAUSED not in (fleet.accs.get("bob")["metadata"].get("annotations") or {})
    fleet.accs.wait_condition("bob", "Ready", timeout=60)


def test_logs_show_only_the_accounts_lines(fleet):
    for name, other in (("alice", "bob"), ("carol", "alice")):
        lines = fleet.json("logs", "-n", fleet.ns, name)
        assert lines, name
        # its own lines, and the supervisor's lines about the worker that hosts it (``accounts`` lists it)
        assert all(doc.get("account") == name or name in (doc.get("accounts") or []) or f"{fleet.ns}/{name}" in str(doc)
                   for doc in lines), lines
        assert any(doc.get("msg") == "account created" for doc in lines), lines
        assert not any(doc.get("account") == other for doc in lines)
    text = fleet.plugin("logs", "-n", fleet.ns, "alice", "--tail", "500").stdout
    assert "account created" in text


def test_logs_follow_shows_new_lines_of_the_account(fleet):
    proc = subprocess.Popen([str(PLUGIN), "--kubeconfig", str(fleet.cluster.kubeconfig), "logs", "-n", fleet.ns,
                             "alice", "-f", "--tail", "0", "-o", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        time.sleep(2)  # the stream is open
        fleet.plugin("repair", "-n", fleet.ns, "alice", "bob")
        wait_for(lambda: any(json.loads(ln).get("msg") == "repair repaired" for ln in list(lines)), timeout=60,
                 message="a new repair line")
        docs = [json.loads(ln) for ln in list(lines)]
        assert all(d.get("account") == "alice" or f"{fleet.ns}/alice" in d.get("msg", "") for d in docs), docs
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    fleet.accs.wait_condition("alice", "Ready", timeout=60)


def test_doctor_ok_then_a_missing_secret_fails_it(fleet):
    res = fleet.plugin("doctor", "-n", fleet.ns)
    print(res.stdout)
    d = fleet.json("doctor", "-n", fleet.ns)
    assert d["ok"] is True
    by = {c["check"]: c for c in d["checks"]}
    assert by["crd"]["status"] == "ok" and "v1alpha1" in by["crd"]["message"]
    assert by["operator"]["status"] == "ok" and fleet.ns in by["operator"]["message"]
    assert by["rbac"]["status"] == "ok", by["rbac"]
    assert by["agent"]["status"] == "ok" and by["account"]["status"] == "ok"

    fleet.accs.create("dave", fleet.accs.spec(fleet.lab, "dave", "no-such-secret"))
    try:
        fleet.accs.wait_condition("dave", "Ready", status="False", reason="CredentialsMissing", timeout=60)
        fleet.record("missing-secret")
        res = fleet.plugin("doctor", "-n", fleet.ns, check_rc=1)
        print(res.stdout)
        assert f"{fleet.ns}/dave" in res.stdout and "CredentialsMissing" in res.stdout
        assert "problem" in res.stdout.splitlines()[-1]
    finally:
        fleet.accs.delete("dave")


def test_an_unschedulable_agent_pod_shows_with_the_schedulers_message(fleet):
    """carol's agent pod asks for a node that does not exist: status lists it with the scheduler's message, doctor
    fails; put back, carol is Ready again."""
    apps = fleet.accs.apps
    agent = fleet.accs.get("carol")["status"]["agent"]["name"]
    apps.patch_namespaced_deployment(agent, fleet.ns, {"spec": {"template": {"spec": {
        "nodeSelector": {"sipfleet.io/test-nowhere": "true"}}}}})
    try:
        s = wait_for(lambda: (lambda s: s if s["unschedulable"] else None)(fleet.json("status", "-n", fleet.ns)),
                     timeout=120, interval=2, message="an unschedulable agent pod")
        (u,) = s["unschedulable"]
        assert u["agent"] == agent and "node affinity/selector" in u["message"], u
        text = fleet.plugin("status", "-n", fleet.ns).stdout
        assert "UNSCHEDULABLE AGENT PODS (1)" in text and "node affinity/selector" in text
        res = fleet.plugin("doctor", "-n", fleet.ns, check_rc=1)
        assert "unschedulable: 0/1 nodes are available" in res.stdout, res.stdout
    finally:
        apps.patch_namespaced_deployment(agent, fleet.ns, {"spec": {"template": {"spec": {"nodeSelector": None}}}})
    fleet.accs.wait_condition("carol", "Ready", timeout=180)
    assert fleet.json("status", "-n", fleet.ns)["unschedulable"] == []
