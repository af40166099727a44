"""Rebuilding the fleet at operator start, over generated fleets (hypothesis).

The fleets are made by the operator's own placement and builders (shared and dedicated agents, two namespaces,
two routes, both route modes), or as the operator before issue 10 left them (one agent per route, its old key in
the annotation and its hash in the name) with accounts placed by today's operator next to them, then damaged the ways a crash or an older operator could leave them: an account
in two agents (a move half done), agents over capacity, empty agents, a key without ``dedicated``, no key
annotation, an unparsable assignment, both. Whatever the input, reading and reconstructing never raises, never
puts an account in two agents, respects capacity and dedication, and loses no account: each one is in the
fleet, displaced (to be placed again) or named by an unreadable ConfigMap.
"""

from __future__ import annotations

import json
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipfleet.api import models as m
from sipfleet_operator import builders as b
from sipfleet_operator import placement as p
from sipfleet_operator import stored
from sipfleet_operator.config import Settings

ROUTES = (["sip:10.213.201.1;lr"], ["sip:10.213.201.9;lr", "sip:10.213.201.1;lr"])
NAMESPACES = ("ns-a", "ns-b")


def spec_for(route: int, mode: str, dedicated: bool) -> m.SipAccountSpec:
    return m.SipAccountSpec(aor="sip:u@example.com", registrar="sip:10.213.201.2", route=ROUTES[route],
                            route_mode=mode, credentials={"secretName": "creds"}, agent={"dedicated": dedicated})


account_st = st.tuples(
    st.sampled_from(NAMESPACES), st.integers(0, 1), st.sampled_from(["prevent", "account"]), st.booleans(),
)
DAMAGE = ("duplicate", "overfill", "empty", "old-key", "no-key", "bad-assignment", "unreadable", "shuffle")


def build(accounts: list[tuple[str, int, str, bool]], removals: list[int]):
    """A fleet as the operator would have made it: place all, remove some; its ConfigMaps; the hosted data."""
    fleet: dict = {}
    hosted: dict[tuple[str, str], b.HostedAccount] = {}
    for i, (ns, route, mode, dedicated) in enumerate(accounts):
        name = f"acc-{i}"
        spec = spec_for(route, mode, dedicated)
        hosted[(ns, name)] = b.HostedAccount(name=name, namespace=ns, uid=f"uid-{i}", generation=1, spec=spec)
        fleet = p.place(fleet, p.GroupKey.for_spec(ns, name, spec), name, p.worker_key(spec)).fleet
    for r in removals:
        if accounts:
            i = r % len(accounts)
            fleet = p.remove(fleet, accounts[i][0], f"acc-{i}").fleet
    cms = [b.build_configmap(a, [hosted[(a.namespace, n)] for n in a.accounts], Settings()) for a in fleet.values()]
    return fleet, cms, hosted


def build_legacy(accounts: list[tuple[str, int, str, bool]], more: list[tuple[str, int, str, bool]]):
    """A fleet as the operator before issue 10 left it - one agent per (namespace, transport, route, routeMode,
    dedicated) of at most 8 accounts, named after that key, which its ConfigMap's annotation holds - then
    ``more`` accounts placed by today's operator after the upgrade (they may join the old agents)."""
    fleet: dict = {}
    hosted: dict[tuple[str, str], b.HostedAccount] = {}
    groups: dict[tuple, list[str]] = {}
    old_keys: dict[str, str] = {}
    for i, (ns, route, mode, dedicated) in enumerate(accounts):
        name = f"acc-{i}"
        spec = spec_for(route, mode, dedicated)
        hosted[(ns, name)] = b.HostedAccount(name=name, namespace=ns, uid=f"uid-{i}", generation=1, spec=spec)
        shape = p.worker_key(spec)
        old = (ns, *shape, name if dedicated else None)
        n = 0
        while True:
            agent = f"sipfleet-agent-{p.legacy_key_id(*old)}-{n}"
            if len(groups.setdefault(agent, [])) < (1 if dedicated else m.MAX_ACCOUNTS_PER_WORKER):
                break
            n += 1
        groups[agent].append(name)
        old_keys[agent] = json.dumps({"namespace": ns, "transport": shape[0], "route": list(shape[1]),
                                      "routeMode": shape[2], "dedicated": old[-1]}, sort_keys=True,
                                     separators=(",", ":"))
        key = p.GroupKey.for_spec(ns, name, spec)
        fleet[agent] = p.Agent(agent, key).with_accounts(groups[agent], {
            a: p.worker_key(hosted[(ns, a)].spec) for a in groups[agent]})
    for j, (ns, route, mode, dedicated) in enumerate(more):
        name = f"new-{j}"
        spec = spec_for(route, mode, dedicated)
        hosted[(ns, name)] = b.HostedAccount(name=name, namespace=ns, uid=f"uid-n{j}", generation=1, spec=spec)
        fleet = p.place(fleet, p.GroupKey.for_spec(ns, name, spec), name, p.worker_key(spec)).fleet
    cms = []
    for a in fleet.values():
        cm = b.build_configmap(a, [hosted[(a.namespace, n)] for n in a.accounts], Settings())
        if a.name in old_keys:
            cm["metadata"]["annotations"][b.ANNOTATION_GROUP_KEY] = old_keys[a.name]
        cms.append(cm)
    return fleet, cms, hosted


