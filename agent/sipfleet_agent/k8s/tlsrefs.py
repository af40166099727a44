"""TLS material of cluster-mode accounts: the CA from a ConfigMap or Secret key, the client certificate from a
``kubernetes.io/tls`` Secret (``tls.crt``, ``tls.key``), read through the API (``get`` on those names only; the
operator's Role for the agent allows exactly them). The client key stays in memory
(:class:`~sipfleet_agent.tlsmaterial.TlsMaterial`); errors name the object and key, never a value.

Read again at every assignment change (a changed CA reaches the worker as new material: a new TLS transport), one
``get`` per object and pass (:meth:`TlsResolver.pass_cache` is cleared by the caller).
"""

from __future__ import annotations

import base64
from typing import Any

from sipfleet.api.models import AgentAccount

from ..tlsmaterial import TlsError, TlsMaterial, checked
from . import API_TIMEOUT_S


class TlsResolver:
    def __init__(self, core: Any, default_namespace: str):
        self.core = core
        self.ns = default_namespace
        self.pass_cache: dict[tuple, dict] = {}

    def _data(self, kind: str, ns: str, name: str) -> dict:
        from kubernetes.client.exceptions import ApiException

        key = (kind, ns, name)
        if key not in self.pass_cache:
            try:
                if kind == "ConfigMap":
                    obj = self.core.read_namespaced_config_map(name, ns, _request_timeout=API_TIMEOUT_S)
                    self.pass_cache[key] = dict(obj.data or {})
                else:
                    obj = self.core.read_namespaced_secret(name, ns, _request_timeout=API_TIMEOUT_S)
                    self.pass_cache[key] = {k: _b64(v, f"Secret {ns}/{name} key {k}") for k, v in (obj.data or {}).items()}
            except ApiException as e:
                raise TlsError(f"tls: {kind} {ns}/{name} not readable ({e.status} {e.reason})") from None
        return self.pass_cache[key]

    def __call__(self, acc: AgentAccount) -> TlsMaterial | None:
        t = acc.tls
        if t is None or acc.transport != "tls":
            return None
        if t.ca_file or t.cert_file:
            raise TlsError(f"account {acc.name}: tls.caFile / tls.certFile are for standalone agents")
        ns = acc.namespace or self.ns
        ca = ""
        if t.ca_name:
            data = self._data(t.ca_kind, ns, t.ca_name)
            if t.ca_key not in data:
                raise TlsError(f"tls: {t.ca_kind} {ns}/{t.ca_name} has no key {t.ca_key!r} (spec.tls.caRef.key)")
            ca = data[t.ca_key]
        cert = key = ""
        if t.client_secret_name:
            data = self._data("Secret", ns, t.client_secret_name)
            missing = [k for k in ("tls.crt", "tls.key") if k not in data]
            if missing:
                raise TlsError(f"tls: Secret {ns}/{t.client_secret_name} has no key {missing[0]!r} "
                               "(spec.tls.clientCertificateSecretRef: a kubernetes.io/tls Secret)")
            cert, key = data["tls.crt"], data["tls.key"]
        return checked(ca, cert, key, verify=t.verify_server, min_version=t.min_version, where=f"tls ({ns})")


def _b64(value: str, where: str) -> str:
    try:
        return base64.b64decode(value, validate=True).decode("utf-8")
    except ValueError:
        raise TlsError(f"tls: {where} is not UTF-8 text") from None
