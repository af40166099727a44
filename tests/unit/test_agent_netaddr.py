"""The agent's view of its network: netlink address and link dumps parsed, and the fingerprint that decides when
it calls handleIpChange() (a lost link counts although the IPv4 address stays)."""

from __future__ import annotations

import socket
import struct

from sipfleet_agent import netaddr as na

UP_CARRIER = na.IFF_UP | na.IFF_LOWER_UP | 0x1000 | 0x2  # IFF_UP | LOWER_UP | MULTICAST | BROADCAST


def _msg(mtype: int, body: bytes) -> bytes:
    raw = struct.pack("=LHHLL", 16 + len(body), mtype, 2, 1, 0) + body
    return raw + b"\0" * (-len(raw) % 4)


def _attr(atype: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), atype) + payload
    return raw + b"\0" * (-len(raw) % 4)


def addr_msg(index: int, ip: str, prefix: int, *, local: str | None = None) -> bytes:
    fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
    body = struct.pack("=BBBBL", fam, prefix, 0, 0, index) + _attr(na.IFA_ADDRESS, socket.inet_pton(fam, ip))
    if local:
        body += _attr(na.IFA_LOCAL, socket.inet_pton(fam, local))
    return _msg(na.RTM_NEWADDR, body)


def link_msg(index: int, flags: int) -> bytes:
    return _msg(na.RTM_NEWLINK, struct.pack("=BxHiII", socket.AF_UNSPEC, 1, index, flags, 0) + _attr(3, b"eth0\0"))


DONE = _msg(na.NLMSG_DONE, b"\0\0\0\0")


def test_parse_addresses_prefers_the_local_address_and_stops_at_done():
    chunks = [addr_msg(1, "127.0.0.1", 8) + addr_msg(7, "10.213.2.99", 16, local="10.213.2.13"),
              addr_msg(7, "fe80::1", 64) + DONE]
    assert na.parse_addresses(chunks) == [(1, "127.0.0.1", 8), (7, "10.213.2.13", 16), (7, "fe80::1", 64)]
    assert na.parse_addresses([b"\x03\x00"]) == []  # a truncated header is ignored


def test_parse_links():
    assert na.parse_links([link_msg(1, 0x49) + link_msg(7, UP_CARRIER) + DONE]) == {1: 0x49, 7: UP_CARRIER}


def test_fingerprint_of_a_bound_address_follows_its_link():
    addrs = [(1, "127.0.0.1", 8), (7, "10.213.2.13", 16)]
    up = na.fingerprint("10.213.2.13", addrs, {1: 0x49, 7: UP_CARRIER})
    assert up == ("covered", (7, "10.213.2.13", 16), ("up", "carrier"))
    # `ip link set eth0 down` in the pod: the IPv4 address stays, the link state changes
    down = na.fingerprint("10.213.2.13", addrs, {1: 0x49, 7: UP_CARRIER & ~na.IFF_UP & ~na.IFF_LOWER_UP})
    assert down == ("covered", (7, "10.213.2.13", 16), ("down", "no-carrier")) and down != up
    # the peer of a veth going down: up but no carrier
    no_carrier = na.fingerprint("10.213.2.13", addrs, {7: UP_CARRIER & ~na.IFF_LOWER_UP})
    assert no_carrier[2] == ("up", "no-carrier")
    assert na.fingerprint("10.213.2.13", addrs, {})[2] == ("gone",)
    # other links coming and going do not matter to an agent bound to one address
    assert na.fingerprint("10.213.2.13", addrs, {1: 0, 7: UP_CARRIER, 9: 0}) == up
    assert na.fingerprint("10.213.2.13", [(1, "127.0.0.1", 8)], {1: 0x49}) == ("missing",)
    assert na.fingerprint("not-an-ip", addrs, {}) == ("unparsable", "not-an-ip")


def test_fingerprint_of_a_wildcard_bind_holds_every_non_loopback_address_and_link():
    addrs = [(1, "127.0.0.1", 8), (7, "10.213.2.13", 16), (8, "10.213.3.5", 16)]
    fp = na.fingerprint("0.0.0.0", addrs, {7: UP_CARRIER, 8: UP_CARRIER})
    assert fp == ((7, "10.213.2.13", 16, "up", "carrier"), (8, "10.213.3.5", 16, "up", "carrier"))
    assert na.fingerprint("0.0.0.0", addrs, {7: UP_CARRIER, 8: 0}) != fp


def test_describe_change():
    a = ("covered", (7, "10.213.2.13", 16), ("up", "carrier"))
    b = ("covered", (7, "10.213.2.13", 16), ("down", "no-carrier"))
    assert na.describe_change(a, b) == "link-change"
    assert na.describe_change(a, ("covered", (7, "10.213.2.14", 16), ("up", "carrier"))) == "address-change"
    assert na.describe_change(a, ("missing",)) == "address-change"
    assert na.describe_change(None, a) == "address-change"


def test_this_namespace_dumps():
    addrs = na.local_addresses()
    links = na.link_flags()
    lo = next(i for i, a, _ in addrs if a == "127.0.0.1")
    assert links[lo] & na.IFF_UP
    assert na.address_fingerprint("127.0.0.1") == ("covered", (lo, "127.0.0.1", 8),
                                                   na._link_state(links[lo]))


def test_link_usable():
    assert na.link_usable(("covered", (7, "10.213.2.13", 16), ("up", "carrier")))
    assert not na.link_usable(("covered", (7, "10.213.2.13", 16), ("down", "no-carrier")))
    assert not na.link_usable(("covered", (7, "10.213.2.13", 16), ("up", "no-carrier")))
    assert not na.link_usable(("covered", (7, "10.213.2.13", 16), ("gone",)))
    # no verdict on anything else: an address that went away is an address change (handleIpChange at once)
    assert na.link_usable(("missing",)) and na.link_usable(("error",)) and na.link_usable(())
