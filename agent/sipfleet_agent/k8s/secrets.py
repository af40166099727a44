"""Credentials of cluster-mode accounts: each account's Secret read through the API (``get``), cached by
(namespace, name, secretVersion). The password stays in memory (:class:`~sipfleet_agent.config.Secretish`)."""

from __future__ import annotations

import base64
from typing import Any

from sipfleet.api import credentials as creds_rules
from sipfleet.api.models import AgentAccount

from ..config import ConfigError, Secretish, checked
from . import API_TIMEOUT_S


class SecretResolver:
    """Reads each account's Secret through the API (``get``), cached by (namespace, name, secretVersion)."""

    def __init__(self, core: Any, default_namespace: str):
        self.core = core
        self.ns = default_namespace
        self._cache: dict[tuple[str, str, str | None], Secretish] = {}

    def __call__(self, acc: AgentAccount) -> Secretish:
        from kubernetes.client.exceptions import ApiException

        c = acc.credentials
        if not c.secret_name:
            raise ConfigError(f"account {acc.name}: cluster mode needs credentials.secretName")
        ns = acc.namespace or self.ns
        key = (ns, c.secret_name, c.secret_version)
        if key in self._cache:
            return self._cache[key]
        try:
            secret = self.core.read_namespaced_secret(c.secret_name, ns, _request_timeout=API_TIMEOUT_S)
        except ApiException as e:
            raise ConfigError(f"credentials: Secret {ns}/{c.secret_name} not readable ({e.status} {e.reason})") from None
        data = secret.data or {}

        def field(k: str) -> str | None:
            v = data.get(k)
            if v is None:
                return None
            try:
                return base64.b64decode(v, validate=True).decode("utf-8").rstrip("\r\n")
            except ValueError:  # not base64, or not UTF-8 (UnicodeDecodeError is a ValueError)
                raise ConfigError(f"{creds_rules.INVALID}: credentials: Secret {ns}/{c.secret_name} key {k} "
                                  "is not UTF-8 text") from None

        username = field(c.username_key) or c.username
        password = field(c.password_key)
        if not username or password is None:
            missing = c.username_key if not username else c.password_key
            raise ConfigError(f"credentials: Secret {ns}/{c.secret_name} has no key {missing!r}")
        creds = checked(Secretish(username=username, password=password, realm=c.realm or "*"),
                        f"credentials: Secret {ns}/{c.secret_name}")
        self._cache = {k: v for k, v in self._cache.items() if k[:2] != key[:2]}
        self._cache[key] = creds
        return creds
