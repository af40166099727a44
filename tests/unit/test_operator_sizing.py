"""Agent pod resources from what the pod hosts: the formula, its classes, and when a class change rolls a pod."""

from __future__ import annotations

import pytest

from sipfleet.api import models as m
from sipfleet_operator import builders as b
from sipfleet_operator import placement as p
from sipfleet_operator import sizing
from sipfleet_operator.config import Settings

R = [("udp", (f"sip:127.0.21.{i};lr",), "prevent") for i in range(9)]


def agent(shapes: list, dedicated: bool = False) -> p.Agent:
    names = [f"a{i:02d}" for i in range(len(shapes))]
    key = p.GroupKey("ns", names[0] if dedicated else None)
    return p.Agent(p.agent_name(key, 0), key).with_accounts(names, dict(zip(names, shapes)))


def test_the_formula_with_the_default_coefficients():
    s = sizing.Sizing()
    # class 2: 16 accounts -> 10 + 4 + 8 = 22m, 48 + 16 + 8 = 72Mi; limits 200 + 100 + 32, 128 + 64 + 16
    assert sizing.resources(2, 64, s) == {"requests": {"cpu": "22m", "memory": "72Mi"},
                                          "limits": {"cpu": "332m", "memory": "208Mi"}}
    # class 8: 64 accounts -> 10 + 16 + 32 = 58m, 48 + 64 + 32 = 144Mi (2.25 MiB per account)
    assert sizing.resources(8, 64, s) == {"requests": {"cpu": "58m", "memory": "144Mi"},
                                          "limits": {"cpu": "728m", "memory": "448Mi"}}
    # accountsPerAgent bounds the accounts term; a dedicated pod hosts one account
    assert sizing.resources(2, 4, s)["requests"] == {"cpu": "16m", "memory": "66Mi"}
    assert sizing.resources(1, 64, s, dedicated=True)["requests"] == {"cpu": "13m", "memory": "57Mi"}


def test_custom_coefficients_and_rounding_up():
    s = sizing.Sizing.from_api({"requests": {"cpu": {"base": 0, "perWorker": 0, "perAccount": 0.1}},
                                "limits": {"memory": {"base": 100, "perWorker": 0, "perAccount": 0}}})
    r = sizing.resources(4, 64, s)
    assert r["requests"]["cpu"] == "4m"  # 32 * 0.1 = 3.2 -> 4
    assert r["limits"]["memory"] == "100Mi"
    assert r["requests"]["memory"] == sizing.resources(4, 64, sizing.Sizing())["requests"]["memory"]  # default kept
    assert sizing.resources(1, 64, sizing.Sizing.from_api({"requests": {"cpu": {"base": 0, "perWorker": 0,
                                                                               "perAccount": 0}}}))["requests"]["cpu"] == "1m"


@pytest.mark.parametrize("bad,where", [
    ({"requests": {"cpu": {"base": -1}}}, "sizing.requests.cpu.base"),
    ({"limits": {"memory": {"perWorker": "8"}}}, "sizing.limits.memory.perWorker"),
    ({"limits": {"memory": {"perAccount": True}}}, "sizing.limits.memory.perAccount"),
    ({"requests": []}, "sizing.requests"),
    ({"requests": {"cpu": 5}}, "sizing.requests.cpu"),
])
def test_bad_coefficients_name_the_entry(bad, where):
    with pytest.raises(ValueError, match=where.replace(".", r"\.")):
        sizing.Sizing.from_api(bad)


def test_size_classes():
    assert [sizing.size_class(w) for w in range(0, 9)] == [2, 2, 2, 4, 4, 8, 8, 8, 8]
    assert sizing.size_class(1, dedicated=True) == 1
    assert sizing.CLASSES[-1] == m.MAX_WORKERS_PER_AGENT


def test_growth_is_applied_and_a_running_pod_is_never_replaced_only_to_shrink():
    assert sizing.choose(4, None, False) == 4  # nothing applied yet
    assert sizing.choose(4, 2, False) == 4  # grows at once
    assert sizing.choose(8, 4, False) == 8
    assert sizing.choose(2, 4, False) == 4  # one class down: kept
    assert sizing.choose(4, 8, False) == 8
    assert sizing.choose(2, 8, False) == 8  # two classes down: kept too (its other accounts stay registered)
    assert sizing.choose(1, 8, False) == 8
    assert sizing.choose(2, 4, True) == 2  # replaced anyway: the right size for free
    assert sizing.choose(2, 8, True) == 2


