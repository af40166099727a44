"""Local interface addresses and link states through netlink dumps (RTM_GETADDR, RTM_GETLINK; no subprocess,
cheap to poll), and the fingerprint of what an agent bound to one address depends on.

A link that goes down keeps its IPv4 addresses (only its routes go), so addresses alone do not show a lost link:
the fingerprint also holds the administrative state (``IFF_UP``) and the carrier (``IFF_LOWER_UP``) of the
interface that carries the bound address. Parsing and the fingerprint are pure functions of the dumps.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct

NETLINK_ROUTE = 0
RTM_NEWLINK = 16
RTM_GETLINK = 18
RTM_NEWADDR = 20
RTM_GETADDR = 22
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_DONE = 3
NLMSG_ERROR = 2
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFF_UP = 0x1
IFF_LOWER_UP = 0x10000

_NLMSG = struct.Struct("=LHHLL")  # nlmsghdr: length, type, flags, seq, pid
_IFADDR = struct.Struct("=BBBBL")  # ifaddrmsg: family, prefixlen, flags, scope, index
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, pad, type, index, flags, change


def _dump(msg_type: int, body: bytes) -> list[bytes]:
    """The raw replies (each ``recv`` chunk) of one netlink dump request, up to NLMSG_DONE/NLMSG_ERROR."""
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    try:
        s.bind((0, 0))
        seq = os.getpid() & 0xFFFF
        s.send(_NLMSG.pack(_NLMSG.size + len(body), msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body)
        chunks: list[bytes] = []
        while True:
            data = s.recv(65536)
            chunks.append(data)
            if any(mtype in (NLMSG_DONE, NLMSG_ERROR) for mtype, _ in _messages(data)) or not data:
                return chunks
    finally:
        s.close()


def _messages(data: bytes):
    """``(type, message bytes incl. header)`` for each netlink message in one chunk."""
    off = 0
    while off + _NLMSG.size <= len(data):
        length, mtype, _flags, _seq, _pid = _NLMSG.unpack_from(data, off)
        if length < _NLMSG.size:
            return
        yield mtype, data[off:off + length]
        off += (length + 3) & ~3


def _attrs(msg: bytes, start: int):
    """``(type, payload)`` of the rtattrs of one message from ``start``."""
    a = start
    while a + 4 <= len(msg):
        alen, atype = struct.unpack_from("=HH", msg, a)
        if alen < 4:
            return
        yield atype, msg[a + 4:a + alen]
        a += (alen + 3) & ~3


def parse_addresses(chunks: list[bytes]) -> list[tuple[int, str, int]]:
    """``[(ifindex, address, prefixlen)]`` from RTM_NEWADDR messages (IFA_LOCAL preferred over IFA_ADDRESS)."""
    out: list[tuple[int, str, int]] = []
    for data in chunks:
        for mtype, msg in _messages(data):
            if mtype != RTM_NEWADDR or len(msg) < _NLMSG.size + _IFADDR.size:
                continue
            family, prefixlen, _f, _scope, index = _IFADDR.unpack_from(msg, _NLMSG.size)
            found: dict[int, str] = {}
            for atype, payload in _attrs(msg, _NLMSG.size + _IFADDR.size):
                if atype in (IFA_ADDRESS, IFA_LOCAL):
                    try:
                        found[atype] = socket.inet_ntop(family, payload)
                    except (ValueError, OSError):
                        pass
            chosen = found.get(IFA_LOCAL) or found.get(IFA_ADDRESS)
            if chosen:
                out.append((index, chosen, prefixlen))
    return out


def parse_links(chunks: list[bytes]) -> dict[int, int]:
    """``{ifindex: flags}`` from RTM_NEWLINK messages."""
    out: dict[int, int] = {}
    for data in chunks:
        for mtype, msg in _messages(data):
            if mtype != RTM_NEWLINK or len(msg) < _NLMSG.size + _IFINFO.size:
                continue
            _family, _type, index, flags, _change = _IFINFO.unpack_from(msg, _NLMSG.size)
            out[index] = flags
    return out


def local_addresses() -> list[tuple[int, str, int]]:
    """``[(ifindex, address, prefixlen)]`` for every IPv4 and IPv6 address of this network namespace."""
    return parse_addresses(_dump(RTM_GETADDR, _IFADDR.pack(socket.AF_UNSPEC, 0, 0, 0, 0)))


def link_flags() -> dict[int, int]:
    """``{ifindex: flags}`` of every link of this network namespace."""
    return parse_links(_dump(RTM_GETLINK, _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0)))


def _link_state(flags: int | None) -> tuple[str, ...]:
    if flags is None:
        return ("gone",)
    return ("up" if flags & IFF_UP else "down", "carrier" if flags & IFF_LOWER_UP else "no-carrier")


def fingerprint(bound: str, addrs: list[tuple[int, str, int]], links: dict[int, int]) -> tuple:
    """What matters to an agent bound to ``bound``, from the dumps: the interface entry covering that address and
    that interface's link state (up/down, carrier).

    For a specific address only the entry covering it counts (other engineers' or pods' addresses coming and
    going on the same interface do not matter); for a wildcard bind every non-loopback address and its link.
    """
    if bound in ("", "0.0.0.0", "::"):
        return tuple(sorted((i, a, p, *_link_state(links.get(i))) for i, a, p in addrs
                            if not ipaddress.ip_address(a.split("%")[0]).is_loopback))
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
    return ("covered", best, _link_state(links.get(best[0]))) if best else ("missing",)


def link_usable(fp: tuple) -> bool:
    """False when the fingerprint of a bound address shows its link down or without carrier (nothing can be
    sent: pjsua's handleIpChange() would fail with "Network is unreachable" and fail the registration)."""
    return not (len(fp) == 3 and fp[0] == "covered" and fp[2] != ("up", "carrier"))


def describe_change(before: tuple | None, after: tuple) -> str:
    """``link-change`` when only a link state differs between two fingerprints of a specific address, else
    ``address-change``."""
    if (before and len(before) == 3 and len(after) == 3 and before[0] == after[0] == "covered"
            and before[1] == after[1] and before[2] != after[2]):
        return "link-change"
    return "address-change"


def address_fingerprint(bound: str) -> tuple:
    """:func:`fingerprint` of this network namespace now (``("error",)`` when netlink fails)."""
    try:
        return fingerprint(bound, local_addresses(), link_flags())
    except OSError:
        return ("error",)
