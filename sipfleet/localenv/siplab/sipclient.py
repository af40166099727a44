"""A raw-socket SIP client for tests and checks: REGISTER (and OPTIONS) over UDP, TCP or TLS from a given local
address, one request at a time, the answers read back as :class:`~.sipmsg.SipMessage`.

No transaction layer: a request is sent once (``send`` again for a retransmission), provisional answers are
skipped, and a missing final answer is ``None`` after ``timeout``. TLS uses Python's ``ssl`` (OpenSSL 3 on
Debian 12) with the context the caller gives (verify against ``lab.ca_pem()``, or the wrong CA to see a
refusal: the handshake's ``ssl.SSLCertVerificationError`` propagates from :meth:`SipClient.connect`).
"""

from __future__ import annotations

import socket
import ssl
import time
import uuid
from dataclasses import dataclass, field

from .sipmsg import SipMessage, SipParseError, authorization, frame, parse, parse_digest


@dataclass
class Request:
    """A request the client built and sent (its identifiers, to match answers and wire records)."""

    method: str
    call_id: str
    cseq: int
    branch: str
    data: bytes = field(repr=False, default=b"")
    local: tuple[str, int] = ("", 0)  # the client's address it was sent from


class SipClient:
    """One socket (UDP) or connection (TCP/TLS) from ``local_ip`` to ``server`` (ip, port)."""

    def __init__(self, local_ip: str, server: tuple[str, int], transport: str = "udp", *,
                 ssl_context: ssl.SSLContext | None = None, server_hostname: str | None = None,
                 timeout: float = 5.0) -> None:
        self.local_ip, self.server, self.transport = local_ip, server, transport.lower()
        if self.transport not in ("udp", "tcp", "tls"):
            raise ValueError("transport must be udp, tcp or tls")
        self.ssl_context, self.server_hostname, self.timeout = ssl_context, server_hostname, timeout
        self.sock: socket.socket | None = None
        self._buf = b""

    # ---------------------------------------------------------------- socket
    def connect(self) -> "SipClient":
        if self.sock is not None:
            return self
        if self.transport == "udp":
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((self.local_ip, 0))
            s.connect(self.server)
        else:
            s = socket.create_connection(self.server, timeout=self.timeout, source_address=(self.local_ip, 0))
            if self.transport == "tls":
                ctx = self.ssl_context or ssl.create_default_context()
                try:
                    s = ctx.wrap_socket(s, server_hostname=self.server_hostname or self.server[0])
                except BaseException:
                    s.close()
                    raise
        s.settimeout(self.timeout)
        self.sock = s
        return self

    @property
    def local(self) -> tuple[str, int]:
        assert self.sock is not None
        return self.sock.getsockname()[:2]

    def tls_info(self) -> tuple[str, str]:
        """(protocol version, cipher) of the TLS connection."""
        assert isinstance(self.sock, ssl.SSLSocket)
        return self.sock.version() or "", (self.sock.cipher() or ("",))[0]

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def __enter__(self) -> "SipClient":
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.connect()
        assert self.sock is not None
        if self.transport == "udp":
            self.sock.send(data)
        else:
            self.sock.sendall(data)

    def recv(self, timeout: float | None = None) -> SipMessage | None:
        """The next message from the server (None at timeout or when the connection closes)."""
        self.connect()
        assert self.sock is not None
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            if self.transport != "udp":
                msg, self._buf = frame(self._buf)
                if msg is not None:
                    if msg.strip(b"\r\n"):
                        return parse(msg)
                    continue
            try:
                data = self.sock.recv(65535)
            except (socket.timeout, TimeoutError):
                return None
            if not data:
                return None
            if self.transport == "udp":
                try:
                    return parse(data)
                except SipParseError:
                    continue
            self._buf += data

    # ---------------------------------------------------------------- requests
    def build(self, method: str, ruri: str, *, user: str, domain: str, route: str | None = None,
              expires: int | None = 300, contact: str | None = None, call_id: str | None = None, cseq: int = 1,
              headers: tuple[str, ...] = (), from_tag: str | None = None) -> Request:
        self.connect()
        lip, lport = self.local
        branch = "z9hG4bK" + uuid.uuid4().hex[:16]
        call_id = call_id or f"siplab-client-{uuid.uuid4().hex[:12]}"
        via_t = {"udp": "UDP", "tcp": "TCP", "tls": "TLS"}[self.transport]
        tparam = "" if self.transport == "udp" else f";transport={self.transport}"
        contact = contact or f"<sip:{user}@{lip}:{lport}{tparam}>"
        lines = [f"{method} {ruri} SIP/2.0", f"Via: SIP/2.0/{via_t} {lip}:{lport};branch={branch};rport",
                 "Max-Forwards: 70"]
        if route:
            lines.append(f"Route: {route}")
        lines += [f"From: <sip:{user}@{domain}>;tag={from_tag or uuid.uuid4().hex[:8]}", f"To: <sip:{user}@{domain}>",
                  f"Call-ID: {call_id}", f"CSeq: {cseq} {method}"]
        if method == "REGISTER":
            lines.append(f"Contact: {contact}")
            if expires is not None:
                lines.append(f"Expires: {expires}")
        lines += list(headers) + ["User-Agent: sipfleet-lab-client", "Content-Length: 0", "", ""]
        return Request(method, call_id, cseq, branch, "\r\n".join(lines).encode(), (lip, lport))

    def request(self, req: Request, timeout: float | None = None) -> SipMessage | None:
        """Send ``req`` and return its final answer (provisionals skipped; None at timeout)."""
        self.send(req.data)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            msg = self.recv(max(0.0, deadline - time.monotonic()))
            if msg is None:
                return None
            if msg.get("call-id") == req.call_id and msg.status >= 200:
                return msg

    def register(self, ruri: str, *, user: str, domain: str, password: str | None = None,
                 route: str | None = None, expires: int | None = 300, timeout: float | None = None,
                 headers: tuple[str, ...] = ()) -> list[tuple[Request, SipMessage | None]]:
        """REGISTER; with ``password``, answer one 401/407 challenge (same Call-ID, next CSeq). Every
        (request, final answer) in order."""
        tag = uuid.uuid4().hex[:8]
        req = self.build("REGISTER", ruri, user=user, domain=domain, route=route, expires=expires, headers=headers,
                         from_tag=tag)
        out = [(req, self.request(req, timeout))]
        resp = out[-1][1]
        if password is not None and resp is not None and resp.status in (401, 407):
            hname = "www-authenticate" if resp.status == 401 else "proxy-authenticate"
            ch = parse_digest(resp.get(hname))
            qop = "auth" if "auth" in ch.get("qop", "").split(",") else ""
            cred = authorization(user, password, ch.get("realm", ""), "REGISTER", ruri, ch.get("nonce", ""),
                                 qop=qop, opaque=ch.get("opaque", ""))
            name = "Authorization" if resp.status == 401 else "Proxy-Authorization"
            req2 = self.build("REGISTER", ruri, user=user, domain=domain, route=route, expires=expires,
                              call_id=req.call_id, cseq=req.cseq + 1, headers=(*headers, f"{name}: {cred}"),
                              from_tag=tag)
            out.append((req2, self.request(req2, timeout)))
        return out
