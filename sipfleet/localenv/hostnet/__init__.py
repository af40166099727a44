"""Host network primitives for sipfleet's own network (10.213.0.0/16): namespaces, veths, bridges, addresses,
nftables tables, per-interface sysctls, the L2 join between a lab and a cluster, and a record of what was
created so that teardown removes exactly that and nothing else.

- :mod:`.plan`: the address plan, pure (slot -> names and addresses);
- :mod:`.base`: running ``ip``/``nft`` (inside a netns with ``nsenter --net=``), code on a thread in a netns,
  the privilege check, :class:`HostNetError` (every failure, one line);
- :mod:`.objects`: one operation per object (netns, links, addresses, routes, nft tables, sysctls, ports);
- :mod:`.owned`: :class:`Owned` (the record and its teardown), :func:`join` / :func:`unjoin`.

Rules kept here: no default route, no forwarding, no NAT; a netns given as a path (a pod's) is only entered;
nothing outside an owner's record is ever deleted.
"""

from __future__ import annotations

from . import plan
from .base import HostNetError, check_privileges, in_netns, ip, ip_json, netns_path, nsenter_prefix, pid_netns, run, tool
from .objects import (
    addr_add,
    addr_delete,
    addrs,
    bridge_add,
    free_port,
    link,
    link_delete,
    link_is_up,
    link_move,
    link_set_master,
    link_set_state,
    links,
    netns_add,
    netns_delete,
    netns_exists,
    netns_inode,
    netns_list,
    netns_pids,
    nft_apply,
    nft_delete_table,
    nft_tables,
    port_bound,
    routes,
    set_link_sysctl,
    slot_lock,
    veth_add,
)
from .owned import Owned, join, unjoin, unjoin_cluster, unjoin_lab

__all__ = [
    "HostNetError", "Owned", "join", "unjoin", "unjoin_lab", "unjoin_cluster", "plan", "check_privileges",
    "in_netns", "ip", "ip_json", "netns_path", "nsenter_prefix", "pid_netns", "run", "tool", "addr_add",
    "addr_delete", "addrs", "bridge_add", "free_port", "link", "link_delete", "link_is_up", "link_move",
    "link_set_master", "link_set_state", "links", "netns_add", "netns_delete", "netns_exists", "netns_inode",
    "netns_list", "netns_pids", "nft_apply", "nft_delete_table", "nft_tables", "port_bound", "routes",
    "set_link_sysctl", "slot_lock", "veth_add",
]
