"""Reading back assignment ConfigMaps: as written, as an older operator wrote them, damaged, and garbage."""

from __future__ import annotations

import copy
import json

from sipfleet.api import models as m
from sipfleet_operator import builders as b
from sipfleet_operator import placement as p
from sipfleet_operator import stored
from sipfleet_operator.config import Settings

P = "sip:127.0.20.1;lr"


def hosted(name: str, ns="ns1", dedicated=False, mode="prevent") -> b.HostedAccount:
    spec = m.SipAccountSpec(aor=f"sip:{name}@example.com", registrar="sip:127.0.20.2", route=[P], route_mode=mode,
                            credentials={"secretName": "creds"}, agent={"dedicated": dedicated})
    return b.HostedAccount(name=name, namespace=ns, uid=f"uid-{name}", generation=1, spec=spec)


def configmap(*accounts: b.HostedAccount) -> tuple[dict, p.Agent]:
    fleet: dict = {}
    for a in accounts:
        fleet = p.place(fleet, p.GroupKey.for_spec(a.namespace, a.name, a.spec), a.name, p.worker_key(a.spec)).fleet
    (agent,) = fleet.values()
    return b.build_configmap(agent, list(accounts), Settings()), agent


def legacy_configmap(*accounts: b.HostedAccount) -> tuple[dict, str]:
    """A ConfigMap as the operator before issue 10 wrote it: one agent per (namespace, transport, route,
    routeMode, dedicated), named after the hash of that key, which the annotation holds."""
    cm, _ = configmap(*accounts)
    spec, ns = accounts[0].spec, accounts[0].namespace
    dedicated = accounts[0].name if spec.agent.dedicated else None
    old_key = {"namespace": ns, "transport": spec.transport, "route": list(spec.route), "routeMode": spec.route_mode,
               "dedicated": dedicated}
    name = f"sipfleet-agent-{p.legacy_key_id(ns, spec.transport, spec.route, spec.route_mode, dedicated)}-0"
    cm["metadata"]["name"] = name
    cm["metadata"]["annotations"][b.ANNOTATION_GROUP_KEY] = json.dumps(old_key, sort_keys=True, separators=(",", ":"))
    doc = json.loads(cm["data"][b.ASSIGNMENT_KEY])
    doc["agent"] = name
    cm["data"][b.ASSIGNMENT_KEY] = json.dumps(doc)
    return cm, name


def test_as_written():
    cm, agent = configmap(hosted("alice"), hosted("bob"))
    assert stored.read_configmap(cm) == stored.StoredAgent("ns1", agent.name, agent.key, ("alice", "bob"),
                                                           shapes=agent.shapes)
    assert len(agent.shapes) == 2


def test_an_older_operators_configmap_reads_as_todays_key_under_its_old_name():
    for accounts in ([hosted("alice"), hosted("bob")], [hosted("carol", dedicated=True)], [hosted("dave", mode="account")]):
        cm, name = legacy_configmap(*accounts)
        got = stored.read_configmap(cm)
        want = p.GroupKey("ns1", "carol" if accounts[0].spec.agent.dedicated else None)
        assert isinstance(got, stored.StoredAgent) and got.recovered is None
        assert (got.name, got.key, got.accounts) == (name, want, tuple(a.name for a in accounts))
        assert dict(got.shapes) == {a.name: p.worker_key(a.spec) for a in accounts}
        # without its annotation, the legacy id in the name is recognised from the assignment
        del cm["metadata"]["annotations"][b.ANNOTATION_GROUP_KEY]
        got = stored.read_configmap(cm)
        assert isinstance(got, stored.StoredAgent), got
        assert (got.name, got.key, got.accounts) == (name, want, tuple(a.name for a in accounts))
        assert "rebuilt from the assignment" in got.recovered


def test_dedicated_key_round_trips():
    cm, agent = configmap(hosted("carol", dedicated=True))
    got = stored.read_configmap(cm)
    assert isinstance(got, stored.StoredAgent) and got.key.dedicated == "carol" and got.key == agent.key


def test_older_key_without_dedicated_is_shared():
    cm, agent = configmap(hosted("alice"))
    key = json.loads(cm["metadata"]["annotations"][b.ANNOTATION_GROUP_KEY])
    del key["dedicated"]
    key["addedLater"] = 1  # unknown fields are ignored
    cm["metadata"]["annotations"][b.ANNOTATION_GROUP_KEY] = json.dumps(key)
    got = stored.read_configmap(cm)
    assert isinstance(got, stored.StoredAgent) and got.key == agent.key and got.recovered is None


