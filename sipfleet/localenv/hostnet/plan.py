"""The sipfleet address plan (10.213.0.0/16 only): pure functions from a slot to names and addresses.

Nothing here touches the machine; :mod:`sipfleet.localenv.hostnet` creates what these functions name.

Cluster slot ``c`` (1..99): everything of cluster ``<name>`` runs in netns ``sipfleet-c-<name>``; inside it the
bridge ``cbr0`` holds the node address ``10.213.c.1/16``; pods get ``10.213.c.10``-``.250`` (on-link /16, no
routes); the host reaches them over a veth whose host end ``sfc<c>h`` holds ``10.213.c.254/24``; Services use
``10.214.c.0/24`` (the ``kubernetes`` Service is ``10.214.c.1``).

Lab slot ``l`` (1..49): the bridge ``sfl<l>br`` in the host netns holds ``10.213.(200+l).254/24``. Each lab host
is a netns ``sipfleet-l-<lab>-<host>`` whose ``eth0`` (peer of ``sfl<l>h<n>`` on the bridge) holds
``10.213.(200+l).<n>/16``: P=1, R=2, E=3, SIPp 10-19 (one netns, extra addresses), other hosts 20-99 (tests'
stand-ins for pods). Host processes use ``/32`` client addresses ``.100``-``.249`` on the lab bridge.

A join (pods <-> lab, pure L2) is the veth ``sfj<l>c<c>`` (on the lab bridge) / ``sfj<l>c<c>p`` (moved into the
cluster netns, on ``cbr0``).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Iterable

NETWORK = ipaddress.ip_network("10.213.0.0/16")
SERVICE_NETWORK = ipaddress.ip_network("10.214.0.0/16")
CLUSTER_SLOTS = range(1, 100)
LAB_SLOTS = range(1, 50)
LAB_THIRD_OCTET_BASE = 200

LAB_NODE_HOSTS = {"P": 1, "R": 2, "E": 3}
SIPP_HOSTS = range(10, 20)
EXTRA_HOSTS = range(20, 100)
CLIENT_HOSTS = range(100, 250)
BRIDGE_HOST = 254

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HOST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,15}$")


class PlanError(ValueError):
    """A slot, name or address outside the plan."""


def check_name(name: str, what: str = "name") -> str:
    """A lab or cluster name usable in netns names: letters, digits, ``._-``, at most 64."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise PlanError(f"bad {what} {name!r}: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return name


def _check_slot(slot: int, slots: range, what: str) -> int:
    if not isinstance(slot, int) or isinstance(slot, bool) or slot not in slots:
        raise PlanError(f"{what} slot must be {slots.start}..{slots.stop - 1}, not {slot!r}")
    return slot


@dataclass(frozen=True)
class LabNet:
    """Names and addresses of lab slot ``slot``."""

    slot: int

    @property
    def third(self) -> int:
        return LAB_THIRD_OCTET_BASE + self.slot

    @property
    def prefix(self) -> str:
        """``10.213.(200+l)``: the first three octets every lab address shares."""
        return f"10.213.{self.third}"

    @property
    def subnet(self) -> str:
        return f"{self.prefix}.0/24"

    @property
    def bridge(self) -> str:
        return f"sfl{self.slot}br"

    @property
    def bridge_ip(self) -> str:
        return f"{self.prefix}.{BRIDGE_HOST}"

    @property
    def bridge_cidr(self) -> str:
        return f"{self.bridge_ip}/24"

    @property
    def bridge_mac(self) -> str:
        """A fixed, locally administered MAC, so the bridge's MAC never changes when ports come and go."""
        return f"02:53:46:4c:{self.slot:02x}:fe"

    def host_ip(self, n: int) -> str:
        if not 1 <= int(n) < CLIENT_HOSTS.start:
            raise PlanError(f"lab host number must be 1..{CLIENT_HOSTS.start - 1}, not {n!r}")
        return f"{self.prefix}.{int(n)}"

    def host_cidr(self, n: int) -> str:
        return f"{self.host_ip(n)}/16"

    def host_veth(self, n: int) -> str:
        """The bridge-side end of host ``n``'s veth (its peer is ``eth0`` in the host's netns)."""
        self.host_ip(n)
        return f"sfl{self.slot}h{int(n)}"

    def client_ip(self, n: int) -> str:
        if int(n) not in CLIENT_HOSTS:
            raise PlanError(f"client host number must be {CLIENT_HOSTS.start}..{CLIENT_HOSTS.stop - 1}, not {n!r}")
        return f"{self.prefix}.{int(n)}"

    def client_cidr(self, n: int) -> str:
        return f"{self.client_ip(n)}/32"

    def contains(self, ip: str) -> bool:
        return ipaddress.ip_address(ip) in ipaddress.ip_network(self.subnet)


def lab_net(slot: int) -> LabNet:
    return LabNet(_check_slot(slot, LAB_SLOTS, "lab"))


def lab_netns(lab: str, host: str) -> str:
    """``sipfleet-l-<lab>-<host>``: the netns of one lab host."""
    check_name(lab, "lab name")
    if not _HOST_RE.match(host or ""):
        raise PlanError(f"bad lab host name {host!r}")
    return f"sipfleet-l-{lab}-{host}"