def names_in(cm: dict) -> list[str]:
    return [a["name"] for a in json.loads(cm["data"][b.ASSIGNMENT_KEY])["accounts"]]


def set_names(cm: dict, names: list[str], hosted) -> None:
    """Rewrite an assignment as an operator would have (the ownerReferences follow the accounts)."""
    doc = json.loads(cm["data"][b.ASSIGNMENT_KEY])
    ns = cm["metadata"]["namespace"]
    doc["accounts"] = [b.build_agent_account(hosted[(ns, n)]).to_api() for n in names]
    cm["data"][b.ASSIGNMENT_KEY] = json.dumps(doc)
    cm["metadata"]["ownerReferences"] = b.owner_references(hosted[(ns, n)] for n in dict.fromkeys(names))


def recorded(cms: list[dict]) -> set[tuple[str, str]]:
    """Every account a set of ConfigMaps still names, in an assignment or an ownerReference."""
    out = set()
    for cm in cms:
        ns = cm["metadata"]["namespace"]
        out |= {(ns, r["name"]) for r in cm["metadata"].get("ownerReferences", [])}
        try:
            out |= {(ns, n) for n in names_in(cm)}
        except (ValueError, TypeError, KeyError):
            pass
    return out


def damage(cms: list[dict], hosted, kinds: list[str], rng: random.Random) -> list[dict]:
    cms = json.loads(json.dumps(cms))
    for kind in kinds:
        if not cms:
            break
        cm = rng.choice(cms)
        try:
            damage_one(kind, cm, cms, hosted, rng)
        except (ValueError, KeyError, TypeError):
            pass  # an earlier damage left nothing for this one to do
    return cms


def damage_one(kind: str, cm: dict, cms: list[dict], hosted, rng: random.Random) -> None:
    ns = cm["metadata"]["namespace"]
    if kind == "duplicate":  # a move half done: the account also sits in another agent of its namespace
        others = [c for c in cms if c["metadata"]["namespace"] == ns and c is not cm and names_in(c)]
        if others:
            src = rng.choice(others)
            set_names(cm, names_in(cm) + [rng.choice(names_in(src))], hosted)
    elif kind == "overfill":  # more accounts, of more routes, than one agent can run (64 accounts, 8 workers)
        extra = [n for (hns, n) in hosted if hns == ns]
        for k in range(rng.randint(1, 70)):
            name = f"x-{len(hosted)}"
            spec = spec_for(0, "prevent", False).model_copy(update={"route": [f"sip:10.213.202.{rng.randint(1, 12)};lr"]})
            hosted[(ns, name)] = b.HostedAccount(name=name, namespace=ns, uid=f"uid-{name}", generation=1, spec=spec)
            extra.append(name)
        set_names(cm, names_in(cm) + rng.sample(extra, min(len(extra), rng.randint(9, 80))), hosted)
    elif kind == "empty":
        set_names(cm, [], hosted)
    elif kind == "old-key":
        key = json.loads(cm["metadata"]["annotations"][b.ANNOTATION_GROUP_KEY])
        if key.get("dedicated") is None:
            key.pop("dedicated", None)
        cm["metadata"]["annotations"][b.ANNOTATION_GROUP_KEY] = json.dumps(key)
    elif kind == "no-key":
        cm["metadata"]["annotations"].pop(b.ANNOTATION_GROUP_KEY, None)
    elif kind == "bad-assignment":
        cm["data"][b.ASSIGNMENT_KEY] = "{truncated"
    elif kind == "unreadable":
        cm["metadata"]["annotations"][b.ANNOTATION_GROUP_KEY] = "not json"
        cm["data"][b.ASSIGNMENT_KEY] = "[]"
    elif kind == "shuffle":
        rng.shuffle(cms)


