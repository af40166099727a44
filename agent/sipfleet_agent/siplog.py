"""Pure helpers around SIP text: parse pjsip's message log, normalise URIs, scrub credentials.

pjsip (``msgLogging`` on, level >= 4) logs every transmitted and received message as one log entry::

    TX 506 bytes Request msg REGISTER/cseq=52301 (tdta0x55c2...) to UDP 127.0.30.9:5060:
    REGISTER sip:lab.test SIP/2.0
    Via: ...
    --end msg--

This runs on every message the agent sends or receives, so the fast path is a couple of ``startswith``
checks and the full parse only looks at the header lines it needs.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

_TX_RE = re.compile(
    r"^TX \d+ bytes Request msg (?P<method>[A-Za-z]+)/cseq=(?P<cseq>\d+) \((?P<tdata>[^)]*)\) "
    r"to (?P<proto>[A-Za-z0-9]+) (?P<dest>\S+?):?$"
)
_RX_RESP_RE = re.compile(
    r"^RX (?P<length>\d+) bytes Response msg (?P<code>\d{3})/(?P<method>[A-Za-z]+)/cseq=(?P<cseq>\d+) "
    r"\((?P<rdata>[^)]*)\) "
    r"from (?P<proto>[A-Za-z0-9]+) (?P<src>\S+?):?$"
)
# Compact header forms (RFC 3261 7.3.3) that matter here: i = Call-ID, f = From, t = To.
_COMPACT = {"i": "call-id", "f": "from", "t": "to", "m": "contact"}
_AUTH_HEADERS = ("authorization", "proxy-authorization")
_SCRUB_RE = re.compile(r"(?im)^((?:proxy-)?authorization[ \t]*:)[^\r\n]*")
_SCRUB_INLINE_RE = re.compile(r'(?i)((?:response|nonce|cnonce)\s*=\s*)"[^"]*"')


@dataclass(frozen=True)
class TxRequest:
    """A request as pjsip put it on the wire."""

    method: str
    cseq: int
    transport: str  # udp/tcp/tls (lower case)
    destination: str  # ip:port
    request_uri: str
    route: tuple[str, ...]
    call_id: str
    from_uri: str
    expires: int | None = None  # Expires header (REGISTER), if any
    contact_expires_zero: bool = False
    tdata: str = ""
    authorized: bool = False  # carries Authorization / Proxy-Authorization (it answers a challenge)


@dataclass(frozen=True)
class RxResponse:
    code: int
    method: str
    cseq: int
    transport: str
    source: str
    call_id: str
    service_route: tuple[str, ...] = field(default_factory=tuple)
    from_uri: str = ""
    length: int = 0  # bytes pjsip received (its "RX N bytes")


def scrub(text: str) -> str:
    """Remove digest credentials (Authorization / Proxy-Authorization values) from SIP text."""
    if "uthorization" not in text and "esponse=" not in text:
        return text
    text = _SCRUB_RE.sub(r"\1 <scrubbed>", text)
    return _SCRUB_INLINE_RE.sub(r'\1"<scrubbed>"', text)


def split_header_values(value: str) -> list[str]:
    """Split a comma-separated header value list, ignoring commas inside <...> and quotes."""
    out: list[str] = []
    depth = 0
    quoted = False
    start = 0
    for i, ch in enumerate(value):
        if ch == '"':
            quoted = not quoted
        elif quoted:
            continue
        elif ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            part = value[start:i].strip()
            if part:
                out.append(part)
            start = i + 1
    part = value[start:].strip()
    if part:
        out.append(part)
    return out


def addr_spec(value: str) -> str:
    """The URI inside a name-addr (``"Bob" <sip:b@x;lr>;p=1`` -> ``sip:b@x;lr``) or a bare addr-spec."""
    value = value.strip()
    lt = value.find("<")
    if lt >= 0:
        gt = value.find(">", lt)
        return value[lt + 1 : gt if gt > 0 else None].strip()
    # bare addr-spec: header params follow the first ';' only for From/To; for Route values the whole
    # thing is the URI (RFC 3261 requires name-addr in Route, so this is a fallback).
    return value


def _headers(lines: list[str], wanted: set[str]) -> dict[str, list[str]]:
    """Header values by lower-case name (compact forms expanded), folded lines joined."""
    found: dict[str, list[str]] = {}
    last: str | None = None
    for line in lines:
        if not line:
            break  # end of headers
        if line[0] in " \t" and last is not None:
            found[last][-1] += " " + line.strip()
            continue
        colon = line.find(":")
        if colon <= 0:
            last = None
            continue
        name = line[:colon].strip().lower()
        name = _COMPACT.get(name, name)
        if name in wanted:
            found.setdefault(name, []).append(line[colon + 1 :].strip())
            last = name
        else:
            last = None
    return found


def header_values(lines: list[str], wanted: set[str]) -> dict[str, list[str]]:
    """Header values by lower-case name of a message's header lines (after the start line)."""
    return _headers(lines, wanted)


