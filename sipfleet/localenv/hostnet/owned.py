"""The record of what one owner (a lab, a cluster) created on the host network, and its exact teardown.

:class:`Owned` creates through :mod:`.objects` and appends each object to a JSON file (written after every
change, so another process can tear down what this one built): netns by name and nsfs inode, links by name,
netns and ifindex, addresses, nftables tables, per-interface sysctls (with the old value). :meth:`Owned.teardown`
removes them in reverse order, each only if it is still the object that was created; objects inside a netns of
the record go with that netns. A netns that still holds processes is not deleted (the caller stops them
first): it stays in the record and the problem is reported.

:func:`join` is the L2 link between a lab bridge and a cluster's ``cbr0`` (a veth: one end on the lab bridge,
the other created inside the cluster netns and enslaved to ``cbr0``); whichever side goes down first removes it
(:func:`unjoin_lab`, or the cluster netns going away, which deletes the pair).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from . import objects as ob
from . import plan
from .base import HostNetError, check_privileges


class Owned:
    """What one owner created; ``path`` is its JSON record (None: kept in memory only)."""

    def __init__(self, path: str | os.PathLike[str] | None, owner: str = "") -> None:
        self.path = Path(path) if path is not None else None
        self.owner = owner
        self.entries: list[dict[str, Any]] = self._load()
        self._privileged = False

    # ------------------------------------------------------------------ the record
    def _load(self) -> list[dict[str, Any]]:
        if self.path is None:
            return []
        try:
            return list(json.loads(self.path.read_text()).get("entries", []))
        except (OSError, ValueError):
            return []

    def _save(self) -> None:
        if self.path is None:
            return
        if not self.entries:
            self.path.unlink(missing_ok=True)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"owner": self.owner, "entries": self.entries}, indent=2) + "\n")
        os.replace(tmp, self.path)

    def reload(self) -> None:
        self.entries = self._load()

    def _add(self, entry: dict[str, Any]) -> None:
        self.entries.append(entry)
        self._save()

    def find(self, kind: str, **match: Any) -> dict[str, Any] | None:
        return next((e for e in self.entries if e["kind"] == kind and all(e.get(k) == v for k, v in match.items())), None)

    def forget(self, kind: str, **match: Any) -> None:
        self.entries = [e for e in self.entries if not (e["kind"] == kind and all(e.get(k) == v for k, v in match.items()))]
        self._save()

    def netns_names(self) -> set[str]:
        return {e["name"] for e in self.entries if e["kind"] == "netns"}

    def owns_link(self, name: str, netns: str | None = None) -> bool:
        """True for a link this record created: recorded, the peer of a recorded veth, or inside a netns of
        the record."""
        return ((netns is not None and netns in self.netns_names())
                or self.find("link", name=name, netns=netns) is not None
                or self.find("link", peer=name, peer_netns=netns) is not None)

    def _check(self) -> None:
        if not self._privileged:
            check_privileges()
            self._privileged = True

    # ------------------------------------------------------------------ creating
    def netns(self, name: str) -> str:
        """Create netns ``name`` (loopback up), or keep it if the record already holds that very netns."""
        self._check()
        e = self.find("netns", name=name)
        if e is not None and ob.netns_inode(name) == e["inode"]:
            return name
        if e is not None:
            self.forget("netns", name=name)
        self._add({"kind": "netns", "name": name, "inode": ob.netns_add(name)})
        return name

    def bridge(self, name: str, *, cidr: str | None = None, mac: str | None = None, netns: str | None = None) -> int:
        """Create bridge ``name`` (up, STP off, IPv6 off) with ``cidr`` on it; returns its ifindex."""
        self._check()
        if cidr is not None:  # refuse before creating anything if the address is someone else's
            self._require_free_addr(cidr, netns)
        ifindex = ob.bridge_add(name, mac=mac, netns=netns)
        self._add({"kind": "link", "name": name, "netns": netns, "ifindex": ifindex, "type": "bridge"})
        if cidr is not None:
            self.addr(name, cidr, netns=netns)
        return ifindex

    def veth(
        self,
        name: str,
        peer: str,
        *,
        netns: str | None = None,
        peer_netns: str | None = None,
        master: str | None = None,
        peer_master: str | None = None,
        peer_cidr: str | None = None,
    ) -> int:
        """Create veth ``name`` (in ``netns``, on bridge ``master``) <-> ``peer`` (in ``peer_netns``, with
        ``peer_cidr``, on ``peer_master``), both up; returns ``name``'s ifindex."""
        self._check()
        pns = peer_netns if peer_netns is not None else netns
        ifindex = ob.veth_add(name, peer, peer_netns=peer_netns, netns=netns)
        self._add({"kind": "link", "name": name, "netns": netns, "ifindex": ifindex, "type": "veth", "peer": peer,
                   "peer_netns": pns})
        if master:
            ob.link_set_master(name, master, netns=netns)
        if peer_master:
            ob.link_set_master(peer, peer_master, netns=pns)
        if peer_cidr:
            self.addr(peer, peer_cidr, netns=pns)
        ob.link_set_state(peer, True, netns=pns)
        ob.link_set_state(name, True, netns=netns)
        return ifindex

    def _require_free_addr(self, cidr: str, netns: str | None) -> None:
        want = cidr.split("/")[0]
        for dev, have in ob.addrs(netns):
            if have.split("/")[0] == want:
                raise HostNetError(f"address {want} is already in use on {dev}{' in ' + netns if netns else ''} (not ours)")

    def addr(self, dev: str, cidr: str, *, netns: str | None = None) -> None:
        """Add ``cidr`` on ``dev`` (a link of this record) and record it.

        The link answers ARP only for its own addresses and asks with one of them (``arp_ignore=1``,
        ``arp_announce=2``): a joined lab puts the host's lab bridge and its cluster link on one L2 segment, and
        with the kernel's defaults the lab bridge also answered for the cluster link's address, so the apiserver's
        replies to the host went through the lab (lost whenever the lab went down or had a fault in force). Both
        settings go with the link, so nothing is recorded for them."""
        self._check()
        if not self.owns_link(dev, netns):
            raise HostNetError(f"refusing to add {cidr} to {dev}: not a link sipfleet created")
        ob.set_link_sysctl(dev, "arp_ignore", "1", netns=netns)
        ob.set_link_sysctl(dev, "arp_announce", "2", netns=netns)
        ob.addr_add(dev, cidr, netns=netns)
        self._add({"kind": "addr", "dev": dev, "cidr": cidr, "netns": netns})

    def release_addr(self, dev: str, cidr: str, *, netns: str | None = None) -> bool:
        """Remove an address this record added; True if it was there."""
        if self.find("addr", dev=dev, cidr=cidr, netns=netns) is None:
            raise HostNetError(f"address {cidr} on {dev} is not one sipfleet added")
        gone = ob.addr_delete(dev, cidr, netns=netns)
        self.forget("addr", dev=dev, cidr=cidr, netns=netns)
        return gone

    def nft_table(self, family: str, name: str, script: str, *, netns: str | None = None) -> None:
        """Load ``script`` (which must create/replace table ``family name``) and record that table."""
        self._check()
        if self.find("nft", family=family, name=name, netns=netns) is None:
            if (family, name) in ob.nft_tables(netns):
                raise HostNetError(f"nftables table {family} {name} already exists{' in ' + netns if netns else ''} (not ours)")
            ob.nft_apply(script, netns=netns)
            self._add({"kind": "nft", "family": family, "name": name, "netns": netns})
        else:
            ob.nft_apply(script, netns=netns)

    def drop_nft_table(self, family: str, name: str, *, netns: str | None = None) -> bool:
        if self.find("nft", family=family, name=name, netns=netns) is None:
            return False
        gone = ob.nft_delete_table(family, name, netns=netns)
        self.forget("nft", family=family, name=name, netns=netns)
        return gone

    def sysctl(self, dev: str, key: str, value: str, *, family: str = "ipv4", netns: str | None = None) -> None:
        """Set ``net.<family>.conf.<dev>.<key>`` on a link of this record (the old value is recorded)."""
        self._check()
        if not self.owns_link(dev, netns):
            raise HostNetError(f"refusing to change {family}.conf.{dev}.{key}: {dev} is not a link sipfleet created")
        old = ob.set_link_sysctl(dev, key, value, family=family, netns=netns)
        if self.find("sysctl", dev=dev, key=key, family=family, netns=netns) is None:
            self._add({"kind": "sysctl", "dev": dev, "key": key, "family": family, "netns": netns, "old": old})

    # ------------------------------------------------------------------ removing
    def teardown(self) -> list[str]:
        """Remove everything recorded, newest first; returns the problems (what is left stays recorded)."""
        ours = self.netns_names()
        host_links = {(e["name"], e["netns"]) for e in self.entries if e["kind"] == "link"}
        left: list[dict[str, Any]] = []
        problems: list[str] = []
        for e in reversed(list(self.entries)):
            ns = e.get("netns")
            try:
                if e["kind"] == "netns":
                    pids = ob.netns_pids(e["name"]) if ob.netns_inode(e["name"]) == e["inode"] else []
                    if pids:
                        raise HostNetError(f"network namespace {e['name']} still holds processes {pids[:8]}: not deleted")
                    ob.netns_delete(e["name"], inode=e["inode"])
                elif ns in ours:
                    continue  # goes with its netns
                elif e["kind"] == "link":
                    ob.link_delete(e["name"], netns=ns, ifindex=e["ifindex"])
                elif e["kind"] == "addr" and (e["dev"], ns) not in host_links:
                    ob.addr_delete(e["dev"], e["cidr"], netns=ns)
                elif e["kind"] == "nft":
                    ob.nft_delete_table(e["family"], e["name"], netns=ns)
                elif e["kind"] == "sysctl" and (e["dev"], ns) not in host_links and ob.link(e["dev"], ns) is not None:
                    ob.set_link_sysctl(e["dev"], e["key"], e["old"], family=e["family"], netns=ns)
            except HostNetError as err:
                problems.append(str(err))
                left.append(e)
        self.entries = list(reversed(left))
        self._save()
        return problems


