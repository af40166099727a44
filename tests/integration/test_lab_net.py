"""The SIP lab's network against the real kernel: namespaces, bridge, client addresses, joins, and real network
faults (nftables drops in a lab host's netns, link down/up in a pod-like netns), observed in the wire log.

Nothing here asserts how fast anything is; "does not arrive" is checked over a window after the fault is in
place, and the fault's own drop counters show the packets were sent and dropped.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid

import pytest

from sipfleet.localenv import hostnet
from sipfleet.localenv.hostnet import plan
from sipfleet.localenv.siplab import LabError, SipLab
from sipfleet.localenv.siplab.kamailio import probe_udp
from sipfleet.localenv.waiting import wait_for
from tests.fixtures.agent import registers

pytestmark = pytest.mark.lab

QUIET_WINDOW_S = 8.0  # how long a cut-off path is watched for REGISTERs that must not arrive
SLACK_S = 0.5  # a REGISTER already past the cut when the fault went in may still be logged this late


# ---------------------------------------------------------------------------------------------- host state


def _host_state() -> dict[str, set]:
    """The host netns as ``ip``/``nft`` report it, reduced to what identifies each object."""
    links = {(ln["ifname"], ln["ifindex"], ln.get("link_type"), ln.get("master")) for ln in hostnet.links()}
    addrs = set(hostnet.addrs())
    routes = {(r.get("dst"), r.get("dev"), r.get("table", "main"), r.get("type", "unicast"), r.get("prefsrc"))
              for r in hostnet.routes()}
    netns = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout.split("\n"))
    tables = {tuple(t) for t in hostnet.nft_tables()}
    return {"links": links, "addrs": addrs, "routes": routes, "netns": netns, "nft": tables}


def _others(state: dict[str, set], mine: re.Pattern[str]) -> dict[str, set]:
    """Drop the objects of *other* sipfleet owners (clusters, labs of other sessions) that may come and go
    while the test runs; everything else, including anything matching ``mine``, is kept."""
    def foreign(text: str) -> bool:
        return bool(re.search(r"\bsf[lcj]\d|sipfleet-|10\.213\.", text)) and not mine.search(text)

    return {k: {v for v in vals if not foreign(json.dumps(v))} for k, vals in state.items()}


def _diff(a: dict[str, set], b: dict[str, set]) -> dict[str, dict[str, list]]:
    return {k: {"gone": sorted(map(str, a[k] - b[k])), "new": sorted(map(str, b[k] - a[k]))}
            for k in a if a[k] != b[k]}


def _free_cluster_slot() -> int:
    used = {ln.get("ifname") for ln in hostnet.links()}
    return next(c for c in range(99, 50, -1) if f"sfc{c}h" not in used and not any(
        (n or "").endswith(f"c{c}") for n in used))


def _fake_cluster(owned: hostnet.Owned, slot: int) -> str:
    """A stand-in for a cluster netns: ``sipfleet-c-<name>`` with ``cbr0`` holding the node address."""
    name = f"pytest-{uuid.uuid4().hex[:6]}"
    net = plan.cluster_net(slot, name)
    owned.netns(net.netns)
    owned.bridge("cbr0", cidr=net.node_cidr, mac=net.bridge_mac, netns=net.netns)  # as network.build makes it
    return net.netns


def test_up_and_down_leave_the_host_as_it_was_and_two_labs_run_side_by_side(lab, lab_user, tmp_path):
    name = f"pytest-updown-{uuid.uuid4().hex[:6]}"
    forward = open("/proc/sys/net/ipv4/ip_forward").read()
    before = _host_state()
    other = SipLab(name, state_dir=tmp_path / "lab")
    helper = hostnet.Owned(tmp_path / "helper.json", "test")
    try:
        other.up(timeout=120)
        slot = other.slot
        assert slot != lab.slot  # both labs up at once, each on a slot of its own
        net = plan.lab_net(slot)
        assert hostnet.link(net.bridge) is not None and (net.bridge, net.bridge_cidr) in hostnet.addrs()
        for host, n in (("P", 1), ("R", 2), ("E", 3), ("S", 4), ("sipp", 10)):
            ns = other.netns(host)
            assert ns == f"sipfleet-l-{name}-{host}" and hostnet.netns_exists(ns)
            assert {ln["ifname"] for ln in hostnet.links(ns)} == {"lo", "eth0"}
            assert ("eth0", net.host_cidr(n)) in hostnet.addrs(ns)
            assert not [r for r in hostnet.routes(ns) if r.get("dst") == "default"], "a lab host got a default route"
        for n in "PRE":
            cfg = other.cfg_path(n).read_text()
            assert "127.0." not in cfg and f"listen=udp:{other.ip(n)}:5060" in cfg
            assert os.stat(f"/proc/{other.node(n).pid}/ns/net").st_ino == hostnet.netns_inode(other.netns(n))
        s_pid = other.node("S").pid
        assert os.stat(f"/proc/{s_pid}/ns/net").st_ino == hostnet.netns_inode(other.netns("S"))
        assert other.tls.ca_crt.is_file() and other.ca_pem() != lab.ca_pem()  # each lab has a CA of its own

        # the second lab serves SIP while the session's lab does too
        user = ("ud" + uuid.uuid4().hex[:6], "pw-" + uuid.uuid4().hex[:6])
        other.add_user(*user)
        res = other.sipp("register", "P", users=[user], route=f"<{other.proxy_uri()}>", timeout=60)
        assert res.codes == [200], (res.final_codes, res.errors[:3])
        assert lab.sipp("register", "P", users=[lab_user("side-")], route=f"<{lab.proxy_uri()}>",
                        timeout=60).codes == [200]
        other.scripted.script("200 auth=401")  # the second lab's S, through its P
        other.set_registrar("S")
        res = other.sipp("register", "P", users=[user], route=f"<{other.proxy_uri()}>", timeout=60)
        assert res.codes == [200] and other.scripted.requests(call_id=next(iter(res.final_codes)))
        if other.tls_enabled:  # a TLS handshake with its P, verified against its CA
            hs = subprocess.run(["openssl", "s_client", "-connect", other.tls_hostport("P"), "-CAfile",
                                 str(other.tls.ca_crt), "-verify_ip", other.ip("P"), "-verify_return_error", "-brief"],
                                input="", capture_output=True, text=True, timeout=30)
            assert hs.returncode == 0 and "Verification: OK" in hs.stderr, hs.stderr

        # everything down has to remove: a client address, a fault table, a join, extra SIPp address
        client = other.client_address()
        other.inject("R", f"block:{client}")
        assert ("inet", "sipfleet_fault") in hostnet.nft_tables(other.netns("R"))
        other.sipp_ip(3)
        cslot = _free_cluster_slot()
        cluster_ns = _fake_cluster(helper, cslot)
        join_link = other.join(cluster_ns, cslot)
        assert hostnet.link(join_link)["master"] == net.bridge
        assert hostnet.link(f"{join_link}p", cluster_ns)["master"] == "cbr0"
    finally:
        other.down()
    assert hostnet.link(join_link) is None and hostnet.link(f"{join_link}p", cluster_ns) is None  # the join went too
    assert helper.teardown() == []
    assert not os.path.exists(f"/proc/{s_pid}")  # S stopped by PID
    after = _host_state()
    assert other.slot is None and other.status()["slot"] is None and other.subnet == net.prefix  # for old logs
    mine = re.compile(rf"\bsf[lj]{slot}(br|h|c)|sipfleet-l-{re.escape(name)}-|10\.213\.{200 + slot}\.")
    assert _diff(_others(before, mine), _others(after, mine)) == {}
    assert open("/proc/sys/net/ipv4/ip_forward").read() == forward
    assert not (tmp_path / "lab" / "net.json").exists()
    assert other.net_faults() == {}  # the block at R went with R's netns


def test_up_refuses_a_slot_whose_addresses_are_someone_elses(tmp_path):
    owned = hostnet.Owned(tmp_path / "squatter.json", "test")
    slot = plan.choose_lab_slot([ln.get("ifname", "") for ln in hostnet.links()], [c for _, c in hostnet.addrs()])
    net = plan.lab_net(slot)
    tag = uuid.uuid4().hex[:4]
    try:
        owned.veth(f"sft{tag}a", f"sft{tag}b")
        owned.addr(f"sft{tag}a", f"{net.prefix}.77/32")  # not a lab's: a stranger in slot's /24
        lab = SipLab(f"pytest-refused-{tag}", state_dir=tmp_path / "lab", slot=slot)
        with pytest.raises(LabError) as e:
            lab.up(timeout=60)
        msg = str(e.value)
        assert f"lab slot {slot} is in use" in msg and f"{net.prefix}.77/32" in msg and "\n" not in msg
        assert hostnet.link(net.bridge) is None
        with pytest.raises(hostnet.HostNetError, match=r"already in use on sft.*\(not ours\)"):
            owned.addr(f"sft{tag}b", f"{net.prefix}.77/32")
        # without a slot given, the lab takes another one
        free = SipLab(f"pytest-other-{tag}", state_dir=tmp_path / "lab2")
        try:
            free.up(timeout=120)
            assert free.slot != slot
        finally:
            free.down()
    finally:
        assert owned.teardown() == []


def test_without_net_admin_the_lab_says_so_in_one_line(tmp_path):
    cmd = [sys.executable, "-m", "sipfleet.cli", "lab", "--name", "pytest-nocap", "--state-dir", str(tmp_path), "up"]
    out = subprocess.run(["capsh", "--drop=cap_net_admin,cap_sys_admin", "--", "-c", " ".join(cmd)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "CAP_NET_ADMIN" in lines[0] and "run as root" in lines[0], out.stderr


# ---------------------------------------------------------------------------------------------- faults, SIPp


def _register(lab, user, local_ip=None, **kw):
    kw.setdefault("timeout", 60)
    return lab.sipp("register", "P", users=[user], route=f"<{lab.proxy_uri()}>", local_ip=local_ip, **kw)


def test_block_drops_one_address_only_and_heal_restores(clean_lab, lab_user):
    lab = clean_lab
    user = lab_user("blk-")
    blocked = lab.sipp_ip(2)
    lab.inject("P", f"block:{blocked}")
    assert lab.net_faults()["P"]["drops"] == {blocked: 100}
    t = time.time()
    res = _register(lab, user, local_ip=blocked, recv_timeout_ms=3000)
    assert res.codes == ["timeout"], (res.final_codes, res.errors[:3])
    assert [r for r in lab.wire(since=t) if f":{user[0]}@" in r.from_uri] == []  # dropped before Kamailio
    assert lab.fault_counters("P").get("input", 0) >= 1
    assert _register(lab, user).codes == [200]  # the default SIPp address is not blocked
    lab.inject("P", "heal")
    assert lab.net_faults() == {}
    assert ("inet", "sipfleet_fault") not in hostnet.nft_tables(lab.netns("P"))
    assert _register(lab, user, local_ip=blocked).codes == [200]


def test_loss_drops_some_packets_at_random(clean_lab):
    lab = clean_lab
    me = lab.client_address()
    try:
        lab.block("P", me, loss=50)
        answered = sum(probe_udp(lab.ip("P"), lab.port, me, timeout=0.15) for _ in range(40))
        # each probe crosses the rule twice (in and out): ~25% answered; 0 or 40 would mean no loss / total loss
        assert 0 < answered < 40, answered
        counters = lab.fault_counters("P")
        assert counters.get("input", 0) + counters.get("output", 0) >= 1
        lab.heal("P")
        assert all(probe_udp(lab.ip("P"), lab.port, me, timeout=2.0) for _ in range(5))
    finally:
        lab.release_client_address(me)


def test_partition_of_sipp_host_and_cli(clean_lab, lab_user):
    lab = clean_lab
    base = [sys.executable, "-m", "sipfleet.cli", "lab", "--name", lab.name, "--state-dir", str(lab.state_dir)]
    out = subprocess.run(base + ["inject", "sipp", "partition"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    st = json.loads(subprocess.run(base + ["--json", "status"], capture_output=True, text=True, timeout=60).stdout)
    assert st["sipp"]["faults"]["partition"] is True
    t = time.time()
    user = lab_user("part-")
    res = _register(lab, user, recv_timeout_ms=2000)
    # dropped on the way out: SIPp's send fails (EPERM from the output hook) or times out; nothing reaches P
    assert res.count(200) == 0 and res.returncode != 0, (res.final_codes, res.stdout_tail[-500:])
    assert [r for r in lab.wire(since=t) if f":{user[0]}@" in r.from_uri] == []
    assert lab.fault_counters("sipp").get("output", 0) >= 1
    out = subprocess.run(base + ["inject", "all", "heal"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert lab.net_faults() == {}
    out = subprocess.run(base + ["inject", "P", "block:192.0.2.1"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "not in the sipfleet network" in out.stderr


# ---------------------------------------------------------------------------------------------- faults, agents


def _quiet(lab, user: str, since: float, node: str | None = None) -> list:
    """REGISTERs of ``user`` (at ``node``, default any) logged since ``since``, after a quiet window."""
    time.sleep(QUIET_WINDOW_S)
    return registers(lab, user, node=node, since=since)


def test_partitioned_proxy_stops_an_agents_registers_and_heal_restores_them(clean_lab, agent_factory, agent_account):
    lab = clean_lab
    acc, user = agent_account("part")
    agent = agent_factory([acc], expires=5)
    agent.wait_registered(user)
    lab.wait_wire(lambda r: f":{user}@" in r.from_uri, node="R", method="REGISTER", since=time.time(), timeout=60)

    lab.partition("P")
    t_cut = time.time() + SLACK_S
    assert _quiet(lab, user, t_cut, node="R") == []
    assert registers(lab, user, node="P", since=t_cut) == []
    wait_for(lambda: lab.fault_counters("P").get("input", 0) >= 2, timeout=60,
             message="the agent's REGISTERs dropped at P")  # it kept trying

    lab.heal("P")
    t_heal = time.time()
    rec = lab.wait_wire(lambda r: f":{user}@" in r.from_uri, node="R", method="REGISTER", since=t_heal, timeout=60)
    assert rec.src == lab.hostport("P")
    agent.wait_registered(user, timeout=60)


def test_link_down_in_a_pod_like_netns_and_up_again(clean_lab, agent_factory, agent_account, tmp_path):
    lab = clean_lab
    owned = hostnet.Owned(tmp_path / "pod-net.json", "test pod")
    tag = uuid.uuid4().hex[:6]
    pod_ns = f"sipfleet-t-pod-{tag}"
    n = plan.EXTRA_HOSTS.start + int(tag, 16) % len(plan.EXTRA_HOSTS)
    pod_ip = plan.lab_net(lab.slot).host_ip(n)
    agent = None
    try:
        owned.netns(pod_ns)
        owned.veth(f"sft{tag[:5]}", "eth0", peer_netns=pod_ns, master=lab.bridge,
                   peer_cidr=plan.lab_net(lab.slot).host_cidr(n))
        # like a pod's route to the Services (its CNI adds one): a link-down flushes it, the link-up re-adds it
        extra = f"10.214.250.0/24 via {plan.lab_net(lab.slot).bridge_ip} dev eth0"
        hostnet.ip("route", "add", *extra.split(), netns=pod_ns)
        acc, user = agent_account("pod")
        agent = agent_factory([acc], expires=5, netns=pod_ns, address=pod_ip)
        agent.wait_registered(user)
        assert os.stat(f"/proc/{agent.proc.pid}/ns/net").st_ino == hostnet.netns_inode(pod_ns)
        first = lab.wait_wire(lambda r: f":{user}@" in r.from_uri, node="P", method="REGISTER", since=time.time(),
                              timeout=60)
        assert first.src.startswith(pod_ip + ":")
        ip_changes = agent.stderr_text().count("handleIpChange called")  # the metrics are out of reach while down

        assert lab.link_down(pid=agent.proc.pid) == [extra]  # the pod's netns, entered through its PID
        assert not hostnet.link_is_up("eth0", pod_ns)
        assert not [r for r in hostnet.ip_json("-4", "route", "show", netns=pod_ns) if r.get("gateway")]
        t_down = time.time() + SLACK_S
        assert _quiet(lab, user, t_down) == []
        # the agent noticed the lost link (its IPv4 address stayed) and waits for it before handleIpChange()
        assert "local link lost" in agent.stderr_text()
        assert agent.stderr_text().count("handleIpChange called") == ip_changes

        assert lab.link_up(pid=agent.proc.pid) == [extra]
        assert [f"{r['dst']} via {r['gateway']} dev eth0" for r in hostnet.ip_json("-4", "route", "show",
                                                                                    netns=pod_ns) if r.get("gateway")] == [extra]
        t_up = time.time()
        lab.wait_wire(lambda r: f":{user}@" in r.from_uri and r.src.startswith(pod_ip + ":"), node="P",
                      method="REGISTER", since=t_up, timeout=60)
        agent.wait_registered(user, timeout=60)
        wait_for(lambda: agent.stderr_text().count("handleIpChange called") > ip_changes, timeout=30,
                 message="handleIpChange() once the link is back")
        assert hostnet.netns_exists(pod_ns)  # entered, never removed
    finally:
        if agent is not None:
            agent.stop()
        assert owned.teardown() == []


def test_cli_link_fault_by_pid(clean_lab, tmp_path):
    lab = clean_lab
    owned = hostnet.Owned(tmp_path / "pod-net.json", "test pod")
    tag = uuid.uuid4().hex[:6]
    pod_ns = f"sipfleet-t-cli-{tag}"
    sleeper = None
    try:
        owned.netns(pod_ns)
        owned.veth(f"sft{tag[:5]}", "eth0", peer_netns=pod_ns)
        sleeper = subprocess.Popen(hostnet.nsenter_prefix(pod_ns) + ["sleep", "120"])
        wait_for(lambda: hostnet.netns_pids(pod_ns), timeout=30, message="sleeper in the pod netns")
        base = [sys.executable, "-m", "sipfleet.cli", "lab", "--name", lab.name, "--state-dir", str(lab.state_dir)]
        out = subprocess.run(base + ["inject", "--pid", str(sleeper.pid), "link-down"], capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, out.stderr
        assert not hostnet.link_is_up("eth0", pod_ns)
        out = subprocess.run(base + ["inject", "--netns", f"/proc/{sleeper.pid}/ns/net", "link-up"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert hostnet.link_is_up("eth0", pod_ns)
        out = subprocess.run(base + ["inject", "--pid", "999999999", "link-down"], capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 1 and "no process 999999999" in out.stderr
    finally:
        if sleeper is not None:
            sleeper.kill()
            sleeper.wait(30)
        assert owned.teardown() == []


# ---------------------------------------------------------------------------------------------- join


def test_join_lets_a_cluster_netns_reach_the_lab_at_l2(lab, tmp_path):
    owned = hostnet.Owned(tmp_path / "cluster-net.json", "test cluster")
    cslot = _free_cluster_slot()
    node_ip = plan.cluster_net(cslot, "x").node_ip
    try:
        cluster_ns = _fake_cluster(owned, cslot)

        def probe() -> bool:
            return hostnet.in_netns(cluster_ns, lambda: probe_udp(lab.ip("P"), lab.port, node_ip, timeout=0.5))

        assert not probe()  # not joined: no path
        link = lab.join(cluster_ns, cslot)
        assert link == f"sfj{lab.slot}c{cslot}" and lab.join(cluster_ns, cslot) == link  # idempotent
        assert wait_for(probe, timeout=30, message="P answers the cluster netns over the join")
        # pure L2: the cluster netns has no route but its own /16, and the host forwards nothing
        assert [r["dst"] for r in hostnet.routes(cluster_ns) if r.get("table", "main") == "main"] == ["10.213.0.0/16"]
        assert lab.unjoin(cslot) is True
        assert hostnet.link(link) is None and not probe()
        assert lab.unjoin(cslot) is False
    finally:
        assert owned.teardown() == []
