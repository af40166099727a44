"""Container probes: httpGet, tcpSocket and exec (exec runs inside the container's mount namespace)."""

from __future__ import annotations

import http.client
import socket
import ssl
import subprocess
from typing import Any, Mapping


def resolve_port(port: Any, container: Mapping[str, Any]) -> int:
    if isinstance(port, int):
        return port
    if isinstance(port, str) and port.isdigit():
        return int(port)
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    raise ValueError(f"container has no port named {port!r}")


def run_probe(
    probe: Mapping[str, Any], container: Mapping[str, Any], pod_ip: str, pid: int | None, env: Mapping[str, str]
) -> tuple[bool, str]:
    """Run one probe once: (success, message)."""
    timeout = float(probe.get("timeoutSeconds") or 1)
    try:
        if probe.get("httpGet") is not None:
            hg = probe["httpGet"]
            host = hg.get("host") or pod_ip
            port = resolve_port(hg.get("port"), container)
            path = hg.get("path") or "/"
            headers = {h["name"]: h["value"] for h in hg.get("httpHeaders") or []}
            headers.setdefault("User-Agent", "kube-probe/1.35")
            if (hg.get("scheme") or "HTTP").upper() == "HTTPS":
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                conn: http.client.HTTPConnection = http.client.HTTPSConnection(host, port, timeout=timeout, context=ctx)
            else:
                conn = http.client.HTTPConnection(host, port, timeout=timeout)
            try:
                conn.request("GET", path, headers=headers)
                resp = conn.getresponse()
                resp.read(1024)
                ok = 200 <= resp.status < 400
                return ok, f"HTTP probe failed with statuscode: {resp.status}" if not ok else ""
            finally:
                conn.close()
        if probe.get("tcpSocket") is not None:
            ts = probe["tcpSocket"]
            host = ts.get("host") or pod_ip
            port = resolve_port(ts.get("port"), container)
            with socket.create_connection((host, port), timeout=timeout):
                return True, ""
        if probe.get("exec") is not None:
            cmd = list(probe["exec"].get("command") or [])
            if not cmd:
                return False, "exec probe without command"
            if pid is None:
                return False, "container not running"
            argv = ["nsenter", "--target", str(pid), "--mount", "--", *cmd]
            r = subprocess.run(argv, env=dict(env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=timeout)
            out = r.stdout.decode(errors="replace")[-500:]
            return r.returncode == 0, out if r.returncode else ""
        if probe.get("grpc") is not None:
            # not emulated: treated as passing (documented in docs/node-runner.md)
            return True, ""
    except subprocess.TimeoutExpired:
        return False, f"command timed out after {timeout}s"
    except (OSError, ValueError, http.client.HTTPException) as e:
        return False, f"probe failed: {e}"
    return False, "probe has no handler"
