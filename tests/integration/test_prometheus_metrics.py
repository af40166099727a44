"""A real Prometheus (built from the pinned module, run on the host by PID, loopback only) scrapes the chart's
operator and its agents during a demo-like run, and every dashboard query and every alert expression is run
against it.

The run: the chart installed in a namespace of its own (namespaced mode, the agents' debug hooks on, a REGISTER
budget of 50/s: its gauges have series), alice
(prevent) and dave (routeMode account, selfHeal off: the operator's ladder repairs) Registered at the real SIP
lab; Prometheus discovers the operator through the endpoints of the chart's metrics Service and the agent pods
through the API (``kubernetes_sd_configs``, as a ServiceMonitor and the chart's PodMonitor would), scrapes every
second and evaluates the chart's own PrometheusRule (rendered by helm, never a copy). Then two faults: mallory,
whose password R does not know (401: an ineffective registration attempt, state 2 = rejected), and a real drift of
dave (``POST /debug/drift``: setRegistration(False)/(True), pjsua follows the Service-Route to E, PJSIP issue 4066)
that the ladder repairs.

Required: every dashboard query returns data (a non-empty vector, not only NaN) except the ones listed in
``NEEDS_FAULT`` with the fault they need; the data part of every alert expression (the expression without its
final threshold) returns data except those in ``NEEDS_FAULT``; SipRouteDrift's full expression becomes non-empty
and Prometheus itself reports the alert firing during the drift; SipAccountRejected's and SipAccountNotRegistered's
expressions hold for mallory (both pending: ``for: 10m``). What every query showed is printed (pytest -s) as a table.
"""

from __future__ import annotations

import contextlib
import json
import urllib.request
import uuid

import pytest

from sipfleet.localenv.prometheus import check
from sipfleet.localenv.prometheus import config as promconfig
from sipfleet.localenv.prometheus import rules as promrules
from sipfleet.localenv.prometheus.server import PrometheusServer, wait_scraped
from sipfleet.localenv.waiting import WaitTimeout, wait_for
from tests.fixtures.chart import namespaced_release
from tests.fixtures.operator import SipAccounts

pytestmark = [pytest.mark.cluster, pytest.mark.lab]

RELEASE = "pm"
OPERATOR_JOB = f"{RELEASE}-sipfleet-metrics"  # the chart's metrics Service: the job SipOperatorDown expects
WINDOW = "10m"  # longer than the run: every rate/increase sees all of it
#: queries that return nothing unless a fault this run does not make happens (panel title or alert -> the fault)
NEEDS_FAULT = {
    ("Calls (agents)", "A"): "an incoming call (sipfleet_agent_calls_total{result} has no series before one)",
    ("Operator: reconcile errors", "A"): "a reconcile error (sipfleet_reconcile_errors_total{where} has no series "
                                         "before one)",
    "SipOperatorErrors": "a reconcile error (as above)",
    ("Agents: TLS connections and failures", "A"): "a transport tls account (sipfleet_agent_tls_connected_accounts"
                                                   "{protocol,cipher} has no series before one connects)",
    ("Agents: TLS connections and failures", "B"): "a failed TLS connection (sipfleet_agent_tls_failures_total"
                                                   "{reason} has no series before one)",
}


@pytest.fixture
def fleet(cluster, k8s, helm_bin, lab, tmp_path):
    with namespaced_release(cluster, k8s, helm_bin, RELEASE, tmp_path, "--set",
                            "extraEnv[0].name=SIPFLEET_AGENT_DEBUG_HOOKS", "--set-string",
                            "extraEnv[0].value=true", "--set", "agent.registerRateLimit=50") as ns:
        yield SipAccounts(k8s, cluster, ns)


