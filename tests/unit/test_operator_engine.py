"""The operator's engine on its own logic, with an in-memory API (tests/fixtures/memapi.py) and plain dicts in
place of kopf's indexes: what it writes, and when.

* nothing changed, nothing written: a second reconcile of an unchanged account, a refresh of an unchanged status,
  a pod event that changes nothing the status says;
* one status write per real transition (placed, pod Ready, registered; an agent's start is not one), at most
  three from create to Ready;
* an agent's children in one pass: each child at most once per reconcile, and many accounts joining one agent
  at once share passes instead of costing one each;
* the ladder wakes an account at its own ``wake_at`` (no scan), and a Secret arriving places the account
  that waited for it;
* a namespace being deleted is forgotten once: the watch events still in flight for its accounts write nothing,
  and a namespace of that name created again is served.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone

import pytest

from sipfleet.api import models as m
from sipfleet_operator import builders as b
from sipfleet_operator import conditions as cond
from sipfleet_operator.config import Settings
from sipfleet_operator.engine import Engine
from sipfleet_operator.wakeups import Wakeups
from tests.fixtures.memapi import MemoryApi

NS = "ns-e"
T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
CHILDREN = ("ConfigMap", "ServiceAccount", "Role", "RoleBinding", "Deployment")


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> datetime:
        return self.t


def account(name: str, secret: str = "creds", **drift) -> dict:
    spec = {"aor": f"sip:{name}@lab.test", "registrar": "sip:10.213.201.2", "route": ["sip:10.213.201.1;lr"],
            "credentials": {"secretName": secret}}
    if drift:
        spec["drift"] = drift
    return {"apiVersion": m.API_VERSION, "kind": "SipAccount", "metadata": {"name": name, "namespace": NS},
            "spec": spec}


SECRET = {"kind": "Secret", "metadata": {"name": "creds", "namespace": NS},
          "data": {"username": "dQ==", "password": "cA=="}}


class Fixture:
    #: the first Deployment of a new agent is not deferred here (test_a_new_agents_pod_is_not_replaced_... is)
    SETTINGS = {"first_deploy_settle_seconds": 0.0}

    def __init__(self, *names: str, settings: dict | None = None, **drift) -> None:
        self.api = MemoryApi()
        self.api.put(SECRET)
        for n in names:
            self.api.put(account(n, **drift))
        self.pods: dict[str, list[cond.PodState]] = {}
        self.by_secret: dict[tuple[str, str], list[str]] = {(NS, "creds"): list(names)}
        self.clock = Clock()
        self.eng = Engine(Settings(namespaces=(NS,), metrics_port=0, liveness_endpoint=None,
                                   **{**self.SETTINGS, **(settings or {})}), client=self.api,
                          pods=self.pods, accounts_by_secret=self.by_secret, clock=self.clock)

    def body(self, name: str) -> dict:
        return self.api.objects[("SipAccount", NS, name)]

    def agent_of(self, name: str) -> str:
        (agent,) = [cm["metadata"]["name"] for cm in self.api.of_kind("ConfigMap", NS)
                    if name in [a["name"] for a in json.loads(cm["data"][b.ASSIGNMENT_KEY])["accounts"]]]
        return agent

    def writes(self, verb: str | None = None, kind: str | None = None) -> list:
        return [w for w in self.api.writes if (verb is None or w[0] == verb) and (kind is None or w[1] == kind)]

    def status_writes(self) -> list:
        return self.writes("patch/status", "SipAccount")

    def condition(self, name: str, type_: str) -> tuple[str, str]:
        c = next(c for c in self.body(name)["status"]["conditions"] if c["type"] == type_)
        return c["status"], c["reason"]

    async def agent_writes_status(self, name: str, status: dict) -> None:
        """What the agent does: a merge patch of its own status fields; kopf's watch brings it to the engine."""
        fresh = await self.api.merge_patch("SipAccount", NS, name, {"status": status}, sub="status")
        self.api.writes.pop()  # the agent's write, not the operator's
        self.eng.remember(fresh)
        await self.eng.refresh_status(NS, name)


def pod(name: str, ready: bool, started: str = "2026-01-01T11:59:00Z") -> cond.PodState:
    return cond.PodState(name=name, phase="Running" if ready else "Pending", ready=ready, started_at=started,
                         ever_ready=ready)


def run(coro):
    return asyncio.run(coro)


