"""The kubelet's read-only log endpoint, so ``kubectl logs`` works against the node runner.

The apiserver proxies ``kubectl logs`` to ``https://<node InternalIP>:<daemonEndpoints.kubeletEndpoint.Port>/
containerLogs/<ns>/<pod>/<container>``. This server answers that one path from the log files (and /healthz);
exec, attach and port-forward are not served. It listens on 127.0.0.1 only, with a throwaway self-signed
certificate (the local apiserver does not verify kubelet certificates: no --kubelet-certificate-authority).
"""

from __future__ import annotations

import datetime as dt
import http.server
import logging
import os
import ssl
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Callable

log = logging.getLogger("sipfleet.noderunner.logs")


def _self_signed(cert: Path, key: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    k = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sipfleet-node-runner")])
    now = dt.datetime.now(dt.timezone.utc)
    c = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(k.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(k, hashes.SHA256())
    )
    key.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    os.chmod(key, 0o600)
    cert.write_bytes(c.public_bytes(serialization.Encoding.PEM))


def _tail(data: bytes, lines: int) -> bytes:
    if lines <= 0:
        return b""
    parts = data.splitlines(keepends=True)
    return b"".join(parts[-lines:])


class LogServer:
    def __init__(self, state_dir: Path, find_log: Callable[[str, str, str, bool], Path],
                 is_running: Callable[[str, str, str], bool], host: str = "127.0.0.1"):
        self.state_dir = state_dir
        self.find_log = find_log
        self.is_running = is_running
        cert, key = state_dir / "kubelet-serving.crt", state_dir / "kubelet-serving.key"
        if not (cert.exists() and key.exists()):
            _self_signed(cert, key)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):  # noqa: D401 - quiet
                log.debug("%s " + fmt, self.client_address[0], *args)

            def _text(self, code: int, body: str) -> None:
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802
                url = urllib.parse.urlsplit(self.path)
                parts = [urllib.parse.unquote(p) for p in url.path.split("/") if p]
                if parts == ["healthz"]:
                    return self._text(200, "ok")
                if len(parts) != 4 or parts[0] != "containerLogs":
                    return self._text(404, "the node runner serves only /containerLogs/<ns>/<pod>/<container>\n")
                _, ns, pod, container = parts
                q = urllib.parse.parse_qs(url.query)
                flag = lambda k: (q.get(k) or ["false"])[0].lower() in ("true", "1")  # noqa: E731
                path = server.find_log(ns, pod, container, flag("previous"))
                if not path.exists():
                    return self._text(404, f"no log for container {container} of pod {ns}/{pod}\n")
                try:
                    server.stream(self, path, ns, pod, container, flag("follow"),
                                  int((q.get("tailLines") or ["-1"])[0]), int((q.get("limitBytes") or ["-1"])[0]))
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                    pass

        self.httpd = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="log-server", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()

    def stream(self, h, path: Path, ns: str, pod: str, container: str, follow: bool, tail: int, limit: int) -> None:
        with open(path, "rb") as f:
            data = f.read()
            if tail >= 0:
                data = _tail(data, tail)
            if limit >= 0:
                data = data[:limit]
            h.send_response(200)
            h.send_header("Content-Type", "text/plain; charset=utf-8")
            if not follow:
                h.send_header("Content-Length", str(len(data)))
                h.end_headers()
                h.wfile.write(data)
                return
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()

            def chunk(b: bytes) -> None:
                if b:
                    h.wfile.write(b"%x\r\n%s\r\n" % (len(b), b))
                    h.wfile.flush()

            chunk(data)
            ino = os.fstat(f.fileno()).st_ino
            idle = 0.0
            while True:
                b = f.read(65536)
                if b:
                    chunk(b)
                    idle = 0.0
                    continue
                time.sleep(0.25)
                idle += 0.25
                try:
                    rotated = os.stat(path).st_ino != ino
                except OSError:
                    rotated = True
                if rotated or (idle >= 1.0 and not self.is_running(ns, pod, container)):
                    chunk(f.read())
                    break
            h.wfile.write(b"0\r\n\r\n")