def test_dashboard_and_alerts_against_a_real_prometheus(fleet, cluster, helm_bin, lab, tmp_path):
    accs, ns = fleet, fleet.ns
    users = {}
    for name in ("alice", "dave"):
        users[name] = f"pm{name}{uuid.uuid4().hex[:6]}"
        password = uuid.uuid4().hex
        lab.add_user(users[name], password)
        accs.secret(f"{name}-sip", users[name], password)
    accs.create("alice", accs.spec(lab, users["alice"], "alice-sip",
                                   registration={"expiresSeconds": 60, "retryIntervalSeconds": 5,
                                                 "firstRetryIntervalSeconds": 1, "jitterSeconds": 1}))
    accs.create("dave", accs.spec(lab, users["dave"], "dave-sip", routeMode="account",
                                  drift={"selfHeal": False, "repairTimeoutSeconds": 20, "maxPodRestarts": 1}))

    spec = promrules.chart_rules(helm_bin, release=RELEASE, namespace=ns)
    interval = 1.0
    prom = PrometheusServer(tmp_path / "prometheus", die_with_parent=True)
    prom.start(promconfig.build(kubeconfig=cluster.kubeconfig, operator_namespace=ns, agent_namespaces=[ns],
                                release=RELEASE, interval_s=interval), rules=spec)
    try:
        assert prom.host == "127.0.0.1"
        for name in users:
            accs.wait_condition(name, "Ready", timeout=180)
        agent_pods = {accs.get(n)["status"]["agent"]["pod"] for n in users}
        targets = wait_scraped(prom, {OPERATOR_JOB: 1, promconfig.AGENT_JOB: len(agent_pods)}, timeout=90)
        scraped = {t["labels"].get("pod") for t in targets if t["health"] == "up"}
        assert agent_pods <= scraped, (agent_pods, scraped)
        # every target is a pod IP of the cluster (the host reaches them through its link), none elsewhere
        prefix = cluster.node_ip.rsplit(".", 1)[0] + "."
        assert all(t["scrapeUrl"].startswith(f"http://{prefix}") for t in targets), [t["scrapeUrl"] for t in targets]
        wait_for(lambda: prom.query("sipfleet_agent_registration_attempts_total") and
                 prom.query("sipfleet_accounts"), timeout=30, message="first samples of operator and agents")

        # fault 1: a password R does not know
        mallory = f"pmmallory{uuid.uuid4().hex[:6]}"
        lab.add_user(mallory, uuid.uuid4().hex)
        accs.secret("mallory-sip", mallory, "not-" + uuid.uuid4().hex)
        accs.create("mallory", accs.spec(lab, mallory, "mallory-sip"))
        # fault 2: a real drift of dave, repaired by the ladder
        pod = accs.core.read_namespaced_pod(accs.get("dave")["status"]["agent"]["pod"], ns)
        req = urllib.request.Request(f"http://{pod.status.pod_ip}:8080/debug/drift?account=dave", data=b"",
                                     method="POST")
        with urllib.request.urlopen(req, timeout=20) as r:  # noqa: S310 (a pod IP of the local cluster)
            assert json.loads(r.read())["result"] == 1

        drift = next(r for r in promrules.alerts(spec) if r["alert"] == "SipRouteDrift")
        fired = wait_for(lambda: prom.query(drift["expr"]), timeout=60, message="SipRouteDrift expression non-empty")
        assert {r["metric"].get("namespace") for r in fired} == {ns}, fired
        assert {r["metric"].get("pod") for r in fired} == {pod.metadata.name}, fired
        firing = wait_for(lambda: [a for a in prom.alerts() if a["labels"]["alertname"] == "SipRouteDrift"
                                   and a["state"] == "firing"], timeout=30, message="SipRouteDrift firing")
        assert firing[0]["labels"]["pod"] == pod.metadata.name
        wait_for(lambda: [e for e in accs.events("dave") if e.reason == "RouteRepaired"], timeout=90,
                 message="dave repaired by the ladder")
        wait_for(lambda: (accs.get("mallory").get("status") or {}).get("registration", {}).get("state") == "Failed",
                 timeout=60, message="mallory Failed at R")
        rejected = next(r for r in promrules.alerts(spec) if r["alert"] == "SipAccountRejected")
        wait_for(lambda: [x for x in prom.query(rejected["expr"]) if x["metric"].get("account") == "mallory"],
                 timeout=30, message="SipAccountRejected expression non-empty for mallory")
        # the repair's samples: the operator's repair histogram and the agent's re-created REGISTER
        # the operator's account gauges are recomputed every 5 s (background.GAUGE_SECONDS): mallory's Registered
        # condition is False there (not only Unknown while its agent had not reported: that series ends)
        not_registered = next(r for r in promrules.alerts(spec) if r["alert"] == "SipAccountNotRegistered")
        wait_for(lambda: [x for x in prom.query(not_registered["expr"]) if x["metric"].get("status") == "False"],
                 timeout=60, interval=1, message="SipAccountNotRegistered expression non-empty for status False (mallory)")
        # counted by increase(): the counters were exported at 0 before the repair
        wait_for(lambda: prom.query(f"sum(increase(sipfleet_drift_repaired_total[{WINDOW}])) > 0.5")
                 and prom.query(f"sum(increase(sipfleet_agent_repairs_total{{trigger='operator'}}[{WINDOW}])) > 0.5"),
                 timeout=30, message="the ladder's repair counted by the operator and the agent")
        quantile = "histogram_quantile(0.5, sum by (le) (rate({}_bucket[" + WINDOW + "])))"
        wait_for(lambda: all(check.has_data(prom.query(quantile.format(h))) for h in (
            "sipfleet_repair_seconds", "sipfleet_agent_register_request_delay_seconds")),
            timeout=30, message="repair and RRD samples scraped")

        def gaps(rows) -> list:
            return [(r.name, r.ref, r.expr) for r in rows if not check.has_data(r.result)
                    and (r.name, r.ref) not in NEEDS_FAULT and r.name not in NEEDS_FAULT]

        # a series born with a fault needs its second scrape before rate() has a value: data within seconds
        with contextlib.suppress(WaitTimeout):
            wait_for(lambda: not gaps(check.run_all(prom, spec, rate_interval=WINDOW)), timeout=30, interval=1,
                     message="data for every query")
        rows = check.run_all(prom, spec, rate_interval=WINDOW)

        def states_now() -> dict:
            return {a["labels"]["alertname"]: a["state"] for a in prom.alerts()}

        # an alert whose expression started to hold is pending from Prometheus's next rule evaluation on
        with contextlib.suppress(WaitTimeout):
            wait_for(lambda: all(states_now().get(a) == "pending" for a in ("SipAccountRejected", "SipAccountNotRegistered")),
                     timeout=15, interval=0.5, message="both pending")
        states = states_now()
        print("\n" + "\n".join(check.table(rows, NEEDS_FAULT)))
        print("alerts as Prometheus reports them:", json.dumps(states, sort_keys=True))
        known = {(r.name, r.ref) for r in rows} | {r.name for r in rows}
        assert set(NEEDS_FAULT) <= known, set(NEEDS_FAULT) - known  # no stale excuse
        missing = gaps(rows)
        assert not missing, f"queries without data: {missing}"
        # a query NEEDS_FAULT lists must still be one Prometheus accepts (it ran above without an error)
        assert states.get("SipRouteDrift") == "firing", states
        for pending in ("SipAccountRejected", "SipAccountNotRegistered"):  # for: 10m
            assert states.get(pending) == "pending", states
        assert "SipOperatorDown" not in states, states
    finally:
        prom.stop()
    assert not prom.record
