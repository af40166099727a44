"""Patches the agent-owned ``status.registration/route/agent/tls`` of SipAccounts (JSON merge patches, from its own
thread, only when something changed against what the server holds). A failed patch is tried again after a second
or two, or after the server's own ``Retry-After`` (a 429 from API priority and fairness)."""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any

from sipfleet.api import kerrors
from sipfleet.api.models import GROUP, PLURAL, VERSION

from ..status import apply_merge_patch, merge_patch
from . import API_TIMEOUT_S

LOG = logging.getLogger("sipfleet_agent.cluster")
OWNED = ("registration", "route", "agent", "tls")  # tls: transport tls accounts only


class StatusWriter:
    """Patches ``status.registration/route/agent`` of SipAccounts from its own thread.

    Keeps a copy of what the server holds (read once, then updated from each successful patch) and
    sends only the merge patch between that copy and the new document; no request when it is empty.
    Newer documents for the same account replace queued ones.
    """

    def __init__(self, custom: Any, default_namespace: str):
        self.custom = custom
        self.ns = default_namespace
        self._pending: dict[tuple[str, str], dict] = {}
        self._known: dict[tuple[str, str], dict] = {}
        self._cond = threading.Condition()
        self._stop = False
        self.patches = 0
        self._thread = threading.Thread(target=self._run, name="status-writer", daemon=True)
        self._thread.start()

    def submit(self, key: tuple[str | None, str], name: str, doc: dict) -> None:
        ns = key[0] or self.ns
        with self._cond:
            self._pending[(ns, name)] = doc
            self._cond.notify()

    def stop(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending and time.monotonic() < deadline:
                self._cond.wait(0.1)
            self._stop = True
            self._cond.notify()
        self._thread.join(max(0.1, deadline - time.monotonic()))

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stop:
                    self._cond.wait()
                if self._stop and not self._pending:
                    return
                batch = self._pending
                self._pending = {}
            for (ns, name), doc in batch.items():
                retry_in = self._write(ns, name, doc)
                if retry_in is not None:
                    with self._cond:
                        self._pending.setdefault((ns, name), doc)
                    time.sleep(retry_in)

    def _current(self, ns: str, name: str) -> dict | None:
        from kubernetes.client.exceptions import ApiException

        if (ns, name) in self._known:
            return self._known[(ns, name)]
        try:
            obj = self.custom.get_namespaced_custom_object_status(GROUP, VERSION, ns, PLURAL, name,
                                                                  _request_timeout=API_TIMEOUT_S)
        except ApiException as e:
            if isinstance(kerrors.from_api_exception(e), kerrors.NotFound):
                return None
            LOG.warning("cannot read SipAccount %s/%s status: %s", ns, name, e.reason)
            cur: dict = {}
        else:
            status = (obj or {}).get("status") or {}
            cur = {k: status[k] for k in OWNED if k in status}
        self._known[(ns, name)] = cur
        return cur

    def _write(self, ns: str, name: str, doc: dict) -> float | None:
        """Patch one account's status; None when done (or nothing to do), else the seconds to wait before retrying."""
        from kubernetes.client.exceptions import ApiException

        try:
            cur = self._current(ns, name)
            if cur is None:
                LOG.info("SipAccount %s/%s not found: status not written", ns, name)
                return None
            patch = merge_patch(cur, {k: doc[k] for k in OWNED if k in doc} | {k: cur[k] for k in cur if k not in doc})
            if patch is None:
                return None
            self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, ns, PLURAL, name, {"status": patch}, _content_type="application/merge-patch+json",
                _request_timeout=API_TIMEOUT_S)
            self._known[(ns, name)] = apply_merge_patch(cur, patch)
            self.patches += 1
            return None
        except ApiException as e:
            err = kerrors.from_api_exception(e)
            if isinstance(err, kerrors.NotFound):
                self._known.pop((ns, name), None)
                return None
            if isinstance(err, (kerrors.Conflict, kerrors.Invalid)):
                self._known.pop((ns, name), None)  # re-read what the server holds
            LOG.warning("status patch for %s/%s failed: %s %s", ns, name, err.status, type(err).__name__)
            return err.retry_after if err.retry_after is not None else 1 + random.random()
        except Exception as e:  # noqa: BLE001 - connection problems: retry
            LOG.warning("status patch for %s/%s failed: %s", ns, name, e)
            return 1 + random.random()