@dataclass(frozen=True)
class ClusterNet:
    """Names and addresses of cluster slot ``slot`` (cluster ``name``)."""

    slot: int
    name: str

    @property
    def netns(self) -> str:
        return f"sipfleet-c-{self.name}"

    @property
    def bridge(self) -> str:
        return "cbr0"

    @property
    def bridge_mac(self) -> str:
        """A fixed, locally administered MAC for ``cbr0``. A bridge created without one takes the lowest MAC of
        its ports, so it changed whenever a pod's veth came or went: the host and every pod kept sending to
        the old MAC (their neighbour entry stays valid up to ~45 s), and their TCP to the apiserver stalled
        until the entry expired (requests of 13-53 s)."""
        return f"02:53:46:43:{self.slot:02x}:01"

    @property
    def node_ip(self) -> str:
        return f"10.213.{self.slot}.1"

    @property
    def node_cidr(self) -> str:
        return f"{self.node_ip}/16"

    @property
    def host_link(self) -> str:
        """The host end of the host-access veth (its peer is enslaved to ``cbr0``)."""
        return f"sfc{self.slot}h"

    @property
    def host_link_peer(self) -> str:
        return f"sfc{self.slot}n"

    @property
    def host_ip(self) -> str:
        return f"10.213.{self.slot}.254"

    @property
    def host_cidr(self) -> str:
        return f"{self.host_ip}/24"

    @property
    def host_subnet(self) -> str:
        return f"10.213.{self.slot}.0/24"

    @property
    def pod_subnet(self) -> str:
        return str(NETWORK)

    @property
    def pod_range_start(self) -> str:
        return f"10.213.{self.slot}.10"

    @property
    def pod_range_end(self) -> str:
        return f"10.213.{self.slot}.250"

    @property
    def service_cidr(self) -> str:
        return f"10.214.{self.slot}.0/24"

    @property
    def kubernetes_service_ip(self) -> str:
        return f"10.214.{self.slot}.1"


def cluster_net(slot: int, name: str) -> ClusterNet:
    return ClusterNet(_check_slot(slot, CLUSTER_SLOTS, "cluster"), check_name(name, "cluster name"))


def cluster_netns(name: str) -> str:
    return f"sipfleet-c-{check_name(name, 'cluster name')}"


def join_links(lab_slot: int, cluster_slot: int) -> tuple[str, str]:
    """(lab-bridge end, cluster end) of the join veth between lab ``lab_slot`` and cluster ``cluster_slot``."""
    _check_slot(lab_slot, LAB_SLOTS, "lab")
    _check_slot(cluster_slot, CLUSTER_SLOTS, "cluster")
    return f"sfj{lab_slot}c{cluster_slot}", f"sfj{lab_slot}c{cluster_slot}p"


_JOIN_RE = re.compile(r"^sfj(\d+)c(\d+)$")


def parse_join_link(name: str) -> tuple[int, int] | None:
    """(lab slot, cluster slot) of a join's lab-bridge end name, else None."""
    m = _JOIN_RE.match(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def lab_slot_taken(slot: int, link_names: Iterable[str], host_cidrs: Iterable[str]) -> str | None:
    """Why lab slot ``slot`` is not free on this host (its bridge exists, or an address of its /24 is in use),
    else None. ``host_cidrs``: every ``ip/prefix`` in the host netns."""
    net = lab_net(slot)
    if net.bridge in set(link_names):
        return f"link {net.bridge} exists"
    sub = ipaddress.ip_network(net.subnet)
    for cidr in host_cidrs:
        iface = ipaddress.ip_interface(cidr)
        if iface.version == 4 and iface.network.overlaps(sub):
            return f"address {cidr} overlaps {net.subnet}"
    return None


def choose_lab_slot(link_names: Iterable[str], host_cidrs: Iterable[str], prefer: int | None = None) -> int:
    """The preferred slot if it is free, else the lowest free lab slot (PlanError when all are taken)."""
    links, cidrs = list(link_names), list(host_cidrs)
    order = ([prefer] if prefer else []) + [s for s in LAB_SLOTS if s != prefer]
    for slot in order:
        if lab_slot_taken(slot, links, cidrs) is None:
            return slot
    raise PlanError(f"no free lab slot ({LAB_SLOTS.start}..{LAB_SLOTS.stop - 1} all in use)")


def cluster_slot_taken(slot: int, link_names: Iterable[str], host_cidrs: Iterable[str]) -> str | None:
    """Why cluster slot ``slot`` is not free on this host (its host link exists, or an address of its /24 is in
    use), else None."""
    net = cluster_net(slot, "x")
    if net.host_link in set(link_names):
        return f"link {net.host_link} exists"
    sub = ipaddress.ip_network(net.host_subnet)
    for cidr in host_cidrs:
        iface = ipaddress.ip_interface(cidr)
        if iface.version == 4 and iface.network.overlaps(sub):
            return f"address {cidr} overlaps {net.host_subnet}"
    return None


def choose_cluster_slot(link_names: Iterable[str], host_cidrs: Iterable[str], prefer: int | None = None) -> int:
    """The preferred cluster slot if it is free, else the lowest free one (PlanError when all are taken)."""
    links, cidrs = list(link_names), list(host_cidrs)
    order = ([prefer] if prefer else []) + [s for s in CLUSTER_SLOTS if s != prefer]
    for slot in order:
        if cluster_slot_taken(slot, links, cidrs) is None:
            return slot
    raise PlanError(f"no free cluster slot ({CLUSTER_SLOTS.start}..{CLUSTER_SLOTS.stop - 1} all in use)")


def lab_slot_of(ip: str) -> int | None:
    """The lab slot whose /24 holds ``ip``, else None."""
    try:
        a = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if a.version != 4 or a not in NETWORK:
        return None
    slot = int(str(a).split(".")[2]) - LAB_THIRD_OCTET_BASE
    return slot if slot in LAB_SLOTS else None


def in_plan(ip: str) -> bool:
    """True for an address of the sipfleet network (10.213.0.0/16)."""
    try:
        return ipaddress.ip_address(ip) in NETWORK
    except ValueError:
        return False
