"""A thin JSON layer over the kubernetes client's ApiClient: plain dicts in, plain dicts out, and watches.

The node runner builds Kubernetes objects as camelCase dicts (as the API speaks them); going through the
generated model classes would only add conversions. Authentication, TLS and the kubeconfig come from the
kubernetes client (``kubernetes.config.new_client_from_config``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import urllib.parse
from typing import Any, Iterator

import urllib3
import yaml
from kubernetes import config as kconfig
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("sipfleet.noderunner.kube")

STRATEGIC = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"


class KubeError(Exception):
    def __init__(self, status: int, reason: str, body: Any = None):
        self.status = status
        self.reason = reason
        self.body = body
        msg = reason
        if isinstance(body, dict) and body.get("message"):
            msg = body["message"]
        super().__init__(f"{status}: {msg}")


def now_time() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_microtime() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def kubeconfig_server(kubeconfig: str) -> tuple[str, int, bytes | None]:
    """(host, port, CA PEM or None) of the current context's cluster in a kubeconfig file."""
    with open(kubeconfig) as f:
        cfg = yaml.safe_load(f)
    ctx_name = cfg.get("current-context")
    contexts = {c["name"]: c["context"] for c in cfg.get("contexts") or []}
    clusters = {c["name"]: c["cluster"] for c in cfg.get("clusters") or []}
    ctx = contexts.get(ctx_name) or (next(iter(contexts.values())) if contexts else {})
    cluster = clusters.get(ctx.get("cluster")) or (next(iter(clusters.values())) if clusters else {})
    url = urllib.parse.urlparse(cluster.get("server", "https://127.0.0.1:6443"))
    port = url.port or (443 if url.scheme == "https" else 80)
    ca: bytes | None = None
    if cluster.get("certificate-authority-data"):
        import base64

        ca = base64.b64decode(cluster["certificate-authority-data"])
    elif cluster.get("certificate-authority"):
        import os

        path = cluster["certificate-authority"]
        if not os.path.isabs(path):
            path = os.path.join(os.path.dirname(os.path.abspath(kubeconfig)), path)
        with open(path, "rb") as f:
            ca = f.read()
    return url.hostname or "127.0.0.1", port, ca


class Kube:
    def __init__(self, kubeconfig: str):
        self.kubeconfig = kubeconfig
        self.api: ApiClient = kconfig.new_client_from_config(config_file=kubeconfig)
        self._lock = threading.Lock()

    def _prepare(self, method: str, path: str, query: dict | None, body: Any, content_type: str):
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        q = [(k, v) for k, v in (query or {}).items() if v is not None]
        return self.api.param_serialize(
            method, path, query_params=q or None, header_params=headers, body=body, auth_settings=["BearerToken"]
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float = 30,
    ) -> dict:
        method, url, headers, body, _ = self._prepare(method, path, query, body, content_type)
        try:
            resp = self.api.call_api(method, url, header_params=headers, body=body, _request_timeout=timeout)
        except ApiException as e:
            raise KubeError(e.status or 0, str(e.reason)) from e
        data = resp.read()
        try:
            parsed = json.loads(data) if data else {}
        except ValueError:
            parsed = {"message": data[:500].decode(errors="replace")}
        if not 200 <= resp.status < 300:
            raise KubeError(resp.status, str(resp.reason), parsed)
        return parsed

    def get(self, path: str, **kw) -> dict | None:
        """GET, None on 404."""
        try:
            return self.request("GET", path, **kw)
        except KubeError as e:
            if e.status == 404:
                return None
            raise

    def watch(self, path: str, query: dict, timeout_seconds: int = 300) -> Iterator[dict]:
        """Yield watch events (dicts with type/object) until the server ends the watch."""
        q = dict(query)
        q.update({"watch": "true", "timeoutSeconds": str(timeout_seconds), "allowWatchBookmarks": "true"})
        method, url, headers, body, _ = self._prepare("GET", path, q, None, "application/json")
        try:
            resp = self.api.call_api(
                method, url, header_params=headers, _request_timeout=(10, timeout_seconds + 30)
            )
        except ApiException as e:
            raise KubeError(e.status or 0, str(e.reason)) from e
        raw: urllib3.HTTPResponse = resp.response
        try:
            if resp.status != 200:
                data = raw.read()
                try:
                    parsed = json.loads(data)
                except ValueError:
                    parsed = None
                raise KubeError(resp.status, str(resp.reason), parsed)
            buf = b""
            for chunk in raw.stream(65536, decode_content=True):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
            if buf.strip():
                yield json.loads(buf)
        finally:
            raw.release_conn()