# ---------------------------------------------------------------------------------------------- join


def join(owned: Owned, lab_slot: int, cluster_netns: str, cluster_slot: int, *, cluster_bridge: str = "cbr0") -> str:
    """Join lab ``lab_slot``'s bridge and ``cluster_bridge`` in ``cluster_netns`` at L2 (idempotent); returns
    the lab-bridge end's name. Recorded in ``owned``."""
    host_end, peer = plan.join_links(lab_slot, cluster_slot)
    bridge = plan.lab_net(lab_slot).bridge
    if ob.link(bridge) is None:
        raise HostNetError(f"lab slot {lab_slot} has no bridge {bridge} (is the lab up?)")
    if not ob.netns_exists(cluster_netns):
        raise HostNetError(f"cluster network namespace {cluster_netns} does not exist (is the cluster up?)")
    if ob.link(cluster_bridge, cluster_netns) is None:
        raise HostNetError(f"no bridge {cluster_bridge} in {cluster_netns}")
    existing = ob.link(host_end)
    if existing is not None:
        if existing.get("master") == bridge:
            return host_end  # already joined (by this owner or the other side)
        raise HostNetError(f"link {host_end} exists but is not on {bridge} (not ours)")
    owned.veth(host_end, peer, peer_netns=cluster_netns, master=bridge, peer_master=cluster_bridge)
    return host_end


