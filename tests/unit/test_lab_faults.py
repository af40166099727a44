"""Network fault modes and the nftables rules they render to (pure)."""

from __future__ import annotations

import pytest

from sipfleet.localenv.siplab import LabError, parse_net_fault, render_fault_table
from sipfleet.localenv.siplab.inject import NetFault, apply_fault, empty_host_faults, is_clean


def test_parse_net_fault():
    assert parse_net_fault("partition") == NetFault("partition")
    assert parse_net_fault("HEAL") == NetFault("heal")
    assert parse_net_fault("link-down") == NetFault("link-down")
    assert parse_net_fault("block:10.213.201.100") == NetFault("block", "10.213.201.100", 100)
    assert parse_net_fault("loss:30:10.213.3.12") == NetFault("block", "10.213.3.12", 30)
    for kamailio_mode in ("normal", "503", "blackhole", "delay:100"):
        assert parse_net_fault(kamailio_mode) is None
    for bad in ("block:", "block:nope", "block:192.0.2.1", "block:127.0.0.1", "loss:0:10.213.201.1",
                "loss:101:10.213.201.1", "loss:x:10.213.201.1", "loss:10.213.201.1"):
        with pytest.raises(LabError):
            parse_net_fault(bad)


def test_apply_fault_accumulates_and_heal_clears():
    f = apply_fault(None, NetFault("block", "10.213.201.100", 100))
    f = apply_fault(f, NetFault("block", "10.213.201.101", 25))
    assert f["drops"] == {"10.213.201.100": 100, "10.213.201.101": 25} and not f["partition"]
    g = apply_fault(f, NetFault("partition"))
    assert g["partition"] and f["partition"] is False  # pure: the input is not changed
    assert apply_fault(g, NetFault("link-down"))["link_down"] is True
    assert is_clean(apply_fault(g, NetFault("heal")))
    assert is_clean(None) and is_clean(empty_host_faults()) and not is_clean(g)


def test_no_faults_means_no_table():
    assert render_fault_table(None) is None
    assert render_fault_table(empty_host_faults()) is None
    assert render_fault_table({"partition": False, "drops": {}, "link_down": True}) is None


def test_block_renders_drops_in_both_directions():
    script = render_fault_table(apply_fault(None, NetFault("block", "10.213.201.100", 100)))
    assert script.startswith("table inet sipfleet_fault\ndelete table inet sipfleet_fault\ntable inet sipfleet_fault {")
    assert "\t\tip saddr 10.213.201.100 counter drop\n" in script
    assert "\t\tip daddr 10.213.201.100 counter drop\n" in script
    assert 'iifname "lo" accept' in script and 'oifname "lo" accept' in script
    assert "hook input" in script and "hook output" in script and "policy accept" in script
    assert "numgen" not in script


def test_loss_renders_random_drops():
    script = render_fault_table(apply_fault(None, NetFault("block", "10.213.3.12", 30)))
    assert "\t\tip saddr 10.213.3.12 numgen random mod 100 < 30 counter drop\n" in script
    assert "\t\tip daddr 10.213.3.12 numgen random mod 100 < 30 counter drop\n" in script


def test_partition_drops_everything_but_loopback():
    script = render_fault_table(apply_fault(None, NetFault("partition")))
    lines = [ln.strip() for ln in script.splitlines()]
    i = lines.index('iifname "lo" accept')
    assert lines[i + 1] == "counter drop"
    j = lines.index('oifname "lo" accept')
    assert lines[j + 1] == "counter drop"


def test_routes_a_link_down_flushes_are_restored_as_they_were():
    from sipfleet.localenv.siplab.inject import restorable_routes, route_args

    shown = [  # `ip -j -4 route show dev eth0` in an agent pod of the local cluster
        {"dst": "10.213.0.0/16", "protocol": "kernel", "scope": "link", "prefsrc": "10.213.2.20", "flags": []},
        {"dst": "10.214.2.0/24", "gateway": "10.213.2.1", "flags": []},
        {"dst": "10.215.0.0/24", "gateway": "10.213.2.1", "protocol": "static", "metric": 50, "flags": []},
    ]
    kept = restorable_routes(shown)
    assert [r["dst"] for r in kept] == ["10.214.2.0/24", "10.215.0.0/24"]  # the kernel's on-link prefix comes back by itself
    assert route_args(kept[0], "eth0") == ["10.214.2.0/24", "via", "10.213.2.1", "dev", "eth0"]
    assert route_args(kept[1], "eth0") == ["10.215.0.0/24", "via", "10.213.2.1", "dev", "eth0", "proto", "static",
                                           "metric", "50"]