def from_header_uri(value: str) -> str:
    """The URI of a From (or To) header value."""
    return _from_uri(value)


def _body_lines(msg: str) -> list[str]:
    nl = msg.find("\n")
    body = msg[nl + 1 :] if nl >= 0 else ""
    end = body.rfind("--end msg--")
    if end >= 0:
        body = body[:end]
    return [ln.rstrip("\r") for ln in body.split("\n")]


def parse_tx_request(msg: str) -> TxRequest | None:
    """Parse one pjsip log entry; a :class:`TxRequest` when it is a transmitted request, else ``None``."""
    if not msg.startswith("TX ") or " Request msg " not in msg[:80]:
        return None
    nl = msg.find("\n")
    first = msg[:nl] if nl >= 0 else msg
    m = _TX_RE.match(first.rstrip())
    if not m:
        return None
    lines = _body_lines(msg)
    if not lines:
        return None
    start = lines[0].split(" ")
    request_uri = start[1] if len(start) >= 2 else ""
    hdrs = _headers(lines[1:], {"route", "call-id", "from", "expires", "contact", *_AUTH_HEADERS})
    route: list[str] = []
    for v in hdrs.get("route", []):
        route.extend(addr_spec(x) for x in split_header_values(v))
    expires = None
    if hdrs.get("expires"):
        try:
            expires = int(hdrs["expires"][0].split()[0])
        except ValueError:
            expires = None
    contact_zero = any(re.search(r"(?i);\s*expires\s*=\s*0\b", c) for c in hdrs.get("contact", []))
    from_v = hdrs.get("from", [""])[0]
    return TxRequest(
        method=m.group("method").upper(),
        cseq=int(m.group("cseq")),
        transport=m.group("proto").lower(),
        destination=m.group("dest").rstrip(":"),
        request_uri=request_uri,
        route=tuple(route),
        call_id=hdrs.get("call-id", [""])[0],
        from_uri=_from_uri(from_v),
        expires=expires,
        contact_expires_zero=contact_zero,
        tdata=m.group("tdata"),
        authorized=any(h in hdrs for h in _AUTH_HEADERS),
    )


def _from_uri(value: str) -> str:
    if "<" in value:
        return addr_spec(value)
    return value.split(";", 1)[0].strip()


def parse_rx_response(msg: str) -> RxResponse | None:
    """Parse one pjsip log entry; an :class:`RxResponse` when it is a received response, else ``None``."""
    if not msg.startswith("RX ") or " Response msg " not in msg[:80]:
        return None
    nl = msg.find("\n")
    first = msg[:nl] if nl >= 0 else msg
    m = _RX_RESP_RE.match(first.rstrip())
    if not m:
        return None
    lines = _body_lines(msg)
    hdrs = _headers(lines[1:], {"call-id", "service-route", "from"})
    return RxResponse(
        code=int(m.group("code")),
        method=m.group("method").upper(),
        cseq=int(m.group("cseq")),
        transport=m.group("proto").lower(),
        source=m.group("src").rstrip(":"),
        call_id=hdrs.get("call-id", [""])[0],
        service_route=tuple(service_route_values(hdrs.get("service-route", []))),
        from_uri=_from_uri(hdrs.get("from", [""])[0]),
        length=int(m.group("length")),
    )


def service_route_values(values: list[str]) -> list[str]:
    out: list[str] = []
    for v in values:
        out.extend(addr_spec(x) for x in split_header_values(v))
    return out


def message_headers(whole_msg: str, wanted: set[str]) -> dict[str, list[str]]:
    """Header values by lower-case name of a whole SIP message (e.g. ``prm.rdata.wholeMsg``; "" has none)."""
    lines = [ln.rstrip("\r") for ln in whole_msg.split("\n")]
    return _headers(lines[1:], wanted)


def service_route_from_message(whole_msg: str) -> list[str]:
    """Service-Route URIs (in order) of a whole SIP message (e.g. ``prm.rdata.wholeMsg``)."""
    return service_route_values(message_headers(whole_msg, {"service-route"}).get("service-route", []))


# --------------------------------------------------------------------------------------------------
# URIs
# --------------------------------------------------------------------------------------------------

_URI_RE = re.compile(r"^(?P<scheme>sips?):(?:(?P<user>[^@]*)@)?(?P<hostport>[^;?]+)(?P<params>;[^?]*)?(?P<headers>\?.*)?$", re.I)


