"""Local interface addresses through one netlink RTM_GETADDR dump (no subprocess, cheap to poll)."""

from __future__ import annotations

import ipaddress
import os
import socket
import struct

NETLINK_ROUTE = 0
RTM_GETADDR = 22
RTM_NEWADDR = 20
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_DONE = 3
NLMSG_ERROR = 2
IFA_ADDRESS = 1
IFA_LOCAL = 2


def local_addresses() -> list[tuple[int, str, int]]:
    """``[(ifindex, address, prefixlen)]`` for every IPv4 and IPv6 address of this network namespace."""
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    try:
        s.bind((0, 0))
        seq = os.getpid() & 0xFFFF
        req = struct.pack("=LHHLL", 16 + 8, RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
        req += struct.pack("=BBBBL", socket.AF_UNSPEC, 0, 0, 0, 0)
        s.send(req)
        out: list[tuple[int, str, int]] = []
        while True:
            data = s.recv(65536)
            off = 0
            while off + 16 <= len(data):
                length, mtype, _flags, _seq, _pid = struct.unpack_from("=LHHLL", data, off)
                if length < 16:
                    return out
                if mtype == NLMSG_DONE:
                    return out
                if mtype == NLMSG_ERROR:
                    return out
                if mtype == RTM_NEWADDR:
                    family, prefixlen, _f, _scope, index = struct.unpack_from("=BBBBL", data, off + 16)
                    a = off + 16 + 8
                    addr = local = None
                    while a + 4 <= off + length:
                        alen, atype = struct.unpack_from("=HH", data, a)
                        if alen < 4:
                            break
                        payload = data[a + 4 : a + alen]
                        if atype in (IFA_ADDRESS, IFA_LOCAL):
                            try:
                                txt = socket.inet_ntop(family, payload)
                            except (ValueError, OSError):
                                txt = None
                            if atype == IFA_LOCAL:
                                local = txt
                            else:
                                addr = txt
                        a += (alen + 3) & ~3
                    chosen = local or addr
                    if chosen:
                        out.append((index, chosen, prefixlen))
                off += (length + 3) & ~3
    finally:
        s.close()


def address_fingerprint(bound: str) -> tuple:
    """What matters to an agent bound to ``bound``: the interface entry that covers that address.

    For a specific address only the entry covering it counts (other engineers' or pods' addresses
    coming and going on the same interface do not matter); for a wildcard bind every non-loopback
    address counts.
    """
    try:
        addrs = local_addresses()
    except OSError:
        return ("error",)
    if bound in ("", "0.0.0.0", "::"):
        return tuple(sorted((i, a, p) for i, a, p in addrs if not ipaddress.ip_address(a.split("%")[0]).is_loopback))
    try:
        ip = ipaddress.ip_address(bound)
    except ValueError:
        return ("unparsable", bound)
    best: tuple | None = None
    for index, a, p in addrs:
        try:
            net = ipaddress.ip_network(f"{a.split('%')[0]}/{p}", strict=False)
        except ValueError:
            continue
        if ip.version == net.version and ip in net:
            if best is None or p > best[2]:
                best = (index, a, p)
    return ("covered", best) if best else ("missing",)
