"""Network objects, one operation each: namespaces, links (veth, bridge), addresses, routes, nftables tables,
per-interface sysctls, ports; plus the machine-wide slot lock. No bookkeeping here: :mod:`.owned` records what
an owner created. Any ``netns`` argument is a name or a path (see :func:`.base.netns_path`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
from typing import Any

from .base import NETNS_DIR, HostNetError, tool, in_netns, ip, ip_json, netns_path, run

_IFNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")
_SYSCTL_KEY_RE = re.compile(r"^[a-z0-9_]{1,64}$")


# ---------------------------------------------------------------------------------------------- namespaces


def netns_list() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def netns_inode(ns: str) -> int | None:
    """The nsfs inode identifying the netns (None if it does not exist)."""
    try:
        return os.stat(netns_path(ns)).st_ino
    except OSError:
        return None


def netns_exists(name: str) -> bool:
    return netns_inode(name) is not None


def netns_add(name: str) -> int:
    """Create netns ``name`` with its loopback up; returns its inode. Raises if the name is taken."""
    if os.path.exists(netns_path(name)):
        raise HostNetError(f"network namespace {name} already exists and is not ours (`ip netns del {name}` if unused)")
    ip("netns", "add", name)
    ip("link", "set", "lo", "up", netns=name)
    ino = netns_inode(name)
    if ino is None:
        raise HostNetError(f"network namespace {name} vanished right after it was created")
    return ino


def netns_pids(ns: str) -> list[int]:
    """PIDs of the processes whose network namespace is ``ns``."""
    ino = netns_inode(ns)
    out = []
    if ino is None:
        return out
    for d in os.listdir("/proc"):
        if d.isdigit():
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{d}/ns/net").st_ino == ino:
                    out.append(int(d))
    return out


def netns_delete(name: str, inode: int | None = None) -> bool:
    """Delete netns ``name`` (if ``inode`` is given, only if it is still that netns); True if deleted."""
    cur = netns_inode(name)
    if cur is None or (inode is not None and cur != inode):
        return False
    ip("netns", "delete", name)
    return True


# ---------------------------------------------------------------------------------------------- links


def links(netns: str | None = None) -> list[dict[str, Any]]:
    return ip_json("link", "show", netns=netns)


def link(name: str, netns: str | None = None) -> dict[str, Any] | None:
    return next((ln for ln in links(netns) if ln.get("ifname") == name), None)


def _check_ifname(name: str) -> str:
    if not _IFNAME_RE.match(name or ""):
        raise HostNetError(f"bad interface name {name!r} (1-15 letters, digits, '_', '.', '-')")
    return name


def _require_free_link(name: str, netns: str | None) -> None:
    if link(_check_ifname(name), netns) is not None:
        raise HostNetError(f"link {name} already exists{' in ' + netns if netns else ''} and is not ours")


def bridge_add(name: str, *, mac: str | None = None, netns: str | None = None) -> int:
    """Create bridge ``name`` (STP off, IPv6 off, fixed ``mac`` if given), up; returns its ifindex."""
    _require_free_link(name, netns)
    args = ["link", "add", "name", name] + (["address", mac] if mac else []) + ["type", "bridge", "stp_state", "0"]
    ip(*args, netns=netns)
    set_link_sysctl(name, "disable_ipv6", "1", family="ipv6", netns=netns)
    ip("link", "set", name, "up", netns=netns)
    return int(link(name, netns)["ifindex"])  # type: ignore[index]


def veth_add(name: str, peer: str, *, peer_netns: str | None = None, netns: str | None = None) -> int:
    """Create veth ``name`` <-> ``peer`` (the peer created directly in ``peer_netns``); IPv6 off on both ends,
    both down. Returns ``name``'s ifindex."""
    _require_free_link(name, netns)
    _check_ifname(peer)
    args = ["link", "add", name, "type", "veth", "peer", "name", peer]
    if peer_netns is not None:
        args += ["netns", netns_path(peer_netns)]
    ip(*args, netns=netns)
    set_link_sysctl(name, "disable_ipv6", "1", family="ipv6", netns=netns)
    set_link_sysctl(peer, "disable_ipv6", "1", family="ipv6", netns=peer_netns if peer_netns is not None else netns)
    return int(link(name, netns)["ifindex"])  # type: ignore[index]


def link_delete(name: str, *, netns: str | None = None, ifindex: int | None = None) -> bool:
    """Delete link ``name`` (only if it still has ``ifindex`` when given); True if deleted."""
    cur = link(name, netns)
    if cur is None or (ifindex is not None and int(cur["ifindex"]) != int(ifindex)):
        return False
    ip("link", "delete", name, netns=netns)
    return True


def link_set_state(name: str, up: bool, netns: str | None = None) -> None:
    """``ip link set <name> up|down`` (in ``netns``: a name or a path such as a pod's ``/proc/<pid>/ns/net``)."""
    ip("link", "set", _check_ifname(name), "up" if up else "down", netns=netns)


