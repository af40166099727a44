"""An operator restart under a fleet with every placement kind (issue 8: a dedicated account next to shared ones
with the same route made every restart crash-loop).

Two namespaces; shared accounts, a dedicated one next to them with the same transport, route and mode, an
account-mode one, and one on a second route (TCP): the shared ones in one agent pod, a worker each per transport,
route and mode (needs the agent of issue 10). After a graceful restart (what `helm upgrade` or a drain
does) the operator reconciles creates, changes and deletes; no agent is duplicated, no pod restarted, and no
untouched account sends a REGISTER (checked at R's wire log).
"""

from __future__ import annotations

import time
import uuid

import pytest

from sipfleet.localenv.waiting import wait_for
from tests.fixtures.operator import SipAccounts

pytestmark = [pytest.mark.cluster, pytest.mark.lab, pytest.mark.slow]

LONG = {"expiresSeconds": 3600, "retryIntervalSeconds": 5, "firstRetryIntervalSeconds": 1, "jitterSeconds": 1}


def _agents(accs: SipAccounts) -> dict[str, list[str]]:
    """agent -> its accounts; every account in exactly one agent, agents and Deployments one to one."""
    out: dict[str, list[str]] = {}
    seen: set[str] = set()
    for agent, assignment in accs.agent_configmaps().items():
        names = [a["name"] for a in assignment["accounts"]]
        assert not set(names) & seen, f"{set(names) & seen} in two agents"
        seen |= set(names)
        out[agent] = sorted(names)
    assert sorted(d.metadata.name for d in accs.agent_deployments()) == sorted(out)
    return out


def _live_pods(accs: SipAccounts) -> dict[str, str]:
    return {p.metadata.name: p.metadata.uid for p in accs.agent_pods() if not p.metadata.deletion_timestamp}


def test_every_placement_kind_survives_a_restart(operator, sipacc, k8s, cluster, lab, lab_user):
    ns2 = f"{sipacc.ns[:50]}-b{uuid.uuid4().hex[:3]}"
    sipacc.core.create_namespace({"metadata": {"name": ns2, "labels": {"sipfleet.io/test": "operator"}}})
    other = SipAccounts(k8s, cluster, ns2)
    users: dict[str, str] = {}

    def add(accs: SipAccounts, name: str, **spec) -> None:
        user, password = lab_user(name[:4])
        users[name] = user
        accs.secret(f"{name}-sip", user, password)
        # an hour's registration: no refresh can fall into the test and pass for a re-REGISTER
        accs.create(name, accs.spec(lab, user, f"{name}-sip", **{"registration": LONG, **spec}))

    tcp = {"transport": "tcp", "route": [lab.proxy_uri("tcp")]}
    try:
        add(sipacc, "alice")
        add(sipacc, "bob")
        add(sipacc, "carol", agent={"dedicated": True})
        add(sipacc, "dave", routeMode="account")
        add(sipacc, "erin", **tcp)
        add(other, "frank")
        add(other, "gina", agent={"dedicated": True})
        for accs, names in ((sipacc, ["alice", "bob", "carol", "dave", "erin"]), (other, ["frank", "gina"])):
            for n in names:
                accs.wait_condition(n, "Ready", timeout=180)
        before = {sipacc.ns: _agents(sipacc), ns2: _agents(other)}
        # alice, bob, dave and erin share one agent pod (three workers), carol has one alone; frank, gina
        assert len(before[sipacc.ns]) == 2 and len(before[ns2]) == 2
        for accs in (sipacc, other):
            wait_for(lambda: len(_live_pods(accs)) == len(before[accs.ns]), timeout=60, message="one pod per agent")
        pods = {sipacc.ns: _live_pods(sipacc), ns2: _live_pods(other)}

        t0 = time.time()
        operator.stop()  # SIGTERM, as a rolling update or a drain does
        operator.start()
        assert operator.alive()

        # create, change, delete after the restart
        add(sipacc, "hank")  # joins alice and bob (their worker: the pod's size class stays)
        body = sipacc.get("dave")
        sipacc.custom.patch_namespaced_custom_object(
            "sipfleet.io", "v1alpha1", sipacc.ns, "sipaccounts", "dave",
            {"spec": {"registration": {**body["spec"]["registration"], "expiresSeconds": 1800}}})
        other.delete("frank")

        sipacc.wait_condition("hank", "Ready", timeout=120)
        def dave_reconciled() -> bool:
            d = sipacc.get("dave")
            return d["status"].get("observedGeneration") == d["metadata"]["generation"] and sipacc.has_condition(
                "dave", "Registered")

        wait_for(dave_reconciled, timeout=120, message="dave's change reconciled")
        wait_for(lambda: not other.exists("frank"), timeout=120, message="frank deleted")
        wait_for(lambda: not lab.contacts(users["frank"]), timeout=60, message="frank unregistered at R")

        after = {sipacc.ns: _agents(sipacc), ns2: _agents(other)}
        shared = next(a for a, names in before[sipacc.ns].items() if names == ["alice", "bob", "dave", "erin"])
        assert after[sipacc.ns] == {**before[sipacc.ns], shared: ["alice", "bob", "dave", "erin", "hank"]}
        frank_agent = next(a for a, names in before[ns2].items() if names == ["frank"])
        assert after[ns2] == {a: n for a, n in before[ns2].items() if a != frank_agent}
        assert _live_pods(sipacc) == pods[sipacc.ns]  # no agent pod restarted, none added
        want = {n: u for n, u in pods[ns2].items() if not n.startswith(frank_agent)}
        wait_for(lambda: _live_pods(other) == want, timeout=60, message="frank's agent pod gone, gina's untouched")

        # untouched accounts sent nothing: no REGISTER from them reached R since the restart
        untouched = {users[n] for n in ("alice", "bob", "carol", "erin", "gina")}
        regs = lab.wire(since=t0, method="REGISTER", node="R")
        resent = sorted({u for u in untouched for r in regs if f":{u}@" in r.from_uri})
        assert not resent, f"re-registered after the restart: {resent}"
        assert any(f":{users['dave']}@" in r.from_uri for r in regs), "dave's change reached the wire"
        for n in ("alice", "bob", "carol", "dave", "erin", "hank"):
            assert sipacc.has_condition(n, "Ready"), n
        assert other.has_condition("gina", "Ready")
    finally:
        try:
            sipacc.core.delete_namespace(ns2, propagation_policy="Background")
        except Exception:  # noqa: BLE001 - cleanup only
            pass