def test_missing_annotation_recovers_the_key_from_the_assignment_and_the_name():
    for accounts in ([hosted("alice"), hosted("bob")], [hosted("carol", dedicated=True)], [hosted("dave", mode="account")]):
        cm, agent = configmap(*accounts)
        del cm["metadata"]["annotations"][b.ANNOTATION_GROUP_KEY]
        got = stored.read_configmap(cm)
        assert isinstance(got, stored.StoredAgent), got
        assert got.key == agent.key and got.accounts == agent.accounts
        assert "rebuilt from the assignment" in got.recovered


def test_a_key_that_does_not_hash_to_the_name_is_not_invented():
    cm, _ = configmap(hosted("alice"))
    del cm["metadata"]["annotations"][b.ANNOTATION_GROUP_KEY]
    cm["metadata"]["name"] = "sipfleet-agent-00000000-0"
    got = stored.read_configmap(cm)
    assert isinstance(got, stored.Unreadable) and got.accounts == ("alice",)
    assert "no sipfleet.io/group-key annotation" in got.reason


def test_unparsable_assignment_takes_accounts_from_owner_references():
    cm, agent = configmap(hosted("alice"), hosted("bob"))
    cm["data"][b.ASSIGNMENT_KEY] = "{not json"
    got = stored.read_configmap(cm)
    assert isinstance(got, stored.StoredAgent) and got.accounts == ("alice", "bob") and got.key == agent.key
    assert "ownerReferences" in got.recovered


def test_unreadable_names_every_account_it_can():
    cm, _ = configmap(hosted("alice"), hosted("bob"))
    cm["metadata"]["annotations"][b.ANNOTATION_GROUP_KEY] = "[1, 2]"
    cm["data"][b.ASSIGNMENT_KEY] = json.dumps({"accounts": "alice"})
    got = stored.read_configmap(cm)
    assert isinstance(got, stored.Unreadable)
    assert got.accounts == ("alice", "bob")  # from the ownerReferences
    assert "not a JSON object" in got.reason and "no list of accounts" in got.reason


def test_key_from_another_namespace_is_unreadable():
    cm, _ = configmap(hosted("alice"))
    cm["metadata"]["namespace"] = "elsewhere"
    got = stored.read_configmap(cm)
    assert isinstance(got, stored.Unreadable) and "namespace 'ns1'" in got.reason


def test_garbage_never_raises():
    cm, _ = configmap(hosted("alice"))
    samples = [None, 1, "x", [], {}, {"metadata": None}, {"metadata": {"name": 3, "namespace": "n"}},
               {"metadata": {"name": "a", "namespace": "n", "annotations": "x", "ownerReferences": "y"}, "data": []}]
    for field, values in {
        ("data", b.ASSIGNMENT_KEY): [None, 5, "[]", "null", '{"accounts": [1]}', '{"accounts": [{"name": "Bad_Name"}]}',
                                     '{"accounts": [{"name": null}]}', '{"accounts": null}'],
        ("metadata", "annotations"): [None, [], {b.ANNOTATION_GROUP_KEY: None}, {b.ANNOTATION_GROUP_KEY: "null"},
                                      {b.ANNOTATION_GROUP_KEY: json.dumps({"namespace": "ns1", "transport": "udp",
                                                                           "route": [None], "routeMode": "prevent"})},
                                      {b.ANNOTATION_GROUP_KEY: json.dumps({"namespace": "ns1", "transport": "udp",
                                                                           "route": [P], "routeMode": "prevent",
                                                                           "dedicated": 7})}],
        ("metadata", "ownerReferences"): [None, [None], [{"kind": m.KIND}], [{"kind": m.KIND, "name": ["x"]}]],
    }.items():
        for v in values:
            bad = copy.deepcopy(cm)
            bad[field[0]][field[1]] = v
            samples.append(bad)
    for sample in samples:
        got = stored.read_configmap(sample)
        assert isinstance(got, (stored.StoredAgent, stored.Unreadable))
        if isinstance(got, stored.StoredAgent):
            assert all(stored.account_name_ok(a) for a in got.accounts)
            assert isinstance(got.key.namespace, str) and got.key.dedicated in (None, *got.accounts)
            assert all(isinstance(r, str) for _, (_, route, _) in got.shapes for r in route)