def test_a_pod_filling_up_with_one_route_crosses_two_classes():
    """One more account must not roll the pod each time: 64 accounts of one route change class twice."""
    settings = Settings()
    current = None
    templates = []
    for n in range(1, 65):
        a = agent([R[0]] * n)
        size = b.size_to_apply(a, settings, current)
        current = _deployment(a, settings, size)
        templates.append(b.template_hash(current["spec"]["template"]))
    changes = [i + 1 for i in range(1, 64) if templates[i] != templates[i - 1]]
    assert changes == [17, 33]


def test_routes_count_as_workers():
    settings = Settings()
    assert b.size_to_apply(agent(R[:1]), settings, None) == 2
    assert b.size_to_apply(agent(R[:2]), settings, None) == 2  # a second route: the spare worker
    assert b.size_to_apply(agent(R[:3]), settings, None) == 4
    assert b.size_to_apply(agent(R[:5]), settings, None) == 8
    assert b.size_to_apply(agent([R[0]], dedicated=True), settings, None) == 1


def test_a_route_change_in_a_small_pod_does_not_roll_it():
    """Some of 8 accounts of one route move to another route: their worker starts next to the old one."""
    settings = Settings()
    before = agent([R[0]] * 8)
    current = _deployment(before, settings, b.size_to_apply(before, settings, None))
    for moved in range(1, 9):
        after = agent([R[1]] * moved + [R[0]] * (8 - moved))
        size = b.size_to_apply(after, settings, current)
        assert b.template_hash(_deployment(after, settings, size)["spec"]["template"]) == \
            current["metadata"]["annotations"][b.ANNOTATION_TEMPLATE_HASH]


def test_accounts_leaving_never_roll_the_pod_of_the_accounts_that_stay():
    settings = Settings()
    big = agent([R[0]] * 40)
    current = _deployment(big, settings, b.size_to_apply(big, settings, None))
    assert current["metadata"]["annotations"][b.ANNOTATION_SIZE] == "8"
    for n in (30, 17, 16, 1):
        a = agent([R[0]] * n)
        size = b.size_to_apply(a, settings, current)
        assert size == 8, n
        assert b.template_hash(_deployment(a, settings, size)["spec"]["template"]) == \
            current["metadata"]["annotations"][b.ANNOTATION_TEMPLATE_HASH], n
    # a template change for another reason (the image) takes the smaller class with it
    moved = Settings(agent_image="sipfleet/agent:0.2.0")
    assert b.size_to_apply(agent([R[0]] * 20), moved, current) == 4


def test_fixed_resources_win_over_sizing():
    s = Settings(agent_resources={"requests": {"memory": "1Gi"}})
    pod = b.build_pod_template(agent([R[0]] * 30), s)
    assert pod["spec"]["containers"][0]["resources"] == {"requests": {"memory": "1Gi"}}


def test_the_deployment_records_its_class():
    a = agent(R[:3])
    d = _deployment(a, Settings(), None)
    assert d["metadata"]["annotations"][b.ANNOTATION_SIZE] == "4"  # 3 workers
    res = d["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert res == sizing.resources(4, 64, sizing.Sizing())


def _deployment(a: p.Agent, settings: Settings, size):
    hosted = [b.HostedAccount(n, "ns", f"uid-{n}", 1, m.SipAccountSpec(
        aor=f"sip:{n}@example.com", registrar="sip:127.0.20.2", route=list(a.shape_map[n][1]),
        credentials={"secretName": "s"})) for n in a.accounts]
    return b.build_deployment(a, hosted, settings, size)


def test_a_new_agents_first_deployment_waits_while_accounts_join():
    from sipfleet_operator.sizing import first_deploy_wait

    # joining: wait until a quiet second has passed, but never longer than 3 s after the first account
    assert first_deploy_wait(10.0, 10.0, 10.0, False, 1.0, 3.0) == 1.0
    assert first_deploy_wait(10.5, 10.0, 10.4, False, 1.0, 3.0) == pytest.approx(0.9)
    assert first_deploy_wait(12.5, 10.0, 12.4, False, 1.0, 3.0) == pytest.approx(0.5)  # the 3 s bound
    assert first_deploy_wait(11.5, 10.0, 10.4, False, 1.0, 3.0) == 0.0  # quiet long enough
    assert first_deploy_wait(10.0, 10.0, 10.0, True, 1.0, 3.0) == 0.0  # full: nothing more can join