def test_a_second_reconcile_of_an_unchanged_account_writes_nothing():
    async def go():
        f = Fixture("alice")
        await f.eng.load()
        await f.eng.reconcile_account(f.body("alice"))
        assert [w[1] for w in f.writes("apply")] == ["Role", "ConfigMap", "ServiceAccount", "RoleBinding",
                                                     "Deployment"]  # Role first: an account joins
        assert len(f.status_writes()) == 1
        f.api.writes.clear()
        await f.eng.reconcile_account(f.body("alice"))
        await f.eng.refresh_status(NS, "alice")
        await f.eng.on_secret("MODIFIED", f.api.objects[("Secret", NS, "creds")])  # same verdict: nothing to do
        assert f.api.writes == []
        await f.eng.stop()

    run(go())


def test_one_status_write_per_real_transition():
    async def go():
        f = Fixture("alice")
        await f.eng.load()
        await f.eng.reconcile_account(f.body("alice"))  # 1: placed, no pod yet
        agent = f.agent_of("alice")
        assert f.condition("alice", "Ready")[0] == "False"
        assert f.condition("alice", "AgentReady") == ("False", "AgentPending")
        f.pods[agent] = [pod(f"{agent}-x", ready=False)]
        await f.eng.on_pod(agent)  # the pod starts: still the agent starting, not a transition of the account
        assert f.condition("alice", "AgentReady") == ("False", "AgentPending")
        await f.eng.on_pod(agent)  # the same pod again: nothing
        assert len(f.status_writes()) == 1
        f.pods[agent] = [pod(f"{agent}-x", ready=True)]
        await f.eng.on_pod(agent)  # 2: Ready
        assert f.condition("alice", "AgentReady")[0] == "True"
        assert len(f.status_writes()) == 2
        await f.agent_writes_status("alice", {
            "registration": {"state": "Registered", "code": 200},
            "route": {"mode": "prevent", "inSync": True, "desired": ["sip:10.213.201.1;lr"],
                      "effective": ["sip:10.213.201.1;lr"]},
        })  # 3: registered
        assert f.condition("alice", "Registered")[0] == "True" and f.condition("alice", "Ready")[0] == "True"
        assert len(f.status_writes()) == 3
        f.clock.t += timedelta(minutes=5)  # time alone changes nothing the status says
        await f.eng.refresh_status(NS, "alice")
        await f.eng.reconcile_account(f.body("alice"))
        assert len(f.status_writes()) == 3
        assert len(f.writes("apply")) == 5  # the children were written by the first reconcile only
        await f.eng.stop()

    run(go())


REGISTERED = {"registration": {"state": "Registered", "code": 200},
              "route": {"mode": "prevent", "inSync": True, "desired": ["sip:10.213.201.1;lr"],
                        "effective": ["sip:10.213.201.1;lr"]}}


@pytest.mark.parametrize("order", ["registers-before-pod-ready", "pod-ready-before-the-agent-reports"])
def test_create_to_ready_costs_at_most_three_status_writes(order):
    """The whole way from a new SipAccount to Ready as the cluster plays it (the pod unscheduled, scheduled,
    running, then Ready; the agent reporting before or after its readiness probe passes): the operator writes the
    account's status at most three times. (The agent holds back its first "Registering" until the REGISTER is
    answered or a moment has passed - test_agent_status.py - so after a Ready pod its first report is the
    answer; one that comes while the pod starts costs nothing.)"""
    async def go():
        f = Fixture("alice")
        await f.eng.load()
        await f.eng.reconcile_account(f.body("alice"))
        agent = f.agent_of("alice")
        name = f"{agent}-7c9f-x2"
        ref = {"agent": {"name": agent, "pod": name}}

        async def pod_is(**kw) -> None:
            f.pods[agent] = [cond.PodState(name=name, started_at="2026-01-01T12:00:01Z", **kw)]
            await f.eng.on_pod(agent)

        await pod_is(phase="Pending", unschedulable=None)
        await pod_is(phase="Pending")  # scheduled, pulling, containers created
        await pod_is(phase="Running")  # running, readiness probe not passed yet
        if order == "registers-before-pod-ready":
            await f.agent_writes_status("alice", {"registration": {"state": "Registering"}, **ref})
            await f.agent_writes_status("alice", {**REGISTERED, **ref})
            await pod_is(phase="Running", ready=True, ever_ready=True)
        else:
            await pod_is(phase="Running", ready=True, ever_ready=True)
            await f.agent_writes_status("alice", {**REGISTERED, **ref})
        assert f.condition("alice", "Ready") == ("True", "Ready")
        writes = len(f.status_writes())
        assert writes <= 3, f"{writes} status writes from create to Ready"
        await f.eng.stop()

    run(go())


