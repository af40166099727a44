"""The address plan (sipfleet.localenv.hostnet.plan): slots to names and addresses, all inside 10.213.0.0/16."""

from __future__ import annotations

import ipaddress

import pytest

from sipfleet.localenv.hostnet import plan


def test_lab_slot_names_and_addresses():
    net = plan.lab_net(1)
    assert net.prefix == "10.213.201" and net.subnet == "10.213.201.0/24"
    assert net.bridge == "sfl1br" and net.bridge_cidr == "10.213.201.254/24"
    assert net.host_cidr(1) == "10.213.201.1/16" and net.host_ip(3) == "10.213.201.3"
    assert net.host_veth(10) == "sfl1h10"
    assert net.client_cidr(100) == "10.213.201.100/32"
    last = plan.lab_net(49)
    assert last.prefix == "10.213.249" and last.host_veth(99) == "sfl49h99" and len(last.host_veth(99)) <= 15
    assert plan.lab_netns("pytest-ab12cd", "sipp") == "sipfleet-l-pytest-ab12cd-sipp"
    for bad in (0, 50, -1, True, "1"):
        with pytest.raises(plan.PlanError):
            plan.lab_net(bad)
    with pytest.raises(plan.PlanError):
        net.host_ip(100)  # client range
    with pytest.raises(plan.PlanError):
        net.client_ip(99)
    with pytest.raises(plan.PlanError):
        plan.lab_netns("bad name", "P")


def test_bridge_mac_is_fixed_and_locally_administered():
    """Labs' bridges and clusters' cbr0 share one L2 segment once joined: every MAC is distinct."""
    macs = {plan.lab_net(s).bridge_mac for s in plan.LAB_SLOTS}
    macs |= {plan.cluster_net(s, "x").bridge_mac for s in plan.CLUSTER_SLOTS}
    assert len(macs) == len(plan.LAB_SLOTS) + len(plan.CLUSTER_SLOTS)
    assert plan.cluster_net(7, "a").bridge_mac == plan.cluster_net(7, "b").bridge_mac  # the slot's, fixed
    for mac in macs:
        first = int(mac.split(":")[0], 16)
        assert first & 0b10 and not first & 0b1  # locally administered, unicast


def test_cluster_slot_names_and_addresses():
    c = plan.cluster_net(7, "demo")
    assert c.netns == "sipfleet-c-demo" == plan.cluster_netns("demo") and c.bridge == "cbr0"
    assert c.node_ip == "10.213.7.1" and c.node_cidr == "10.213.7.1/16"
    assert c.host_link == "sfc7h" and c.host_cidr == "10.213.7.254/24" and c.host_subnet == "10.213.7.0/24"
    assert (c.pod_range_start, c.pod_range_end, c.pod_subnet) == ("10.213.7.10", "10.213.7.250", "10.213.0.0/16")
    assert c.service_cidr == "10.214.7.0/24" and c.kubernetes_service_ip == "10.214.7.1"
    for bad in (0, 100):
        with pytest.raises(plan.PlanError):
            plan.cluster_net(bad, "demo")


def test_every_address_of_the_plan_is_in_the_sipfleet_network_and_labs_never_overlap_clusters():
    lab_subnets = [ipaddress.ip_network(plan.lab_net(s).subnet) for s in plan.LAB_SLOTS]
    cluster_subnets = [ipaddress.ip_network(plan.cluster_net(s, "x").host_subnet) for s in plan.CLUSTER_SLOTS]
    for n in lab_subnets + cluster_subnets:
        assert n.subnet_of(plan.NETWORK)
    for a in lab_subnets:
        assert not any(a.overlaps(b) for b in cluster_subnets)
    assert len(set(lab_subnets + cluster_subnets)) == len(lab_subnets) + len(cluster_subnets)
    assert ipaddress.ip_network(plan.cluster_net(99, "x").service_cidr).subnet_of(plan.SERVICE_NETWORK)


def test_join_link_names():
    assert plan.join_links(3, 12) == ("sfj3c12", "sfj3c12p")
    assert max(len(n) for n in plan.join_links(49, 99)) <= 15
    assert plan.parse_join_link("sfj3c12") == (3, 12)
    assert plan.parse_join_link("sfj3c12p") is None and plan.parse_join_link("sfl3br") is None


def test_choosing_a_free_lab_slot():
    assert plan.choose_lab_slot([], []) == 1
    assert plan.choose_lab_slot(["sfl1br"], []) == 2
    # someone else's address in slot 2's /24 makes slot 2 unusable even without our bridge
    assert plan.choose_lab_slot(["sfl1br"], ["10.213.202.7/32"]) == 3
    with pytest.raises(plan.PlanError):  # a foreign /16 over the whole sipfleet network leaves no lab slot
        plan.choose_lab_slot([], ["10.213.0.5/16"])
    assert plan.lab_slot_taken(4, [], ["192.0.2.2/24", "127.0.0.1/8"]) is None
    assert "overlaps" in plan.lab_slot_taken(4, [], ["10.213.204.1/24"])
    assert plan.choose_lab_slot([], [], prefer=9) == 9
    assert plan.choose_lab_slot(["sfl9br"], [], prefer=9) == 1
    with pytest.raises(plan.PlanError, match="no free lab slot"):
        plan.choose_lab_slot([f"sfl{s}br" for s in plan.LAB_SLOTS], [])


def test_lab_slot_of_and_in_plan():
    assert plan.lab_slot_of("10.213.203.9") == 3
    assert plan.lab_slot_of("10.213.3.9") is None and plan.lab_slot_of("127.0.0.1") is None
    assert plan.lab_slot_of("nonsense") is None
    assert plan.in_plan("10.213.0.1") and not plan.in_plan("10.214.1.1") and not plan.in_plan("x")


def test_choosing_a_free_cluster_slot():
    assert plan.choose_cluster_slot([], []) == 1
    assert plan.choose_cluster_slot(["sfc1h", "sfc2h"], []) == 3
    assert plan.choose_cluster_slot([], ["10.213.1.254/24"]) == 2
    assert plan.cluster_slot_taken(5, ["sfl5br"], ["10.213.205.254/24"]) is None  # a lab's slot 5 is not cluster 5
    assert plan.choose_cluster_slot([], [], prefer=42) == 42
    with pytest.raises(plan.PlanError, match="no free cluster slot"):
        plan.choose_cluster_slot([f"sfc{s}h" for s in plan.CLUSTER_SLOTS], [])
