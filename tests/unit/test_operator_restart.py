"""An operator restart, on the engine's logic with an in-memory API (tests/fixtures/memapi.py).

A first engine places a fleet with every placement kind (shared, dedicated next to shared with the same route,
account mode, two routes, two namespaces); a second engine starts on what the first one wrote. The start never
raises, whatever it reads: a namespace that cannot be listed waits (its accounts get ``NotLoaded``) while the
others are served; a damaged ConfigMap is reported on its accounts, which are placed again.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from sipfleet.api import models as m
from sipfleet_operator import builders as b
from sipfleet_operator.config import Settings
from sipfleet_operator.engine import Engine
from sipfleet_operator.k8s import ApiError
from sipfleet_operator.loading import NotLoaded
from tests.fixtures.memapi import MemoryApi

P1, P2 = "sip:10.213.201.1;lr", "sip:10.213.201.9;lr"
FLEET = {  # name: (namespace, route, mode, dedicated)
    "alice": ("ns-a", P1, "prevent", False),
    "bob": ("ns-a", P1, "prevent", False),
    "carol": ("ns-a", P1, "prevent", True),
    "dave": ("ns-a", P1, "account", False),
    "erin": ("ns-a", P2, "prevent", False),
    "frank": ("ns-b", P1, "prevent", False),
    "gina": ("ns-b", P1, "prevent", True),
}


def settings(**extra) -> Settings:
    return Settings(namespaces=("ns-a", "ns-b"), metrics_port=0, liveness_endpoint=None, **extra)


def account(name: str) -> dict:
    ns, route, mode, dedicated = FLEET[name]
    return {"apiVersion": m.API_VERSION, "kind": "SipAccount", "metadata": {"name": name, "namespace": ns},
            "spec": {"aor": f"sip:{name}@lab.test", "registrar": "sip:10.213.201.2", "route": [route],
                     "routeMode": mode, "credentials": {"secretName": "creds"}, "agent": {"dedicated": dedicated}}}


def populated() -> MemoryApi:
    api = MemoryApi()
    for ns in ("ns-a", "ns-b"):
        api.put({"kind": "Secret", "metadata": {"name": "creds", "namespace": ns},
                 "data": {"username": "dQ==", "password": "cA=="}})
    for name in FLEET:
        api.put(account(name))
    return api


async def first_run(api: MemoryApi, **extra) -> dict[str, list[str]]:
    eng = Engine(settings(**extra), client=api)
    await eng.load()
    for obj in api.of_kind("SipAccount"):
        await eng.reconcile_account(obj)
    await eng.children.follow_budget()  # the shares handed out while the fleet grew, made current
    await eng.stop()
    return assignments(api)


def assignments(api: MemoryApi) -> dict[str, list[str]]:
    return {f"{cm['metadata']['namespace']}/{cm['metadata']['name']}":
            [a["name"] for a in json.loads(cm["data"][b.ASSIGNMENT_KEY])["accounts"]]
            for cm in api.of_kind("ConfigMap")}


async def restart(api: MemoryApi, **extra) -> Engine:
    eng = Engine(settings(**extra), client=api)
    await eng.load()
    for obj in api.of_kind("SipAccount"):
        if eng.loader.is_loaded(obj["metadata"]["namespace"]):
            await eng.reconcile_account(obj)
    return eng


@pytest.mark.parametrize("extra", [{}, {"register_rate_limit": 7.0}], ids=["no-budget", "budget"])
def test_restart_changes_nothing_and_writes_nothing(extra):
    async def go():
        api = populated()
        before = await first_run(api, **extra)
        assert len(before) == 4  # alice+bob+dave+erin (three workers), carol | frank, gina
        if extra:  # 7 accounts of one registrar: 1/s each, in every assignment
            assert {a.get("registerRate") for cm in api.of_kind("ConfigMap")
                    for a in json.loads(cm["data"][b.ASSIGNMENT_KEY])["accounts"]} == {1.0}
        api.writes.clear()
        eng = await restart(api, **extra)
        assert assignments(api) == before
        assert api.writes == [], api.writes  # not one write for an unchanged fleet
        # and the restarted engine places a new account next to the others without a new agent
        api.put({**account("alice"), "metadata": {"name": "hank", "namespace": "ns-a"}})
        await eng.reconcile_account(api.of_kind("SipAccount", "ns-a")[[o["metadata"]["name"] for o in
                                                                     api.of_kind("SipAccount", "ns-a")].index("hank")])
        after = assignments(api)
        assert len(after) == 4 and sorted(a for v in after.values() for a in v) == sorted([*FLEET, "hank"])
        await eng.stop()

    asyncio.run(go())


def test_a_namespace_that_cannot_be_listed_waits_and_the_others_are_served():
    async def go():
        api = populated()
        before = await first_run(api)
        failures = {"n": 2}

        def fail(verb, kind, ns):
            if verb == "list" and kind == "ConfigMap" and ns == "ns-b" and failures["n"] > 0:
                failures["n"] -= 1
                raise ApiError(403, {"message": "configmaps is forbidden"}, "GET configmaps")

        api.fail = fail
        eng = Engine(settings(), client=api)
        await eng.load()  # does not raise
        assert eng.loader.is_loaded("ns-a") and not eng.loader.is_loaded("ns-b")
        assert "403" in eng.loader.pending["ns-b"]
        await eng.reconcile_account(account("alice"))  # served
        with pytest.raises(NotLoaded, match="namespace ns-b.*403"):
            await eng.loader.wait("ns-b", timeout=0.1)
        await eng.loader.wait("ns-b", timeout=10)  # retried in the background (1 s, then 2 s)
        await eng.reconcile_account(account("frank"))
        assert assignments(api) == before
        await eng.stop()

    asyncio.run(go())


def test_a_damaged_configmap_is_reported_and_its_account_placed_again():
    async def go():
        api = populated()
        before = await first_run(api)
        (erin_agent,) = [k for k, v in before.items() if "erin" in v]
        ns, name = erin_agent.split("/")
        cm = api.objects[("ConfigMap", ns, name)]
        cm["metadata"]["annotations"][b.ANNOTATION_GROUP_KEY] = "{broken"
        cm["data"][b.ASSIGNMENT_KEY] = "{broken"
        api.writes.clear()
        eng = await restart(api)  # does not raise
        reasons = sorted((e["involvedObject"]["name"], e["reason"]) for e in api.events)
        assert reasons == [(n, "AssignmentUnreadable") for n in ("alice", "bob", "dave", "erin")]
        assert "could not be read" in api.events[0]["message"] and "group-key" in api.events[0]["message"]
        assert assignments(api) == before  # the same name was re-used: rewritten in place, nothing duplicated
        assert {w[1] for w in api.writes if w[0] == "apply"} <= set(("ConfigMap", "ServiceAccount", "Role",
                                                                    "RoleBinding", "Deployment"))
        assert {w[3] for w in api.writes} == {name}  # only that agent was written
        assert not eng.state.unreadable
        await eng.stop()

    asyncio.run(go())


def test_an_unreadable_agent_whose_account_moved_elsewhere_is_removed():
    async def go():
        api = populated()
        before = await first_run(api)
        (erin_agent,) = [k for k, v in before.items() if "erin" in v]
        ns, name = erin_agent.split("/")
        # a stray copy of erin's agent under another index, unreadable: erin is placed on the real one
        stray = json.loads(json.dumps(api.objects[("ConfigMap", ns, name)]))
        stray["metadata"]["name"] = name[:-1] + "7"
        stray["metadata"]["annotations"][b.ANNOTATION_GROUP_KEY] = "null"
        stray["data"][b.ASSIGNMENT_KEY] = "[]"
        api.put(stray)
        eng = await restart(api)
        assert ("ConfigMap", ns, stray["metadata"]["name"]) not in api.objects
        assert ("delete", "Deployment", ns, stray["metadata"]["name"]) in api.writes
        assert assignments(api) == before
        await eng.stop()

    asyncio.run(go())


def legacy_fleet(api: MemoryApi) -> dict[str, list[str]]:
    """The fleet as the operator before issue 10 left it: one agent per (namespace, transport, route, routeMode,
    dedicated), named after that key's hash, the key in the ConfigMap's annotation; children as the builders
    make them (so a rewrite would show as a write)."""
    from sipfleet_operator import placement as p

    settings_ = settings()
    groups: dict[str, list[str]] = {}
    olds: dict[str, str] = {}
    specs = {}
    for name, (ns, route, mode, dedicated) in FLEET.items():
        spec = m.SipAccountSpec.model_validate(account(name)["spec"])
        specs[name] = spec
        old = (ns, spec.transport, spec.route, mode, name if dedicated else None)
        agent = f"sipfleet-agent-{p.legacy_key_id(*old)}-0"
        groups.setdefault(agent, []).append(name)
        olds[agent] = json.dumps({"namespace": ns, "transport": spec.transport, "route": list(spec.route),
                                  "routeMode": mode, "dedicated": old[-1]}, sort_keys=True, separators=(",", ":"))
    for agent_name, names in groups.items():
        ns = FLEET[names[0]][0]
        key = p.GroupKey.for_spec(ns, names[0], specs[names[0]])
        agent = p.Agent(agent_name, key).with_accounts(names, {n: p.worker_key(specs[n]) for n in names})
        hosted = [b.HostedAccount(n, ns, f"uid-{n}", 1, specs[n], secret_version=api.objects[("Secret", ns, "creds")]
                                  ["metadata"]["resourceVersion"]) for n in names]
        for child in b.build_children(agent, hosted, settings_):
            from sipfleet_operator.observed import digest as _digest
            child["metadata"].setdefault("annotations", {})[b.ANNOTATION_APPLIED] = _digest(child)
            if child["kind"] == "ConfigMap":
                child["metadata"]["annotations"][b.ANNOTATION_GROUP_KEY] = olds[agent_name]
            api.put(child)
    return assignments(api)


def test_restart_over_an_older_operators_fleet_moves_nobody_and_rolls_no_pod():
    async def go():
        api = populated()
        before = legacy_fleet(api)
        assert len(before) == 6  # alice+bob, carol, dave, erin | frank, gina
        api.writes.clear()
        eng = await restart(api)
        assert assignments(api) == before  # same agents, same names, same accounts
        # at most the ConfigMaps' key annotations are rewritten; no Deployment (no pod restarts), no Role
        assert {w[1] for w in api.writes} - {"SipAccount"} <= {"ConfigMap"}, api.writes  # (status: first run)
        for obj in api.of_kind("ConfigMap"):
            assert json.loads(obj["metadata"]["annotations"][b.ANNOTATION_GROUP_KEY]).keys() == {"namespace",
                                                                                               "dedicated"}
        # a new account joins the fullest old agent of its namespace (alice+bob, its worker): one agent written
        api.writes.clear()
        templates = {o["metadata"]["name"]: o["spec"]["template"] for o in api.of_kind("Deployment")}
        api.put({**account("alice"), "metadata": {"name": "ivan", "namespace": "ns-a"}})
        (ivan,) = [o for o in api.of_kind("SipAccount", "ns-a") if o["metadata"]["name"] == "ivan"]
        await eng.reconcile_account(ivan)
        after = assignments(api)
        assert len(after) == 6
        (host,) = [k for k, v in after.items() if "ivan" in v]
        assert after[host] == ["alice", "bob", "ivan"]
        assert {w[3] for w in api.writes if w[0] == "apply"} == {host.split("/")[1]}
        # its Deployment gains an owner, its pod template (resources: the same size class) is unchanged: no roll
        assert {o["metadata"]["name"]: o["spec"]["template"] for o in api.of_kind("Deployment")} == templates
        await eng.stop()

    asyncio.run(go())


def test_the_engine_packs_by_its_accounts_per_agent_setting():
    async def go():
        api = populated()
        for i in range(5):
            api.put({**account("alice"), "metadata": {"name": f"x{i}", "namespace": "ns-b"}})
        eng = Engine(Settings(namespaces=("ns-a", "ns-b"), metrics_port=0, liveness_endpoint=None,
                              accounts_per_agent=2), client=api)
        await eng.load()
        for obj in api.of_kind("SipAccount"):
            await eng.reconcile_account(obj)
        got = assignments(api)
        ns_b = sorted(len(v) for k, v in got.items() if k.startswith("ns-b/"))
        assert ns_b == [1, 2, 2, 2]  # frank and x0..x4 in agents of 2; gina alone
        ns_a = sorted(len(v) for k, v in got.items() if k.startswith("ns-a/"))
        assert ns_a == [1, 2, 2]  # alice, bob, dave, erin in two agents; carol alone
        await eng.stop()

    asyncio.run(go())