def test_each_child_once_per_reconcile_and_only_for_the_agent_it_touches():
    async def go():
        f = Fixture("alice", "bob")
        f.api.put({**account("carol"), "spec": {**account("carol")["spec"], "agent": {"dedicated": True}}})
        f.by_secret[(NS, "creds")].append("carol")
        await f.eng.load()
        for n in ("alice", "bob", "carol"):
            before = len(f.api.writes)
            await f.eng.reconcile_account(f.body(n))
            applied = [w for w in f.api.writes[before:] if w[0] == "apply"]
            assert {w[1] for w in applied} <= set(CHILDREN) and len({w[3] for w in applied}) == 1  # one agent
            assert len({w[1] for w in applied}) == len(applied)  # no child twice
        assert f.agent_of("alice") == f.agent_of("bob") != f.agent_of("carol")
        # carol's own agent was written by her reconcile only
        assert {w[3] for w in f.writes("apply")} == {f.agent_of("alice"), f.agent_of("carol")}
        assert [w[1] for w in f.writes("apply") if w[3] == f.agent_of("carol")] == ["Role", *CHILDREN[:2],
                                                                                     *CHILDREN[3:]]
        await f.eng.stop()

    run(go())


def test_accounts_joining_one_agent_at_once_share_its_passes(monkeypatch):
    from sipfleet_operator import children

    passes: list[str] = []
    build = b.build_children

    def counting(agent, *args, **kwargs):
        passes.append(agent.name)
        return build(agent, *args, **kwargs)

    monkeypatch.setattr(children.b, "build_children", counting)

    async def go():
        names = [f"a{i}" for i in range(12)]
        f = Fixture(*names)
        await f.eng.load()
        f.api.latency = 0.002  # real round trips: the reconciles interleave
        await asyncio.gather(*(f.eng.reconcile_account(f.body(n)) for n in names))
        agents = {f.agent_of(n) for n in names}
        assert len(agents) == 1
        (agent,) = agents
        hosted = [a["name"] for a in json.loads(f.api.objects[("ConfigMap", NS, agent)]["data"][b.ASSIGNMENT_KEY])
                  ["accounts"]]
        assert sorted(hosted) == sorted(names)
        config_writes = [w for w in f.writes("apply", "ConfigMap") if w[3] == agent]
        assert 1 <= len(config_writes) <= 2, config_writes  # the first pass, then one shared by all the others
        assert 1 <= len(passes) <= 2, passes  # not one pass per account
        assert len(f.status_writes()) == len(names)
        await f.eng.stop()

    run(go())


def test_a_new_agents_pod_is_not_replaced_while_a_bulk_create_fills_it():
    """Accounts joining a new agent one after the other: its Deployment is created once, sized for all of them,
    after they stopped coming (not at the first account and again at the 17th, which would replace its pod)."""
    async def go():
        names = [f"a{i:02d}" for i in range(20)]
        f = Fixture(*names, settings={"first_deploy_settle_seconds": 0.3, "first_deploy_wait_seconds": 30})
        await f.eng.load()
        for n in names:
            await f.eng.reconcile_account(f.body(n))
        agent = f.agent_of("a00")
        assert {f.agent_of(n) for n in names} == {agent}
        assert f.writes("apply", "Deployment") == []  # still joining: no pod yet
        assert {w[1] for w in f.writes("apply")} == {"Role", "ConfigMap", "ServiceAccount", "RoleBinding"}
        for _ in range(100):  # the deferred pass comes once they stopped joining
            await asyncio.sleep(0.05)
            if f.writes("apply", "Deployment"):
                break
        await asyncio.sleep(0.1)
        assert f.writes("apply", "Deployment") == [("apply", "Deployment", NS, agent)]
        dep = f.api.objects[("Deployment", NS, agent)]
        assert dep["metadata"]["annotations"][b.ANNOTATION_SIZE] == "4"  # 20 accounts: 3 workers, class 4
        await f.eng.stop()

    run(go())


def test_a_full_new_agent_gets_its_deployment_at_once():
    async def go():
        names = ["a0", "a1", "a2"]
        f = Fixture(*names, settings={"first_deploy_settle_seconds": 30, "accounts_per_agent": 3})
        await f.eng.load()
        for n in names[:2]:
            await f.eng.reconcile_account(f.body(n))
        assert f.writes("apply", "Deployment") == []
        await f.eng.reconcile_account(f.body("a2"))  # full: nothing more can join it
        assert [w[3] for w in f.writes("apply", "Deployment")] == [f.agent_of("a0")]
        await f.eng.stop()

    run(go())