def check(rec: p.Reconstruction, results, named_anywhere: set[tuple[str, str]]) -> None:
    seen: dict[tuple[str, str], str] = {}
    for name, agent in rec.fleet.items():
        assert agent.name == name
        assert len(agent.accounts) <= agent.key.capacity
        assert agent.workers <= m.MAX_WORKERS_PER_AGENT
        assert len(set(agent.accounts)) == len(agent.accounts)
        if agent.key.dedicated:
            assert agent.accounts in ((), (agent.key.dedicated,))
        for a in agent.accounts:
            ref = (agent.namespace, a)
            assert ref not in seen, f"{ref} in {name} and {seen[ref]}"
            seen[ref] = name
    assert not (set(seen) & rec.displaced), "an account both placed and displaced"
    named = {(r.namespace, a) for r in results for a in r.accounts}
    assert set(seen) | rec.displaced == {(r.namespace, a) for r in results if isinstance(r, stored.StoredAgent)
                                         for a in r.accounts}
    # nothing lost: every account a ConfigMap still names is placed, displaced, or named by an unreadable one
    for ref in named_anywhere:
        assert ref in seen or ref in rec.displaced or ref in named, f"{ref} lost"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    accounts=st.lists(account_st, max_size=40),
    removals=st.lists(st.integers(0, 1000), max_size=10),
    kinds=st.lists(st.sampled_from(DAMAGE), max_size=6),
    seed=st.integers(0, 2**32 - 1),
    legacy=st.booleans(),
    more=st.lists(account_st, max_size=12),
)
def test_reconstruct_never_raises_loses_or_duplicates(accounts, removals, kinds, seed, legacy, more):
    fleet, cms, hosted = build_legacy(accounts, more) if legacy else build(accounts, removals)
    damaged = damage(cms, hosted, kinds, random.Random(seed))
    results = [stored.read_configmap(cm) for cm in damaged]
    rec = p.reconstruct(r.entry() for r in results if isinstance(r, stored.StoredAgent))
    check(rec, results, recorded(damaged))
    if not kinds or set(kinds) <= {"old-key", "no-key", "shuffle"}:
        # an older key, a lost key annotation or another order change nothing: the same fleet, nothing to fix
        assert all(isinstance(r, stored.StoredAgent) for r in results)
        assert rec.fleet == fleet and not rec.displaced and not rec.dirty
        # and a new account of any route joins without moving anyone
        for i, (ns, route, mode, dedicated) in enumerate(more[:3]):
            spec = spec_for(route, mode, dedicated)
            plan = p.place(rec.fleet, p.GroupKey.for_spec(ns, f"late-{i}", spec), f"late-{i}", p.worker_key(spec))
            assert all(set(a.accounts) <= set(plan.fleet[n].accounts) for n, a in rec.fleet.items())
    # placing the displaced accounts again duplicates nothing
    again = dict(rec.fleet)
    for ns, name in sorted(rec.displaced):
        h = hosted.get((ns, name))
        if h is not None:
            again = p.place(again, p.GroupKey.for_spec(ns, name, h.spec), name, p.worker_key(h.spec)).fleet
    check(p.Reconstruction(fleet=again), results, set())


def test_the_issue_8_fleet_dedicated_next_to_shared_with_the_same_route():
    """carol (dedicated) next to alice and bob (shared), same transport, route and mode: the restart crash."""
    demo = [("demo", 0, "prevent", False), ("demo", 0, "prevent", False), ("demo", 0, "prevent", True),
            ("demo", 0, "account", False)]
    fleet, cms, _ = build(demo, [])
    results = [stored.read_configmap(cm) for cm in cms]
    rec = p.reconstruct(r.entry() for r in results)
    assert rec.fleet == fleet and len(fleet) == 2  # alice, bob and dave share an agent (two workers); carol


def test_the_demo_fleet_of_the_older_operator_reads_back_unchanged():
    """Its three agents (alice+bob, carol, dave) keep their names and accounts: nobody moves or re-registers."""
    demo = [("demo", 0, "prevent", False), ("demo", 0, "prevent", False), ("demo", 0, "prevent", True),
            ("demo", 0, "account", False)]
    fleet, cms, _ = build_legacy(demo, [])
    results = [stored.read_configmap(cm) for cm in cms]
    rec = p.reconstruct(r.entry() for r in results)
    assert rec.fleet == fleet and len(fleet) == 3 and not rec.dirty and not rec.displaced
    assert sorted(len(a.accounts) for a in rec.fleet.values()) == [1, 1, 2]


def test_group_keys_have_no_partial_order_to_trip_on():
    shared = p.GroupKey("ns")
    dedicated = p.GroupKey("ns", dedicated="carol")
    assert sorted([dedicated, shared], key=lambda k: k.sort_key) == [shared, dedicated]
    try:
        sorted([dedicated, shared])
    except TypeError:
        pass  # keys themselves are not orderable: nobody can sort them the broken way again
    else:
        raise AssertionError("GroupKey must not be orderable")
