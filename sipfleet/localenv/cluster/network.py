"""The cluster's own network: one network namespace holding the whole cluster, its node bridge, the host's way in.

``build(owned, net)`` creates (recorded in ``owned``, so ``down`` removes exactly this):

* netns ``sipfleet-c-<name>`` (loopback up): etcd, the apiserver, controller-manager, scheduler, containerd, the
  kubelet and kube-proxy all run in it, so their ports and kube-proxy's nftables table are the cluster's own;
* bridge ``cbr0`` in it with the node IP ``10.213.c.1/16`` (the CNI bridge plugin attaches pods to it) and a
  fixed MAC (the plan's ``bridge_mac``): pods' veths come and go as its ports, its address must not follow them;
* a veth from the host (``sfc<c>h``, ``10.213.c.254/24``) whose peer is a port of ``cbr0``: the host reaches the
  apiserver and the pods directly on that L2 segment, nothing is routed;
* forwarding inside that netns only, and only from ``cbr0`` back onto ``cbr0`` (nftables table
  ``sipfleet-hairpin``): what a pod needs to reach another pod through a ClusterIP. The netns has no route off the
  machine, and the host's own forwarding is never touched.

Slots are chosen free on this machine (the plan's ``choose_cluster_slot``) under hostnet's slot lock.
"""

from __future__ import annotations

from pathlib import Path

from .. import hostnet
from ..hostnet.plan import ClusterNet, PlanError, choose_cluster_slot, cluster_net
from .configs import hairpin_nft


class NetworkError(RuntimeError):
    pass


def pick_slot(name: str, prefer: int | None) -> ClusterNet:
    """Choose a free slot for cluster ``name`` on this machine (call under ``hostnet.slot_lock()``)."""
    links = [ln.get("ifname", "") for ln in hostnet.links()]
    cidrs = [cidr for _dev, cidr in hostnet.addrs()]
    own = hostnet.plan.cluster_netns(name)
    if hostnet.netns_exists(own):
        raise NetworkError(f"network namespace {own} exists but this cluster has no record of it: another "
                           f"`sipfleet cluster up --name {name}` with another state directory is running, or a "
                           f"crashed one left it (remove it with `ip netns del {own}` once nothing runs in it)")
    try:
        return cluster_net(choose_cluster_slot(links, cidrs, prefer), name)
    except PlanError as e:
        raise NetworkError(str(e)) from None


def build(owned: hostnet.Owned, net: ClusterNet) -> None:
    owned.netns(net.netns)
    owned.bridge(net.bridge, cidr=net.node_cidr, mac=net.bridge_mac, netns=net.netns)
    owned.veth(net.host_link, net.host_link_peer, peer_netns=net.netns, peer_master=net.bridge)
    owned.addr(net.host_link, net.host_cidr)
    family, table, script = hairpin_nft(net)
    owned.nft_table(family, table, script, netns=net.netns)
    hostnet.in_netns(net.netns, lambda: Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n"))


def teardown(owned: hostnet.Owned) -> list[str]:
    """Remove the cluster's network (its netns takes cbr0, the veth pair, the nft table and the netns' own
    forwarding setting with it); returns the problems."""
    return owned.teardown()