def test_the_ladder_wakes_an_account_at_its_own_time():
    async def go():
        f = Fixture("alice", repairTimeoutSeconds=10, maxPodRestarts=1, selfHeal=False)
        await f.eng.load()
        await f.eng.reconcile_account(f.body("alice"))
        agent = f.agent_of("alice")
        f.pods[agent] = [pod(f"{agent}-x", ready=True, started="2026-01-01T11:00:00Z")]
        await f.eng.on_pod(agent)
        assert f.eng.wakeups.get((NS, "alice")) is None  # in sync: nothing to wake for
        f.api.writes.clear()
        await f.agent_writes_status("alice", {"route": {"mode": "prevent", "inSync": False,
                                                            "lastDriftAt": cond.rfc3339_ms(T0)}})
        assert f.body("alice")["status"]["ladder"]["phase"] == "RepairRequested"
        assert f.eng.wakeups.get((NS, "alice")) == T0 + timedelta(seconds=10)
        configs = len(f.writes("apply", "ConfigMap"))
        assert configs == 1  # the repair token went to the agent
        token = f.body("alice")["status"]["ladder"]["token"]
        cm = f.api.objects[("ConfigMap", NS, agent)]
        assert json.loads(cm["data"][b.ASSIGNMENT_KEY])["accounts"][0]["repairToken"].endswith(token)
        # the watch event of the token's own write is no change to reconcile (no Secret read, no second pass) ...
        assert not f.eng.needs_reconcile(f.body("alice"))
        # ... but a spec change that came with it is
        changed = f.body("alice")
        assert f.eng.needs_reconcile({**changed, "spec": {**changed["spec"], "expires": 120}})
        f.clock.t = T0 + timedelta(seconds=9)
        await f.eng.background.wake_due()  # not due yet
        assert f.writes("delete", "Pod") == []
        f.clock.t = T0 + timedelta(seconds=10, milliseconds=5)
        await f.eng.background.wake_due()
        assert f.writes("delete", "Pod") == [("delete", "Pod", NS, f"{agent}-x")]
        assert f.body("alice")["status"]["ladder"]["phase"] == "PodRestarted"
        assert f.eng.wakeups.get((NS, "alice")) > f.clock.t  # and the next look is scheduled
        await f.eng.stop()

    run(go())


def test_an_account_waiting_for_its_secret_is_placed_when_it_arrives():
    async def go():
        f = Fixture()
        f.api.objects.pop(("Secret", NS, "creds"))
        f.api.put(account("alice"))
        f.by_secret[(NS, "creds")] = ["alice"]
        await f.eng.load()
        await f.eng.reconcile_account(f.body("alice"))
        assert f.writes("apply") == [] and f.condition("alice", "Ready")[0] == "False"
        secret = f.api.put(SECRET)
        await f.eng.on_secret("ADDED", secret)
        assert f.agent_of("alice") and {w[1] for w in f.writes("apply")} == set(CHILDREN)
        await f.eng.stop()

    run(go())


def test_wakeups():
    async def go():
        w = Wakeups()
        assert w.next_at() is None and w.due(T0) == []
        w.schedule("a", T0 + timedelta(seconds=5))
        w.schedule("b", T0 + timedelta(seconds=1))
        w.schedule("c", T0 + timedelta(seconds=9))
        w.schedule("c", None)
        assert w.next_at() == T0 + timedelta(seconds=1) and len(w) == 2
        assert w.due(T0 + timedelta(seconds=5)) == ["b", "a"] and len(w) == 0
        # an earlier wake-up cuts a long wait short
        w.schedule("late", T0 + timedelta(hours=1))
        loop = asyncio.get_running_loop()
        started = loop.time()
        waiting = asyncio.create_task(w.wait(T0, longest=30))
        await asyncio.sleep(0)
        w.schedule("soon", T0)
        await asyncio.wait_for(waiting, 5)
        assert loop.time() - started < 5

    run(go())


