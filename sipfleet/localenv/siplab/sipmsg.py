"""Just enough SIP for the lab's own SIP code (the scripted registrar, the raw test client): parse a message,
frame a stream, pick URIs out of headers, digest authentication (RFC 2617/3261 MD5, ``qop=auth``). Pure.

Deliberately small and strict where it matters to the lab: a message whose start line or header block cannot be
split is refused (:class:`SipParseError`); header values are kept verbatim, in order, with compact forms
(``v``, ``f``, ``t``, ``i``, ``m``, ``l``) mapped to their full names.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact", "l": "content-length",
           "k": "supported", "c": "content-type", "s": "subject", "e": "content-encoding"}
MAX_HEADER_BLOCK = 65536


class SipParseError(ValueError):
    """Not a SIP message the lab can read."""


@dataclass
class SipMessage:
    """A request (``method``, ``ruri``) or a response (``status``, ``reason``)."""

    method: str = ""
    ruri: str = ""
    status: int = 0
    reason: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)  # (name as received, value), in order
    body: bytes = b""
    raw: bytes = field(default=b"", repr=False)  # the whole message as received

    @property
    def is_request(self) -> bool:
        return bool(self.method)

    def all(self, name: str) -> list[str]:
        """Every value of header ``name`` (case-insensitive, compact forms too), in order."""
        key = canonical(name)
        return [v for n, v in self.headers if canonical(n) == key]

    def get(self, name: str, default: str = "") -> str:
        vals = self.all(name)
        return vals[0] if vals else default

    def has(self, name: str) -> bool:
        return bool(self.all(name))


def canonical(name: str) -> str:
    n = name.strip().lower()
    return COMPACT.get(n, n)


def parse(data: bytes) -> SipMessage:
    """Parse one whole message (headers and ``Content-Length`` bytes of body, or all that follows)."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise SipParseError("no end of headers")
    lines = head.decode("utf-8", errors="replace").split("\r\n")
    start, rest = lines[0], lines[1:]
    msg = SipMessage(raw=data)
    if start.startswith("SIP/2.0 "):
        parts = start.split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise SipParseError(f"bad status line {start[:80]!r}")
        msg.status, msg.reason = int(parts[1]), parts[2] if len(parts) > 2 else ""
    else:
        parts = start.split(" ")
        if len(parts) != 3 or parts[2] != "SIP/2.0" or not re.fullmatch(r"[A-Za-z]+", parts[0]):
            raise SipParseError(f"bad request line {start[:80]!r}")
        msg.method, msg.ruri = parts[0].upper(), parts[1]
    for line in rest:
        if line[:1] in (" ", "\t") and msg.headers:  # folded continuation
            n, v = msg.headers[-1]
            msg.headers[-1] = (n, f"{v} {line.strip()}")
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise SipParseError(f"bad header line {line[:80]!r}")
        msg.headers.append((name.strip(), value.strip()))
    clen = msg.get("content-length")
    msg.body = body[: int(clen)] if clen.isdigit() else body
    return msg


def frame(buf: bytes) -> tuple[bytes | None, bytes]:
    """Split the first message off a stream buffer: (message or None if incomplete, rest). A CRLF keepalive
    ping (``\\r\\n\\r\\n``, RFC 5626) comes out as itself; lone CRLFs between messages (pongs) are dropped."""
    if buf.startswith(b"\r\n\r\n"):
        return b"\r\n\r\n", buf[4:]
    if buf in (b"\r", b"\r\n", b"\r\n\r"):
        return None, buf  # perhaps the start of a ping
    buf = buf.lstrip(b"\r\n")
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > MAX_HEADER_BLOCK:
            raise SipParseError("header block too large")
        return None, buf
    m = re.search(rb"\r\n(?:content-length|l)[ \t]*:[ \t]*(\d+)", buf[:end], re.I)
    total = end + 4 + (int(m.group(1)) if m else 0)
    if len(buf) < total:
        return None, buf
    return buf[:total], buf[total:]


def header_uri(value: str) -> str:
    """The URI of a From/To/Contact-like value: inside ``<>`` if present, else up to the first ``;``."""
    lt, gt = value.find("<"), value.find(">")
    if 0 <= lt < gt:
        return value[lt + 1 : gt].strip()
    return value.split(";", 1)[0].strip()


def header_param(value: str, name: str) -> str | None:
    """A ``;name=value`` parameter of a header value (after any ``<uri>``), or None."""
    tail = value[value.find(">") + 1 :] if ">" in value else value.split(";", 1)[1] if ";" in value else ""
    for p in tail.split(";"):
        k, _, v = p.partition("=")
        if k.strip().lower() == name.lower():
            return v.strip()
    return None


def cseq_number(msg: SipMessage) -> int:
    first = msg.get("cseq").split(" ", 1)[0]
    return int(first) if first.isdigit() else 0


# ------------------------------------------------------------------------------------------------- digest


def md5(s: str) -> str:
    return hashlib.md5(s.encode()).hexdigest()


def parse_digest(value: str) -> dict[str, str]:
    """``Digest k=v, k="v"`` -> {k: v} (keys lower-case); {} when not a Digest value."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        return {}
    return {k.lower(): quoted if quoted or bare == "" else bare
            for k, quoted, bare in re.findall(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]+))', rest)}


def digest_response(ha1: str, method: str, uri: str, nonce: str, *, qop: str = "", nc: str = "",
                    cnonce: str = "") -> str:
    ha2 = md5(f"{method}:{uri}")
    if qop:
        return md5(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return md5(f"{ha1}:{nonce}:{ha2}")


def digest_valid(params: dict[str, str], ha1: str | None, method: str, realm: str) -> bool:
    """Whether digest credentials ``params`` are right for ``ha1`` (the user's md5(user:realm:password))."""
    if not ha1 or params.get("realm") != realm or not params.get("nonce") or not params.get("response"):
        return False
    want = digest_response(ha1, method, params.get("uri", ""), params["nonce"], qop=params.get("qop", ""),
                           nc=params.get("nc", ""), cnonce=params.get("cnonce", ""))
    return want == params["response"].lower()


def authorization(username: str, password: str, realm: str, method: str, uri: str, nonce: str, *,
                  qop: str = "", nc: str = "00000001", cnonce: str = "0a4f113b", opaque: str = "") -> str:
    """The ``Digest ...`` credentials a client sends (for the lab's raw test client)."""
    ha1 = md5(f"{username}:{realm}:{password}")
    resp = digest_response(ha1, method, uri, nonce, qop=qop, nc=nc if qop else "", cnonce=cnonce if qop else "")
    out = f'Digest username="{username}", realm="{realm}", nonce="{nonce}", uri="{uri}", response="{resp}", algorithm=MD5'
    if qop:
        out += f", qop={qop}, nc={nc}, cnonce=\"{cnonce}\""
    if opaque:
        out += f', opaque="{opaque}"'
    return out


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value (Contact, Route, Via) at top level, elements kept verbatim."""
    parts: list[str] = []
    buf: list[str] = []
    depth, quoted = 0, False
    for ch in value:
        if ch == '"' and depth == 0:
            quoted = not quoted
        elif ch == "<" and not quoted:
            depth += 1
        elif ch == ">" and not quoted and depth:
            depth -= 1
        if ch == "," and not depth and not quoted:
            parts.append("".join(buf).strip())
            buf = []
        else:
            buf.append(ch)
    parts.append("".join(buf).strip())
    return [p for p in parts if p]
