"""The scripted registrar's responses, rendered from a request and an :class:`~.answers.Answer`. Pure.

A response copies the request's Via headers (the top one gets ``received`` and ``rport`` filled in, RFC 3581),
From, To (with a tag added), Call-ID and CSeq, then the scripted headers in a fixed order, ``Server:
sipfleet-lab-S`` and ``Content-Length: 0``. A 200 to REGISTER echoes the request's Contacts with
``;expires=<granted>`` (none for an un-REGISTER) unless the answer says otherwise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .answers import Answer
from .sipmsg import SipMessage, header_param, split_list

DEFAULT_EXPIRES = 300
MAX_GRANT = 3600


@dataclass(frozen=True)
class Context:
    """Where the request came from and what the registrar knows about the lab."""

    transport: str  # udp | tcp | tls
    src_ip: str
    src_port: int
    to_tag: str
    realm: str = ""
    nonce: str = ""
    targets: dict[str, str] = field(default_factory=dict)  # P/R/E/S -> "ip:port" (udp/tcp); see target_uri
    tls_targets: dict[str, str] = field(default_factory=dict)  # P/R/E/S -> "ip:tls_port"
    edge: str = ""  # E's ip:port, base of generated Service-Route URIs


def requested_expires(req: SipMessage) -> int | None:
    """The expiry the REGISTER asks for: the first Contact's ``expires`` parameter, else the Expires header."""
    for c in split_list(",".join(req.all("contact"))):
        v = header_param(c, "expires")
        if v is not None and v.isdigit():
            return int(v)
    e = req.get("expires")
    return int(e) if e.isdigit() else None


def is_unregister(req: SipMessage) -> bool:
    contacts = split_list(",".join(req.all("contact")))
    return contacts == ["*"] or (bool(contacts) and requested_expires(req) == 0)


def granted(req: SipMessage, a: Answer) -> int:
    if a.expires is not None:
        return a.expires
    want = requested_expires(req)
    return DEFAULT_EXPIRES if want is None else min(want, MAX_GRANT)


def _with_expires(contact: str, expires: int) -> str:
    """A Contact element with its ``expires`` header parameter set (URI parameters untouched)."""
    if ">" in contact:
        uri_part, tail = contact[: contact.rindex(">") + 1], contact[contact.rindex(">") + 1 :]
    else:
        uri_part, tail = f"<{contact.split(';', 1)[0]}>", (";" + contact.split(";", 1)[1]) if ";" in contact else ""
    tail = re.sub(r";\s*expires\s*=\s*[^;]*", "", tail, flags=re.I)
    return f"{uri_part}{tail};expires={expires}"


def target_uri(target: str, ctx: Context) -> str:
    """A 3xx Contact: a lab host's registrar URI (over the request's transport) or a URI given as is."""
    name = "S" if target == "self" else target
    if name not in ctx.targets:
        return target
    if ctx.transport == "tls":
        return f"sip:{ctx.tls_targets[name]};transport=tls"
    return f"sip:{ctx.targets[name]}" + (";transport=tcp" if ctx.transport == "tcp" else "")


def service_route_uris(a: Answer, ctx: Context) -> list[str]:
    gen = [f"sip:{ctx.edge};lr;srn={i}" for i in range(1, a.sr_count + 1)]
    return list(a.service_routes) + gen


def _vias(req: SipMessage, ctx: Context) -> list[str]:
    vias = req.all("via")
    if not vias:
        return []
    first = split_list(vias[0])
    top = first[0]
    top = re.sub(r";\s*received=[^;]*", "", top)
    top += f";received={ctx.src_ip}"
    if re.search(r";\s*rport(?=;|$)", top):
        top = re.sub(r";\s*rport(?=;|$)", f";rport={ctx.src_port}", top)
    first[0] = top
    return [", ".join(first)] + vias[1:]


def render(req: SipMessage, a: Answer, ctx: Context, *, code: int | None = None, reason: str = "") -> bytes:
    """The response to ``req`` for answer ``a`` (``code``/``reason`` override it: challenges, 403s)."""
    status = code if code is not None else a.code
    assert status is not None, "silence is not rendered"
    lines = [f"SIP/2.0 {status} {reason or (a.reason_text if code is None else '')}".rstrip()]
    lines += [f"Via: {v}" for v in _vias(req, ctx)]
    lines.append(f"From: {req.get('from')}")
    to = req.get("to")
    lines.append(f"To: {to}" if header_param(to, "tag") else f"To: {to};tag={ctx.to_tag}")
    lines.append(f"Call-ID: {req.get('call-id')}")
    lines.append(f"CSeq: {req.get('cseq')}")
    if code in (401, 407):
        hdr = "WWW-Authenticate" if code == 401 else "Proxy-Authenticate"
        lines.append(f'{hdr}: Digest realm="{ctx.realm}", nonce="{ctx.nonce}", qop="auth", algorithm=MD5')
    elif code is None:
        lines += _scripted_headers(req, a, ctx, status)
    lines.append("Server: sipfleet-lab-S")
    return _finish(lines, a.pad if code is None else 0)


def _scripted_headers(req: SipMessage, a: Answer, ctx: Context, status: int) -> list[str]:
    out: list[str] = []
    big = ["X-Siplab-Big: " + "b" * a.big_header] if a.big_header else []
    if a.big_header_at == "start":
        out += big
    if 300 <= status < 400:
        out.append(f"Contact: <{target_uri(a.contact, ctx)}>")
    elif a.contact.startswith("raw:"):
        out.append(f"Contact: {a.contact[4:].replace('{S}', ctx.targets.get('S', ''))}")
    elif 200 <= status < 300 and req.method == "REGISTER":
        exp = granted(req, a)
        if a.contact == "echo" and not is_unregister(req):
            out += [f"Contact: {_with_expires(c, exp)}" for c in split_list(",".join(req.all("contact")))]
        out.append(f"Expires: {exp}")
    srs = service_route_uris(a, ctx)
    if srs and a.sr_style == "one":
        out.append("Service-Route: " + ", ".join(f"<{u}>" for u in srs))
    else:
        out += [f"Service-Route: <{u}>" for u in srs]
    if a.retry_after is not None:
        out.append(f"Retry-After: {a.retry_after}")
    if a.min_expires is not None:
        out.append(f"Min-Expires: {a.min_expires}")
    if a.big_header_at == "end":
        out += big
    out += list(a.headers)
    return out


def _finish(lines: list[str], pad: int) -> bytes:
    tail = "Content-Length: 0\r\n\r\n"
    msg = "\r\n".join(lines) + "\r\n"
    short = pad - len(msg.encode()) - len(tail)
    if short > 0:
        filler = "X-Siplab-Pad: "
        msg += filler + "p" * max(1, short - len(filler) - 2) + "\r\n"
    return (msg + tail).encode()
