"""HTTP: /healthz, /readyz, /metrics, GET /status and (opt-in) POST /debug/* hooks for tests and labs."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlparse

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:
    from .supervisor.runtime import Supervisor

LOG = logging.getLogger("sipfleet_agent.http")


def serve(agent: "Supervisor", address: str, port: int, debug_hooks: bool = False) -> ThreadingHTTPServer:
    ballast: list[bytes] = []  # POST /debug/allocate: memory held on purpose (tests of memory limits)

    class Handler(BaseHTTPRequestHandler):
        server_version = "sipfleet-agent"

        def log_message(self, fmt: str, *args: object) -> None:  # quiet: probes every few seconds
            LOG.debug(fmt, *args)

        def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            path = urlparse(self.path).path
            if path == "/healthz":
                ok = agent.alive()
                self._send(200 if ok else 503, b"ok\n" if ok else b"supervisor not alive\n")
            elif path == "/readyz":
                ok = agent.ready()
                self._send(200 if ok else 503, b"ready\n" if ok else b"not ready\n")
            elif path == "/metrics":
                agent.refresh_metrics()
                self._send(200, generate_latest(agent.registry), CONTENT_TYPE_LATEST)
            elif path == "/status":
                try:
                    snap = agent.snapshot()
                except Exception as e:  # noqa: BLE001
                    self._send(503, f"{e}\n".encode())
                    return
                self._send(200, json.dumps(snap).encode(), "application/json")
            else:
                self._send(404, b"not found\n")

        def do_POST(self) -> None:  # noqa: N802
            u = urlparse(self.path)
            if not debug_hooks or not u.path.startswith("/debug/"):
                self._send(404, b"not found\n")
                return
            account = (parse_qs(u.query).get("account") or [None])[0]
            action = u.path[len("/debug/"):]
            if action in ("ip-change", "refresh", "reregister", "repair", "drift"):
                op = (action, None if action == "ip-change" else account)
            elif action == "allocate":  # hold N more MiB, touched (resident): an OOM kill under a memory limit
                mib = int((parse_qs(u.query).get("mib") or ["64"])[0])
                ballast.append(b"\x01" * (mib << 20))
                self._send(202, json.dumps({"action": action, "heldMiB": sum(len(b) for b in ballast) >> 20}).encode(),
                           "application/json")
                return
            else:
                self._send(404, b"unknown debug action\n")
                return
            try:
                result = agent.request(op[0], op[1], 10.0)
            except Exception as e:  # noqa: BLE001
                self._send(500, f"{e}\n".encode())
                return
            self._send(202, json.dumps({"action": action, "result": result}).encode(), "application/json")

    server = ThreadingHTTPServer((address, port), Handler)
    server.daemon_threads = True
    t = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    t.start()
    return server