def test_a_wake_up_that_fails_is_tried_again_and_holds_up_no_other():
    async def go():
        from sipfleet_operator.k8s import ApiError

        f = Fixture("alice", "bob", repairTimeoutSeconds=10, selfHeal=False)
        await f.eng.load()
        for n in ("alice", "bob"):
            await f.eng.reconcile_account(f.body(n))
            await f.agent_writes_status(n, {"route": {"mode": "prevent", "inSync": False}})
        assert {f.eng.wakeups.get((NS, n)) for n in ("alice", "bob")} == {T0 + timedelta(seconds=10)}

        failures = {"left": 1}

        def fail(verb, kind, ns):  # the first status patch (alice's: she is due first) fails
            if verb == "patch" and kind == "SipAccount" and failures["left"]:
                failures["left"] -= 1
                raise ApiError(500, {"message": "apiserver away"}, "PATCH")

        f.clock.t = T0 + timedelta(seconds=11)
        before = len(f.status_writes())
        f.api.fail = fail
        await f.eng.background.wake_due()  # alice (first) fails, bob is still refreshed
        assert len(f.status_writes()) == before + 1 and f.status_writes()[-1][3] == "bob"
        assert f.eng.wakeups.get((NS, "alice")) == f.clock.t + timedelta(seconds=5)
        await f.eng.stop()

    run(go())


def test_an_annotation_reaches_the_agent_once_and_a_paused_account_keeps_what_its_agent_has():
    async def go():
        f = Fixture("alice")
        await f.eng.load()
        await f.eng.reconcile_account(f.body("alice"))
        agent = f.agent_of("alice")

        def assignment() -> dict:
            cm = f.api.objects[("ConfigMap", NS, agent)]
            (a,) = json.loads(cm["data"][b.ASSIGNMENT_KEY])["accounts"]
            return a

        def annotate(**ann) -> dict:
            body = f.api.put({**f.body("alice"), "metadata": {**f.body("alice")["metadata"], "annotations": ann}})
            f.eng.remember(body)
            return body

        body = annotate(**{b.ANNOTATION_REREGISTER: "1"})
        assert f.eng.needs_reconcile(body)
        f.api.writes.clear()
        await f.eng.reconcile_account(body)
        assert [w[1] for w in f.writes("apply")] == ["ConfigMap"] and assignment()["reregisterToken"] == "user:1"
        assert not f.eng.needs_reconcile(f.body("alice"))  # the watch event of our own writes: nothing to do
        # paused: a new token is not handed on, the agent keeps what it has
        body = annotate(**{b.ANNOTATION_REREGISTER: "2", b.ANNOTATION_PAUSED: "true"})
        f.api.writes.clear()
        await f.eng.reconcile_account(body)
        assert f.writes("apply") == [] and assignment()["reregisterToken"] == "user:1"
        assert f.condition("alice", "Ready")[1] == "Paused"
        body = annotate(**{b.ANNOTATION_REREGISTER: "2"})  # un-paused: what changed meanwhile goes through
        assert f.eng.needs_reconcile(body)
        await f.eng.reconcile_account(body)
        assert assignment()["reregisterToken"] == "user:2"
        await f.eng.stop()

    run(go())


def test_the_last_account_leaving_removes_its_agent():
    async def go():
        f = Fixture("alice", "bob")
        await f.eng.load()
        for n in ("alice", "bob"):
            await f.eng.reconcile_account(f.body(n))
        agent = f.agent_of("alice")
        f.api.writes.clear()
        await f.eng.remove_account(f.body("alice"))
        assert {(w[0], w[1]) for w in f.api.writes} <= {("apply", k) for k in CHILDREN}
        await f.eng.remove_account(f.body("bob"))
        assert [w for w in f.api.writes if w[0] == "delete"] == [("delete", k, NS, agent) for k in reversed(CHILDREN)]
        assert agent not in f.eng.state.fleet and not f.api.of_kind("ConfigMap", NS)
        await f.eng.stop()

    run(go())


def test_kopfs_create_handler_after_the_event_handler_does_the_work_once(monkeypatch):
    """kopf runs the event handler (account_event: it reconciles) and then the create/update/resume handler for
    the same version: the second one finds it reconciled and does nothing (no children pass, no Secret read);
    a version the event handler could not reconcile is still reconciled by it (kopf retries that one)."""
    from sipfleet_operator import children, handlers

    passes: list[str] = []
    build = b.build_children
    monkeypatch.setattr(children.b, "build_children", lambda agent, *a, **kw: passes.append(agent.name) or
                        build(agent, *a, **kw))

    class Activation:
        def __init__(self, eng):
            self.eng = eng

        async def engine(self):
            return self.eng

    async def go():
        f = Fixture("alice", "bob")
        await f.eng.load()
        memo = {"activation": Activation(f.eng)}
        reads = []
        get = f.api.get

        async def counting_get(kind, ns, name):
            reads.append(kind)
            return await get(kind, ns, name)

        f.api.get = counting_get
        f.eng.remember(f.body("alice"))
        await f.eng.reconcile_account(f.body("alice"))  # what account_event does
        before = (len(passes), len(reads), len(f.api.writes))
        await handlers.reconcile(body=f.body("alice"), memo=memo)
        assert (len(passes), len(reads), len(f.api.writes)) == before
        await handlers.reconcile(body=f.body("bob"), memo=memo)  # not reconciled yet: the handler does it
        assert f.agent_of("bob") and len(passes) == before[0] + 1
        await f.eng.stop()

    run(go())