def link_is_up(name: str, netns: str | None = None) -> bool:
    cur = link(name, netns)
    if cur is None:
        raise HostNetError(f"no link {name}{' in ' + netns if netns else ''}")
    return "UP" in cur.get("flags", [])


def link_set_master(name: str, bridge: str, netns: str | None = None) -> None:
    ip("link", "set", _check_ifname(name), "master", _check_ifname(bridge), netns=netns)


def link_move(name: str, target_netns: str, *, netns: str | None = None) -> None:
    """Move link ``name`` into ``target_netns``."""
    ip("link", "set", _check_ifname(name), "netns", netns_path(target_netns), netns=netns)


# ---------------------------------------------------------------------------------------------- addresses, routes


def addrs(netns: str | None = None) -> list[tuple[str, str]]:
    """Every IPv4/IPv6 address in ``netns`` as (dev, ``ip/prefix``)."""
    out = []
    for ln in ip_json("addr", "show", netns=netns):
        for a in ln.get("addr_info", []):
            out.append((ln.get("ifname", ""), f"{a['local']}/{a['prefixlen']}"))
    return out


def addr_add(dev: str, cidr: str, netns: str | None = None) -> None:
    """Add ``cidr`` to ``dev``; raises if that address is already assigned anywhere in ``netns``."""
    want = cidr.split("/")[0]
    for other_dev, have in addrs(netns):
        if have.split("/")[0] == want:
            raise HostNetError(f"address {want} is already in use on {other_dev}{' in ' + netns if netns else ''} (not ours)")
    ip("addr", "add", cidr, "dev", _check_ifname(dev), netns=netns)


def addr_delete(dev: str, cidr: str, netns: str | None = None) -> bool:
    if (dev, cidr) not in addrs(netns):
        return False
    ip("addr", "del", cidr, "dev", _check_ifname(dev), netns=netns)
    return True


def routes(netns: str | None = None) -> list[dict[str, Any]]:
    return ip_json("route", "show", "table", "all", netns=netns)


# ---------------------------------------------------------------------------------------------- nftables, sysctls


def nft_tables(netns: str | None = None) -> list[tuple[str, str]]:
    """(family, name) of every nftables table in ``netns``."""
    data = json.loads(run([tool("nft"), "-j", "list", "tables"], netns=netns) or "{}")
    return [(t["table"]["family"], t["table"]["name"]) for t in data.get("nftables", []) if "table" in t]


def nft_apply(script: str, netns: str | None = None) -> None:
    """Load an nft script atomically (``nft -f -``): all of it or nothing."""
    run([tool("nft"), "-f", "-"], netns=netns, input=script)


def nft_delete_table(family: str, name: str, netns: str | None = None) -> bool:
    if (family, name) not in nft_tables(netns):
        return False
    run([tool("nft"), "delete", "table", family, name], netns=netns)
    return True


def _sysctl_file(dev: str, key: str, family: str) -> str:
    if family not in ("ipv4", "ipv6") or not _SYSCTL_KEY_RE.match(key):
        raise HostNetError(f"bad sysctl {family}/{key}")
    return f"/proc/sys/net/{family}/conf/{_check_ifname(dev)}/{key}"


def set_link_sysctl(dev: str, key: str, value: str, *, family: str = "ipv4", netns: str | None = None) -> str:
    """Set ``net.<family>.conf.<dev>.<key>`` in ``netns``; returns the old value. Callers use it only on
    interfaces they created."""
    path = _sysctl_file(dev, key, family)

    def write() -> str:
        with open(path) as f:
            old = f.read().strip()
        with open(path, "w") as f:
            f.write(str(value))
        return old

    try:
        return in_netns(netns, write)
    except OSError as e:
        raise HostNetError(f"cannot set {path}{' in ' + netns if netns else ''}: {e.strerror}") from None


# ---------------------------------------------------------------------------------------------- sockets


def free_port(ip_addr: str, netns: str | None = None, kinds: tuple[int, ...] = (socket.SOCK_DGRAM, socket.SOCK_STREAM)) -> int:
    """A port free for every socket kind in ``kinds`` on ``ip_addr`` inside ``netns``."""

    def pick() -> int:
        for _ in range(50):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind((ip_addr, 0))
                port = s.getsockname()[1]
            if all(not _bound(ip_addr, port, k) for k in kinds):
                return port
        raise HostNetError(f"no free port on {ip_addr}")

    return in_netns(netns, pick)


def _bound(ip_addr: str, port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as t:
        if kind == socket.SOCK_STREAM:
            t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            t.bind((ip_addr, port))
            return False
        except OSError:
            return True


def port_bound(ip_addr: str, port: int, kind: int = socket.SOCK_DGRAM, netns: str | None = None) -> bool:
    """True when something holds ``ip_addr:port`` (of ``kind``) inside ``netns``."""
    return in_netns(netns, lambda: _bound(ip_addr, port, kind))


def slot_lock():
    """The machine-wide lock held while a slot is chosen and its first link created (labs and clusters): a flock
    on ``/run`` itself (shared.host_lock), so no lock file is left behind. Never nest it with another
    ``host_lock``."""
    from .shared import host_lock

    return host_lock()



