"""hostnet against the real kernel: what an owner's record removes, and what it must leave alone.

Every object here is created by the test itself (names ``sft*`` and ``sipfleet-t-*``) and removed by it.
"""

from __future__ import annotations

import json
import socket
import subprocess
import uuid

import pytest

from sipfleet.localenv import hostnet
from sipfleet.localenv.waiting import wait_for


@pytest.fixture
def tag() -> str:
    return uuid.uuid4().hex[:6]


def test_the_record_lets_another_process_tear_down_exactly_what_was_built(tmp_path, tag):
    path = tmp_path / "net.json"
    builder = hostnet.Owned(path, "test")
    ns = builder.netns(f"sipfleet-t-{tag}")
    builder.bridge(f"sft{tag}", cidr="10.213.250.254/24")  # outside every lab and cluster slot
    builder.veth(f"sft{tag}h", "eth0", peer_netns=ns, master=f"sft{tag}", peer_cidr="10.213.250.1/16")
    builder.addr(f"sft{tag}", "10.213.250.100/32")
    builder.sysctl(f"sft{tag}h", "arp_ignore", "1")
    assert {e["kind"] for e in builder.entries} == {"netns", "link", "addr", "sysctl"}

    # reachable through the bridge, from a socket made inside the netns
    server = hostnet.in_netns(ns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    try:
        server.bind(("10.213.250.1", 0))
        server.settimeout(5)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.bind(("10.213.250.100", 0))
            client.sendto(b"ping", server.getsockname())
            assert server.recvfrom(16)[0] == b"ping"
    finally:
        server.close()  # a socket keeps its netns alive

    other = hostnet.Owned(path, "test")  # e.g. `sipfleet lab down` in another process
    assert other.teardown() == []
    assert not path.exists()
    assert not hostnet.netns_exists(ns)
    assert hostnet.link(f"sft{tag}") is None and hostnet.link(f"sft{tag}h") is None
    assert not [a for a in hostnet.addrs() if a[1].startswith("10.213.250.")]


def test_objects_recreated_by_someone_else_under_the_same_names_are_left_alone(tmp_path, tag):
    owned = hostnet.Owned(tmp_path / "net.json", "test")
    name, ns = f"sft{tag}", f"sipfleet-t-{tag}"
    owned.bridge(name)
    owned.netns(ns)
    # someone else replaces both (same names, other objects)
    hostnet.link_delete(name)
    hostnet.bridge_add(name)
    hostnet.ip("netns", "delete", ns)
    hostnet.netns_add(ns)
    try:
        assert owned.teardown() == []
        assert hostnet.link(name) is not None and hostnet.netns_exists(ns)
    finally:
        hostnet.link_delete(name)
        hostnet.netns_delete(ns)


def test_a_netns_still_in_use_is_not_deleted_and_stays_recorded(tmp_path, tag):
    path = tmp_path / "net.json"
    owned = hostnet.Owned(path, "test")
    ns = owned.netns(f"sipfleet-t-{tag}")
    proc = subprocess.Popen(hostnet.nsenter_prefix(ns) + ["sleep", "60"])
    try:
        wait_for(lambda: proc.pid in hostnet.netns_pids(ns), timeout=30, message="sleep inside the netns")
        problems = owned.teardown()
        assert len(problems) == 1 and "still holds processes" in problems[0] and str(proc.pid) in problems[0]
        assert hostnet.netns_exists(ns) and hostnet.Owned(path).find("netns", name=ns) is not None
    finally:
        proc.kill()
        proc.wait(30)
    assert hostnet.Owned(path).teardown() == []
    assert not hostnet.netns_exists(ns)


def test_refuses_to_touch_what_is_not_its_own(tmp_path, tag):
    owned = hostnet.Owned(tmp_path / "net.json", "test")
    with pytest.raises(hostnet.HostNetError, match="not a link sipfleet created"):
        owned.addr("lo", "10.213.250.9/32")
    with pytest.raises(hostnet.HostNetError, match="not a link sipfleet created"):
        owned.sysctl("lo", "arp_ignore", "1")
    with pytest.raises(hostnet.HostNetError, match="already exists"):
        owned.bridge("lo")
    ns = owned.netns(f"sipfleet-t-{tag}")
    try:
        with pytest.raises(hostnet.HostNetError, match=r"already in use on lo"):
            owned.bridge(f"sft{tag}", cidr="127.0.0.1/8")
        assert hostnet.link(f"sft{tag}") is None  # refused before anything was created
        with pytest.raises(hostnet.HostNetError, match="already exists and is not ours"):
            hostnet.Owned(tmp_path / "other.json").netns(ns)
        with pytest.raises(hostnet.HostNetError, match="does not exist"):
            hostnet.link_set_state("eth0", False, netns=f"sipfleet-t-{tag}-missing")
        with pytest.raises(hostnet.HostNetError, match="no process"):
            hostnet.pid_netns(999_999_999)
    finally:
        assert owned.teardown() == []


def test_nft_tables_of_our_own_in_a_netns(tmp_path, tag):
    owned = hostnet.Owned(tmp_path / "net.json", "test")
    ns = owned.netns(f"sipfleet-t-{tag}")
    script = "table inet sft_test {\n\tchain input {\n\t\ttype filter hook input priority 0; policy accept;\n\t}\n}\n"
    owned.nft_table("inet", "sft_test", script, netns=ns)
    assert ("inet", "sft_test") in hostnet.nft_tables(ns)
    assert ("inet", "sft_test") not in hostnet.nft_tables()  # per netns
    with pytest.raises(hostnet.HostNetError, match="syntax error|Error"):
        hostnet.nft_apply("table inet broken {", netns=ns)
    assert owned.drop_nft_table("inet", "sft_test", netns=ns)
    assert ("inet", "sft_test") not in hostnet.nft_tables(ns)
    assert owned.teardown() == []


def test_a_host_link_answers_arp_only_for_its_own_addresses(tmp_path, tag):
    """A lab joined to a cluster puts two host links on one L2 segment (the lab bridge, and the cluster's link
    into its cbr0). The cluster's netns must learn the cluster link's address at that link, not at the lab bridge:
    otherwise the apiserver answers the host through the lab, and a lab that goes down cuts the host off."""
    owned = hostnet.Owned(tmp_path / "net.json", "test")
    lab, host_link, join = f"sft{tag}l", f"sft{tag}c", f"sft{tag}j"
    ns = owned.netns(f"sipfleet-t-{tag}")
    try:
        owned.bridge(lab, cidr="10.213.251.254/24")  # outside every lab and cluster slot
        owned.bridge("cbr", cidr="10.213.250.1/16", netns=ns)
        owned.veth(host_link, "hpeer", peer_netns=ns, peer_master="cbr")
        owned.addr(host_link, "10.213.250.254/24")
        owned.veth(join, "jpeer", peer_netns=ns, master=lab, peer_master="cbr")
        want = hostnet.link(host_link)["address"]  # type: ignore[index]
        for _ in range(5):  # which answer arrives last is a race: ask several times
            subprocess.run(["ip", "-n", ns, "neigh", "flush", "dev", "cbr"], check=True)

            def send() -> None:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.sendto(b"x", ("10.213.250.254", 9))

            hostnet.in_netns(ns, send)

            def learned() -> str | None:
                out = subprocess.run(["ip", "-n", ns, "-j", "neigh", "show", "10.213.250.254", "dev", "cbr"],
                                     check=True, capture_output=True, text=True).stdout
                entries = [e for e in json.loads(out or "[]") if e.get("lladdr")]
                return entries[0]["lladdr"] if entries else None

            assert wait_for(learned, timeout=5, interval=0.05, message="neighbour entry") == want
    finally:
        assert owned.teardown() == []
