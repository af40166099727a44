"""Credentials of cluster-mode accounts: each account's Secret read through the API (``get``), cached by
(namespace, name, secretVersion). The password stays in memory (:class:`~sipfleet_agent.config.Secretish`).

:meth:`SecretResolver.prefetch` reads the Secrets an assignment needs and the cache lacks ``PREFETCH_THREADS`` at
a time: a new agent pod of 64 accounts read them one after another (~10 s of its ~20 s start on a busy
apiserver) before its first REGISTER."""

from __future__ import annotations

import base64
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable

from sipfleet.api import credentials as creds_rules
from sipfleet.api.models import AgentAccount

from ..config import ConfigError, Secretish, checked
from . import API_TIMEOUT_S

PREFETCH_THREADS = 8  # concurrent Secret reads of one agent (the client's connection pool holds more)


class SecretResolver:
    """Reads each account's Secret through the API (``get``), cached by (namespace, name, secretVersion)."""

    def __init__(self, core: Any, default_namespace: str):
        self.core = core
        self.ns = default_namespace
        self._cache: dict[tuple[str, str, str | None], Secretish] = {}
        self._lock = threading.Lock()

    def prefetch(self, accounts: Iterable[AgentAccount]) -> None:
        """Read the not yet cached Secrets of ``accounts`` concurrently. Errors are left to :meth:`__call__`, which
        reads a Secret that failed here again and raises the error naming it."""
        todo = {}
        for acc in accounts:
            c = acc.credentials
            if c.secret_name and self._cached(acc) is None:
                todo.setdefault((acc.namespace or self.ns, c.secret_name, c.secret_version), acc)
        if not todo:
            return

        def one(acc: AgentAccount) -> None:
            try:
                self(acc)
            except ConfigError:
                pass

        with ThreadPoolExecutor(min(PREFETCH_THREADS, len(todo)), thread_name_prefix="secret-read") as pool:
            list(pool.map(one, todo.values()))

    def _cached(self, acc: AgentAccount) -> Secretish | None:
        c = acc.credentials
        with self._lock:
            return self._cache.get((acc.namespace or self.ns, c.secret_name, c.secret_version))

    def __call__(self, acc: AgentAccount) -> Secretish:
        from kubernetes.client.exceptions import ApiException

        c = acc.credentials
        if not c.secret_name:
            raise ConfigError(f"account {acc.name}: cluster mode needs credentials.secretName")
        ns = acc.namespace or self.ns
        key = (ns, c.secret_name, c.secret_version)
        hit = self._cached(acc)
        if hit is not None:
            return hit
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
        with self._lock:
            self._cache = {k: v for k, v in self._cache.items() if k[:2] != key[:2]}
            self._cache[key] = creds
        return creds