@dataclass(frozen=True)
class SipUri:
    scheme: str
    user: str | None
    host: str
    port: int | None
    params: tuple[tuple[str, str | None], ...]

    def param(self, name: str) -> str | None:
        for k, v in self.params:
            if k == name:
                return v if v is not None else ""
        return None


@functools.lru_cache(maxsize=1024)
def parse_uri(uri: str) -> SipUri | None:
    m = _URI_RE.match(addr_spec(uri).strip())
    if not m:
        return None
    hostport = m.group("hostport")
    port: int | None = None
    if hostport.startswith("["):
        end = hostport.find("]")
        host = hostport[: end + 1]
        rest = hostport[end + 1 :]
        if rest.startswith(":") and rest[1:].isdigit():
            port = int(rest[1:])
    elif hostport.count(":") == 1:
        host, p = hostport.split(":")
        port = int(p) if p.isdigit() else None
    else:
        host = hostport
    params: list[tuple[str, str | None]] = []
    for raw in (m.group("params") or "").split(";"):
        if not raw:
            continue
        if "=" in raw:
            k, v = raw.split("=", 1)
            params.append((k.strip().lower(), v.strip()))
        else:
            params.append((raw.strip().lower(), None))
    return SipUri(m.group("scheme").lower(), m.group("user"), host.lower(), port, tuple(params))


@functools.lru_cache(maxsize=1024)
def normalize_uri(uri: str, default_transport: str | None = None) -> str:
    """A canonical form for comparing route URIs.

    Scheme, host and parameter names are case-insensitive; parameter order does not matter; ``lr``,
    ``lr=on``, ``lr=1``, ``lr=true`` are the same; an explicit default port equals no port; a ``transport``
    parameter equal to ``default_transport`` (the transport the agent uses anyway) equals none.
    """
    u = parse_uri(uri)
    if u is None:
        return uri.strip()
    params: dict[str, str | None] = {}
    for k, v in u.params:
        if k == "lr":
            v = None
        elif k in ("transport", "maddr", "method", "user"):
            v = v.lower() if v else v
        params[k] = v
    transport = params.get("transport")
    if transport is not None and default_transport and transport == default_transport.lower():
        params.pop("transport")
    port = u.port
    default_port = 5061 if (u.scheme == "sips" or (transport or default_transport or "").lower() == "tls") else 5060
    if port == default_port:
        port = None
    hostport = u.host + (f":{port}" if port is not None else "")
    userpart = f"{u.user}@" if u.user else ""
    ps = "".join(f";{k}" + (f"={v}" if v is not None else "") for k, v in sorted(params.items()))
    return f"{u.scheme}:{userpart}{hostport}{ps}"


def routes_equal(a: list[str] | tuple[str, ...], b: list[str] | tuple[str, ...], transport: str | None = None) -> bool:
    if len(a) != len(b):
        return False
    return all(normalize_uri(x, transport) == normalize_uri(y, transport) for x, y in zip(a, b))


def uri_target(uri: str, transport: str | None = None) -> tuple[str, int] | None:
    """(host, port) a URI points at, the port defaulted by scheme and transport (5061 for sips or TLS, else 5060);
    ``None`` for what is not a SIP URI. The host may be a name."""
    u = parse_uri(uri)
    if u is None:
        return None
    t = (u.param("transport") or transport or "udp").lower()
    return u.host.strip("[]"), u.port or (5061 if (u.scheme == "sips" or t == "tls") else 5060)


def uri_hostport(uri: str, transport: str | None = None) -> tuple[str, int] | None:
    """(host, port) a URI points at when its host is an IP literal, else ``None``."""
    target = uri_target(uri, transport)
    return target if target is not None and _is_ip(target[0]) else None


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def with_transport(uri: str, transport: str) -> str:
    """Add ``;transport=<t>`` to a SIP URI that names none (tcp/tls routes must say so for pjsip)."""
    if transport == "udp":
        return uri
    u = parse_uri(uri)
    if u is None or u.param("transport") is not None or u.scheme == "sips":
        return uri
    if "?" in uri:
        base, hdrs = uri.split("?", 1)
        return f"{base};transport={transport}?{hdrs}"
    return f"{uri};transport={transport}"


def same_aor(a: str, b: str) -> bool:
    """Whether two URIs name the same user@host (case-insensitive host, ignoring params)."""
    ua, ub = parse_uri(a), parse_uri(b)
    if ua is None or ub is None:
        return a.strip().lower() == b.strip().lower()
    return (ua.user or "") == (ub.user or "") and ua.host == ub.host and (ua.port or 5060) == (ub.port or 5060)
