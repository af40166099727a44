"""The lab's network: a bridge in the host netns and one network namespace per lab host, per the address plan.

Lab slot ``l`` is chosen free at build time (under the machine-wide slot lock) and kept in ``topology.json``.
The bridge ``sfl<l>br`` holds ``10.213.(200+l).254/24``; each lab host (P, R, E, sipp) is the netns
``sipfleet-l-<lab>-<host>`` whose ``eth0`` holds ``10.213.(200+l).<n>/16`` (P=1, R=2, E=3, sipp=10, with
extra SIPp addresses .11-.19 on demand) and whose veth peer ``sfl<l>h<n>`` is on the bridge. No host gets a
default route; nothing is forwarded. Host processes (tests' agents) get ``/32`` client addresses
``.100``-``.249`` on the bridge. Everything created is in the hostnet record ``net.json``; :meth:`teardown`
stops any process still inside the lab's namespaces (by PID), removes every join to the lab's bridge, then
exactly what the record holds.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from .. import hostnet, procs
from ..hostnet import plan, shared
from .model import HOST_NUMBER, HOSTS, LabError, host_name
from .state import LabState

TOPOLOGY_FILE = "topology.json"
NET_RECORD = "net.json"


@contextlib.contextmanager
def net_errors() -> Iterator[None]:
    """Host network and address plan failures as LabError (one line)."""
    try:
        yield
    except (hostnet.HostNetError, plan.PlanError) as e:
        raise LabError(str(e)) from None


class Topology:
    """The network of lab ``name`` (state in ``state``)."""

    def __init__(self, name: str, state: LabState) -> None:
        with net_errors():
            plan.check_name(name, "lab name")
        self.name = name
        self.state = state
        self.owned = hostnet.Owned(state.path(NET_RECORD), owner=f"sipfleet lab {name}")

    # ------------------------------------------------------------------ names and addresses
    @property
    def slot(self) -> int | None:
        slot = self.state.read_json(TOPOLOGY_FILE, {}).get("slot")
        return int(slot) if slot else None

    @property
    def last_slot(self) -> int | None:
        """The slot of the lab's last network (kept in lab.json after down, for reading its logs)."""
        slot = self.state.read_json("lab.json", {}).get("slot")
        return int(slot) if isinstance(slot, int) else None

    @property
    def net(self) -> plan.LabNet:
        """The lab's network: the live one, else the last one it had (its addresses, for old wire logs)."""
        slot = self.slot or self.last_slot
        if slot is None:
            raise LabError(f"lab {self.name} has no network yet (never up): no lab slot chosen")
        return plan.lab_net(slot)

    @property
    def live_net(self) -> plan.LabNet:
        """The lab's network while it exists (LabError when the lab is down)."""
        slot = self.slot
        if slot is None:
            raise LabError(f"lab {self.name} is not up (it has no network)")
        return plan.lab_net(slot)

    def netns(self, host: str) -> str:
        return plan.lab_netns(self.name, host_name(host))

    def host_ip(self, host: str) -> str:
        return self.net.host_ip(HOST_NUMBER[host_name(host)])

    def sipp_ip(self, index: int = 0) -> str:
        """SIPp host address ``index`` (0..9 -> .10-.19), added in the SIPp netns on first use."""
        if index not in range(len(plan.SIPP_HOSTS)):
            raise LabError(f"SIPp address index must be 0..{len(plan.SIPP_HOSTS) - 1}")
        n = plan.SIPP_HOSTS[index]
        ip = self.net.host_ip(n)
        if index > 0:
            net, ns = self.live_net, self.netns("sipp")
            if self.owned.find("addr", dev="eth0", cidr=net.host_cidr(n), netns=ns) is None:
                with net_errors():
                    self.owned.addr("eth0", net.host_cidr(n), netns=ns)
        return ip

    def sipp_ips(self) -> list[str]:
        return [self.net.host_ip(n) for n in plan.SIPP_HOSTS]

    # ------------------------------------------------------------------ build / teardown
    def is_built(self) -> bool:
        """True when the record holds the lab's bridge and every host netns, all still present."""
        self.owned.reload()
        slot = self.slot
        if slot is None:
            return False
        net = plan.lab_net(slot)
        br = self.owned.find("link", name=net.bridge, netns=None)
        if br is None or (hostnet.link(net.bridge) or {}).get("ifindex") != br["ifindex"]:
            return False
        for host in HOSTS:
            e = self.owned.find("netns", name=self.netns(host))
            if e is None or hostnet.netns_inode(e["name"]) != e["inode"]:
                return False
            n = HOST_NUMBER[host]
            if self.owned.find("link", name=net.host_veth(n), netns=None) is None:
                return False
        return True

    @property
    def shared_user(self) -> str:
        """How this lab appears in hostnet's shared record (its state directory: unique on the machine)."""
        return f"lab {self.state.dir}"

    def build(self, slot: int | None = None) -> plan.LabNet:
        """Choose a free slot (``slot`` if given, which must be free) and create bridge and hosts."""
        with net_errors():
            hostnet.check_privileges()
            shared.claim(self.shared_user)  # /run/netns may become a mount point: the last owner undoes it
            with hostnet.slot_lock():
                links = [ln.get("ifname", "") for ln in hostnet.links()]
                cidrs = [c for _, c in hostnet.addrs()]
                if slot is not None:
                    why = plan.lab_slot_taken(slot, links, cidrs)
                    if why:
                        raise LabError(f"lab slot {slot} is in use ({why})")
                else:
                    slot = plan.choose_lab_slot(links, cidrs)
                for host in HOSTS:
                    ns = self.netns(host)
                    if hostnet.netns_exists(ns):
                        raise LabError(f"network namespace {ns} already exists and is not this lab's "
                                       f"(another lab named {self.name!r} with another state dir?)")
                net = plan.lab_net(slot)
                self.state.write_json(TOPOLOGY_FILE, {"slot": slot, "bridge": net.bridge})
                self.owned.bridge(net.bridge, cidr=net.bridge_cidr, mac=net.bridge_mac)
            for host in HOSTS:
                ns = self.owned.netns(self.netns(host))
                n = HOST_NUMBER[host]
                self.owned.veth(net.host_veth(n), "eth0", peer_netns=ns, master=net.bridge, peer_cidr=net.host_cidr(n))
        return net

    def stragglers(self) -> list[int]:
        """PIDs of processes still inside the lab's namespaces."""
        out: list[int] = []
        for ns in sorted(self.owned.netns_names()):
            out.extend(hostnet.netns_pids(ns))
        return out

    def teardown(self) -> list[str]:
        """Stop what still runs inside the lab's netns (by PID), remove joins and everything recorded."""
        self.owned.reload()
        problems: list[str] = []
        pids = self.stragglers()
        if pids:
            recs = [procs.ProcRecord(name=f"pid {p}", pid=p, start_time=procs.start_time(p) or 0) for p in pids]
            procs.stop([r for r in recs if r.start_time], grace=5.0)
        with net_errors():
            slot = self.slot
            if slot is not None and self.owned.find("link", name=plan.lab_net(slot).bridge, netns=None):
                hostnet.unjoin_lab(slot)
            problems += self.owned.teardown()
        if not self.owned.entries:
            self.state.remove(TOPOLOGY_FILE)
            problems += shared.release(self.shared_user)
        return problems

    # ------------------------------------------------------------------ client addresses (host processes)
    def client_address(self) -> str:
        """A fresh ``/32`` on the lab bridge for one host process (released by :meth:`release_client_address`
        or at teardown)."""
        net = self.live_net
        with net_errors():
            in_use = {c.split("/")[0] for _, c in hostnet.addrs()}
            for n in plan.CLIENT_HOSTS:
                ip = net.client_ip(n)
                if ip not in in_use:
                    self.owned.addr(net.bridge, net.client_cidr(n))
                    return ip
        raise LabError(f"no free client address on {net.bridge} ({len(plan.CLIENT_HOSTS)} in use)")

    def release_client_address(self, ip: str) -> None:
        with net_errors():
            self.owned.release_addr(self.live_net.bridge, f"{ip}/32")

    def client_addresses(self) -> list[str]:
        slot = self.slot
        if slot is None:
            return []
        br = plan.lab_net(slot).bridge
        return [e["cidr"].split("/")[0] for e in self.owned.entries
                if e["kind"] == "addr" and e["dev"] == br and e["cidr"].endswith("/32")]

    # ------------------------------------------------------------------ join (pods <-> lab)
    def join(self, cluster_netns: str, cluster_slot: int, cluster_bridge: str = "cbr0") -> str:
        with net_errors():
            return hostnet.join(self.owned, self.live_net.slot, cluster_netns, cluster_slot, cluster_bridge=cluster_bridge)

    def unjoin(self, cluster_slot: int) -> bool:
        with net_errors():
            return hostnet.unjoin(self.live_net.slot, cluster_slot, self.owned)