def test_the_cached_account_leaves_managed_fields_out():
    f = Fixture("alice")
    body = f.body("alice")
    body["metadata"]["managedFields"] = [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}] * 3
    f.eng.remember(body)
    cached = f.eng.state.body(NS, "alice")
    assert "managedFields" not in cached["metadata"] and cached["metadata"]["name"] == "alice"
    assert cached["spec"] == body["spec"] and "managedFields" in body["metadata"]  # the caller's body untouched


def test_a_namespace_being_deleted_is_forgotten_and_its_late_events_place_nothing():
    from sipfleet_operator import handlers
    from sipfleet_operator.loading import NotLoaded

    async def go():
        f = Fixture("alice", "bob")
        await f.eng.load()
        for n in ("alice", "bob"):
            await f.eng.reconcile_account(f.body(n))
        f.api.put({"kind": "Namespace", "metadata": {"name": NS, "uid": "ns-old",
                                                     "deletionTimestamp": "2026-01-01T12:00:00Z"}})
        await f.eng.background.forget_terminating_namespaces()
        assert not f.eng.state.accounts and not f.eng.state.fleet
        f.api.writes.clear()
        # what kopf still delivers while it stops watching: an agent's status patch, kopf's own retry, the
        # namespace's Secret going away; before the fix the first placed alice on a new agent (5 children)
        class Activation:
            async def engine(self):
                return f.eng

        await handlers.account_event(event={"type": "MODIFIED"}, body=f.body("alice"),
                                     memo={"activation": Activation()})
        assert f.api.writes == [] and not f.eng.state.fleet
        with pytest.raises(NotLoaded):
            await f.eng.reconcile_account(f.body("bob"))
        await f.eng.on_secret("DELETED", SECRET)
        await f.eng.background.forget_terminating_namespaces()
        assert f.api.writes == [] and not f.eng.state.accounts and not f.eng.state.fleet
        # the namespace is gone and created again (a new uid): its accounts are served again
        f.api.put({"kind": "Namespace", "metadata": {"name": NS, "uid": "ns-new"}})
        await f.eng.background.forget_terminating_namespaces()
        await f.eng.reconcile_account(f.body("alice"))
        assert f.agent_of("alice") in f.eng.state.fleet
        await f.eng.stop()

    run(go())


def test_the_register_budget_reaches_every_agent_and_follows_the_fleet_size():
    """SIPFLEET_REGISTER_RATE_LIMIT 8/s: one account gets 8/s; when a second joins, the first agent's assignment
    gets the new share (follow_budget) and the two shares stay within the limit."""
    def shares(f: Fixture) -> dict[str, float]:
        return {a["name"]: a.get("registerRate") for cm in f.api.of_kind("ConfigMap", NS)
                for a in json.loads(cm["data"][b.ASSIGNMENT_KEY])["accounts"]}

    async def go():
        f = Fixture("alice", settings={"register_rate_limit": 8.0, "accounts_per_agent": 1})
        await f.eng.load()
        await f.eng.reconcile_account(f.body("alice"))
        assert shares(f) == {"alice": 8.0}
        f.api.put(account("bob"))
        await f.eng.reconcile_account(f.body("bob"))
        assert shares(f) == {"alice": 8.0, "bob": 4.0}  # alice's agent got no pass yet
        f.api.writes.clear()
        await f.eng.children.follow_budget()
        assert shares(f) == {"alice": 4.0, "bob": 4.0}
        assert [w[1] for w in f.writes("apply")] == ["ConfigMap"]  # only alice's assignment
        f.api.writes.clear()
        await f.eng.children.follow_budget()
        assert f.api.writes == []  # nothing changed: nothing written
        await f.eng.stop()

    run(go())
