"""One OPTIONS through a route to its first hop, from the supervisor's own socket: does that hop answer?

Failover (:mod:`.failover`) probes the primary route of a group while the group registers elsewhere. The workers
cannot send it: in prevent mode a worker's outbound proxy is the route it is on, fixed for the process. So the
supervisor sends a plain OPTIONS itself, bound to the agent's SIP address (never anywhere else): Request-URI the
registrar, the route as Route headers (loose routing: the first hop pops its own entry and forwards), over the
account's transport (UDP with retransmissions at T1 doubling, TCP, or TLS verified as the account verifies: its CA,
the first hop's name, its client certificate). Any final response, whatever its code, means the first hop answers
(a worker's dead-flow probe counts the same way, worker/probeplan.py). No pjsua2 here.
"""

from __future__ import annotations

import os
import socket
import ssl
import time
from typing import Any

from ..siplog import uri_target

T1 = 0.5
MAX_RESPONSE = 65535


def first_hop(route: list[str], transport: str) -> tuple[str, int]:
    """(host, port) of the route's first entry (the host is also the name TLS verifies)."""
    target = uri_target(route[0], transport)
    if target is None:
        raise ValueError(f"not a SIP URI: {route[0]!r}")
    return target


def options_request(*, registrar: str, route: list[str], transport: str, local: tuple[str, int], token: str) -> bytes:
    """The OPTIONS the probe sends (``token`` makes branch, tag and Call-ID unique)."""
    host, port = local
    via_host = f"[{host}]" if ":" in host else host
    lines = [
        f"OPTIONS {registrar} SIP/2.0",
        f"Via: SIP/2.0/{transport.upper()} {via_host}:{port};branch=z9hG4bK-sfprobe-{token};rport",
        "Max-Forwards: 70",
        *(f"Route: <{r}>" for r in route),
        f"From: <sip:sipfleet-probe@{via_host}>;tag=sfp{token}",
        f"To: <{registrar}>",
        f"Call-ID: sipfleet-probe-{token}",
        "CSeq: 1 OPTIONS",
        "User-Agent: sipfleet-agent (failover probe)",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def final_status(data: bytes, token: str) -> int | None:
    """The status code of a final response to our probe in ``data`` (None: none yet)."""
    text = data.decode("utf-8", "replace")
    for msg in text.split("\r\n\r\n"):
        first, _, headers = msg.lstrip("\r\n").partition("\r\n")
        parts = first.split(" ", 2)
        if len(parts) >= 2 and parts[0] == "SIP/2.0" and parts[1].isdigit() and f"sipfleet-probe-{token}" in headers:
            code = int(parts[1])
            if code >= 200:
                return code
    return None


def probe(*, route: list[str], registrar: str, transport: str, local_address: str, timeout: float,
          tls: Any = None) -> int | None:
    """Send one OPTIONS through ``route``; the final status it got within ``timeout`` seconds, None without one."""
    host, port = first_hop(route, transport)
    token = os.urandom(6).hex()
    family = socket.AF_INET6 if ":" in local_address else socket.AF_INET
    dest = socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM)[0][4]
    deadline = time.monotonic() + timeout
    if transport == "udp":
        return _udp(dest, family, local_address, registrar, route, token, deadline)
    return _stream(dest, family, local_address, registrar, route, transport, token, deadline, host, tls)


def _udp(dest, family, local_address, registrar, route, token, deadline) -> int | None:  # noqa: ANN001
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((local_address, 0))
        req = options_request(registrar=registrar, route=route, transport="udp", local=s.getsockname()[:2],
                              token=token)
        wait = T1
        while True:
            s.sendto(req, dest)
            resend = min(deadline, time.monotonic() + wait)
            wait *= 2
            while (left := resend - time.monotonic()) > 0:
                s.settimeout(left)
                try:
                    data = s.recv(MAX_RESPONSE)
                except socket.timeout:
                    break
                code = final_status(data, token)
                if code is not None:
                    return code
            if time.monotonic() >= deadline:
                return None


def _stream(dest, family, local_address, registrar, route, transport, token, deadline, name, tls) -> int | None:  # noqa: ANN001
    raw = socket.socket(family, socket.SOCK_STREAM)
    s: socket.socket | None = None
    try:
        raw.bind((local_address, 0))
        raw.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            raw.connect(dest)
        except OSError:
            return None  # refused, unreachable, timed out: no answer
        local = raw.getsockname()[:2]  # before a TLS wrap, which takes the socket over
        s = _wrap(raw, name, tls) if transport == "tls" else raw
        if s is None:
            return None
        s.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            s.sendall(options_request(registrar=registrar, route=route, transport=transport, local=local, token=token))
        except OSError:
            return None
        data = b""
        while time.monotonic() < deadline:
            s.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = s.recv(MAX_RESPONSE)
            except (socket.timeout, OSError):
                return None
            if not chunk:
                return None
            data += chunk
            code = final_status(data, token)
            if code is not None:
                return code
        return None
    finally:
        if s is not None and s is not raw:
            s.close()  # the TLS socket (it took the raw one over)
        raw.close()


def _wrap(raw: socket.socket, name: str, tls: Any) -> ssl.SSLSocket | None:
    """The TLS connection the account's own policy would accept (its CA, the first hop's name, its certificate)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls is not None and tls.verify_server:
        ctx.load_verify_locations(cadata=tls.ca_pem)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if tls is not None and tls.cert_pem and tls.key_pem:
        fd = os.memfd_create("sipfleet-probe-client")  # ssl loads a key from a path only: memory, never a file
        try:
            os.write(fd, (tls.cert_pem + "\n" + tls.key_pem).encode())
            ctx.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
    try:
        return ctx.wrap_socket(raw, server_hostname=name)
    except (ssl.SSLError, OSError):
        return None