def unjoin(lab_slot: int, cluster_slot: int, owned: Owned | None = None) -> bool:
    """Remove the join between lab ``lab_slot`` and cluster ``cluster_slot``; True if it existed."""
    host_end, _ = plan.join_links(lab_slot, cluster_slot)
    cur = ob.link(host_end)
    gone = False
    if cur is not None and cur.get("master") in (plan.lab_net(lab_slot).bridge, None):
        gone = ob.link_delete(host_end)
    if owned is not None:
        owned.forget("link", name=host_end, netns=None)
    return gone


def _unjoin_matching(pattern: re.Pattern[str]) -> list[str]:
    out = []
    for ln in ob.links():
        name = ln.get("ifname", "")
        if pattern.match(name) and ob.link_delete(name, ifindex=ln.get("ifindex")):
            out.append(name)
    return out


def unjoin_lab(lab_slot: int) -> list[str]:
    """Remove every join of lab ``lab_slot`` (whoever made it); returns the links deleted."""
    plan.lab_net(lab_slot)
    return _unjoin_matching(re.compile(rf"^sfj{lab_slot}c\d+$"))


def unjoin_cluster(cluster_slot: int) -> list[str]:
    """Remove every join of cluster ``cluster_slot`` (whoever made it); returns the links deleted."""
    plan.cluster_net(cluster_slot, "x")
    return _unjoin_matching(re.compile(rf"^sfj\d+c{cluster_slot}$"))
