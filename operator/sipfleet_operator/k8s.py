"""A thin asyncio Kubernetes REST client (aiohttp, which kopf already uses), dicts in and out.

Credentials come from the in-cluster service account or from KUBECONFIG, loaded by the ``kubernetes`` package's
config loader (client certificates, tokens, CA). Every write is counted in the metrics (``api_writes``). Failures
are :mod:`sipfleet.api.kerrors` classes (``ApiError`` is their base); 429 and 5xx answers and lost connections are
retried here a few times, a 429 after the server's ``Retry-After`` (at most ``MAX_RETRY_AFTER_S``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from typing import Any

import aiohttp

from sipfleet.api import kerrors

log = logging.getLogger(__name__)

APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
FIELD_MANAGER = "sipfleet-operator"

_PLURALS = {
    "Namespace": ("v1", "namespaces"),
    "ConfigMap": ("v1", "configmaps"),
    "ServiceAccount": ("v1", "serviceaccounts"),
    "Secret": ("v1", "secrets"),
    "Pod": ("v1", "pods"),
    "Event": ("v1", "events"),
    "Role": ("rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": ("rbac.authorization.k8s.io/v1", "rolebindings"),
    "Deployment": ("apps/v1", "deployments"),
    "SipAccount": ("sipfleet.io/v1alpha1", "sipaccounts"),
    "KopfPeering": ("kopf.dev/v1", "kopfpeerings"),
    "ClusterKopfPeering": ("kopf.dev/v1", "clusterkopfpeerings"),
}


ApiError = kerrors.KubeError
#: the longest a request waits on a 429's Retry-After before it tries again (longer: the caller's retry decides)
MAX_RETRY_AFTER_S = 5.0


def path(kind: str, namespace: str | None, name: str | None = None, sub: str | None = None) -> str:
    api_version, plural = _PLURALS[kind]
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    out = base + (f"/namespaces/{namespace}" if namespace else "") + f"/{plural}"
    if name:
        out += f"/{name}"
    if sub:
        out += f"/{sub}"
    return out


class Client:
    def __init__(self, on_write=None):
        from kubernetes import config as kconfig
        from kubernetes.client import Configuration

        cfg = Configuration()
        try:
            kconfig.load_incluster_config(client_configuration=cfg)
        except kconfig.ConfigException:
            kconfig.load_kube_config(client_configuration=cfg)
        self._cfg = cfg
        self.host = cfg.host.rstrip("/")
        ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert) if cfg.ssl_ca_cert else ssl.create_default_context()
        if cfg.cert_file:
            ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
        if not cfg.verify_ssl:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        self._ssl = ctx
        self._session: aiohttp.ClientSession | None = None
        self._on_write = on_write or (lambda verb, kind: None)

    async def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # Many handlers share this pool: waiting for a free connection is not a connect timeout (aiohttp's
            # ``connect`` would count that wait), so only the socket connect and reads are bounded.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=32),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        h = {"Accept": "application/json"}
        # the config loaders store "bearer <token>" under BearerToken (and refresh it through the hook)
        token = self._cfg.get_api_key_with_prefix("BearerToken", alias="authorization") if self._cfg.api_key else None
        if token:
            h["Authorization"] = token
        if content_type:
            h["Content-Type"] = content_type
        return h

    async def request(
        self, method: str, url: str, *, body: Any = None, params: dict | None = None, content_type: str | None = None,
        kind: str = "", retries: int = 3,
    ) -> Any:
        data = None if body is None else json.dumps(body)
        if method != "GET":
            self._on_write(method, kind)
        for attempt in range(retries):
            s = await self.session()
            try:
                async with s.request(
                    method, self.host + url, data=data, params=params,
                    headers=self._headers(content_type or ("application/json" if data else None)),
                ) as resp:
                    text = await resp.text()
                    try:
                        payload = json.loads(text) if text else None
                    except ValueError:
                        payload = text
                    if resp.status >= 400:
                        err = kerrors.from_response(resp.status, payload, resp.headers, what=f"{method} {url}")
                        wait = err.retry_after if err.retry_after is not None else 0.5 * (attempt + 1)
                        if (isinstance(err, (kerrors.TooManyRequests, kerrors.ServerError)) and attempt + 1 < retries
                                and wait <= MAX_RETRY_AFTER_S):
                            await asyncio.sleep(wait)
                            continue
                        raise err
                    return payload
            except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as e:
                if attempt + 1 >= retries:
                    raise kerrors.ServerError(0, str(e), f"{method} {url}") from e
                await asyncio.sleep(0.5 * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    # ---- verbs -------------------------------------------------------------------------------------------------

    async def get(self, kind: str, namespace: str, name: str) -> dict | None:
        try:
            return await self.request("GET", path(kind, namespace, name), kind=kind)
        except kerrors.NotFound:
            return None

    async def list(self, kind: str, namespace: str | None = None, label_selector: str | None = None) -> list[dict]:
        params = {"labelSelector": label_selector} if label_selector else None
        out = await self.request("GET", path(kind, namespace), params=params, kind=kind)
        return list(out.get("items", []))

    async def apply(self, obj: dict) -> dict:
        """Server-side apply (create or patch) of a whole desired object; we own every field we send."""
        kind, meta = obj["kind"], obj["metadata"]
        return await self.request(
            "PATCH", path(kind, meta.get("namespace"), meta["name"]), body=obj, content_type=APPLY,
            params={"fieldManager": FIELD_MANAGER, "force": "true"}, kind=kind,
        )

    async def merge_patch(self, kind: str, namespace: str, name: str, patch: dict, sub: str | None = None) -> dict:
        return await self.request(
            "PATCH", path(kind, namespace, name, sub), body=patch, content_type=MERGE, kind=kind + (f"/{sub}" if sub else ""),
        )

    async def delete(self, kind: str, namespace: str, name: str, *, propagation: str = "Background",
                     uid: str | None = None) -> bool:
        body: dict = {"propagationPolicy": propagation}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            await self.request("DELETE", path(kind, namespace, name), body=body, kind=kind)
            return True
        except (kerrors.NotFound, kerrors.Conflict):  # gone already, or another object under that name (uid)
            return False

    async def create(self, obj: dict) -> dict:
        kind, meta = obj["kind"], obj["metadata"]
        return await self.request("POST", path(kind, meta.get("namespace")), body=obj, kind=kind)
