"""Patches the agent-owned ``status.registration/route/agent/tls`` of SipAccounts (JSON merge patches, from
``THREADS`` threads of its own, only when something changed against what the server holds). At most one patch per
account within ``window_s`` and never two of one account at once: documents arriving meanwhile (from the account's
worker, the supervisor's own verdicts) replace each other and the last one is written when the window ends; a
document after a quiet spell goes out at once. A failed patch is tried again after a second or two, or after the
server's own ``Retry-After`` (a 429 from API priority and fairness); meanwhile no thread sends anything (the
apiserver asked this client, not one account, to slow down).

Several threads because a burst (64 accounts drifting at once, a registrar coming back) was written one patch
after another: ~40 ms each on a busy apiserver put the last account's status seconds behind its wire."""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any, Callable

from sipfleet.api import kerrors
from sipfleet.api.models import GROUP, PLURAL, VERSION

from ..status import apply_merge_patch, merge_patch, replace_patch
from . import API_TIMEOUT_S

LOG = logging.getLogger("sipfleet_agent.cluster")
OWNED = ("registration", "route", "agent", "tls")  # tls: transport tls accounts only
#: one patch per account per this many seconds at most (the later documents of a burst are one patch)
WINDOW_S = 0.15
THREADS = 4  # patches in flight at once (kept small: the apiserver's fairness counts this agent as one flow)


class StatusWriter:
    """Patches ``status.registration/route/agent`` of SipAccounts from its own thread.

    Keeps a copy of what the server holds (from its own successful patches: an account's first patch replaces
    the owned fields, ``replace_patch``, so nothing is read) and then sends only the merge patch between that
    copy and the new document; no request when it is empty (a conflict or an invalid patch forgets the copy).
    Newer documents for the same account replace queued ones; an account written less than ``window_s`` ago
    waits for the end of that window (``clock``: monotonic seconds).
    """

    def __init__(self, custom: Any, default_namespace: str, window_s: float = WINDOW_S,
                 clock: Callable[[], float] = time.monotonic, threads: int = THREADS):
        self.custom = custom
        self.ns = default_namespace
        self.window_s = window_s
        self.clock = clock
        self._pending: dict[tuple[str, str], dict] = {}
        self._not_before: dict[tuple[str, str], float] = {}  # account -> when its window ends
        self._known: dict[tuple[str, str], dict] = {}
        self._in_flight: set[tuple[str, str]] = set()
        self._pause_until = 0.0  # time.monotonic(): no patch before this (a failed one's retry wait)
        self._cond = threading.Condition()
        self._stop = False
        self.patches = 0
        self._threads = [threading.Thread(target=self._run, name=f"status-writer-{i}", daemon=True)
                         for i in range(max(1, threads))]
        for t in self._threads:
            t.start()

    def submit(self, key: tuple[str | None, str], name: str, doc: dict) -> None:
        ns = key[0] or self.ns
        with self._cond:
            self._pending[(ns, name)] = doc
            self._cond.notify()

    def stop(self, timeout: float = 5.0) -> None:
        """Write what is pending (windows no longer wait), then end the thread; gives up after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        for t in self._threads:
            t.join(max(0.1, deadline - time.monotonic()))

    def _take(self) -> tuple[tuple[str, str], dict] | None:
        """A pending document whose window has ended (any, when stopping) and whose account no other thread is
        writing; waits for one. None: stop."""
        with self._cond:
            while True:
                if self._stop and not self._pending:
                    return None
                pause = self._pause_until - time.monotonic()
                if pause > 0:
                    self._cond.wait(pause)
                    continue
                now = self.clock()
                self._not_before = {k: t for k, t in self._not_before.items() if t > now}
                due = next((k for k in self._pending if k not in self._in_flight
                            and (self._stop or k not in self._not_before)), None)
                if due is not None:
                    self._in_flight.add(due)
                    return due, self._pending.pop(due)
                waits = [self._not_before[k] - now for k in self._pending
                         if k in self._not_before and k not in self._in_flight]
                self._cond.wait(min(waits) if waits else None)

    def _run(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                return
            (ns, name), doc = taken
            retry_in = self._write(ns, name, doc)
            with self._cond:
                self._in_flight.discard((ns, name))
                self._not_before[(ns, name)] = self.clock() + self.window_s
                if retry_in is not None:
                    self._pending.setdefault((ns, name), doc)
                    self._pause_until = max(self._pause_until, time.monotonic() + retry_in)
                self._cond.notify_all()

    def _write(self, ns: str, name: str, doc: dict) -> float | None:
        """Patch one account's status; None when done (or nothing to do), else the seconds to wait before retrying."""
        from kubernetes.client.exceptions import ApiException

        try:
            cur = self._known.get((ns, name))
            if cur is None:  # not written by this process yet: replace the owned fields, no read first
                cur, patch = {}, replace_patch(doc)
            else:
                patch = merge_patch(cur, {k: doc[k] for k in OWNED if k in doc} | {k: cur[k] for k in cur if k not in doc})
            if not patch:
                return None
            self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, ns, PLURAL, name, {"status": patch}, _content_type="application/merge-patch+json",
                _request_timeout=API_TIMEOUT_S)
            self._known[(ns, name)] = apply_merge_patch(cur, patch)
            with self._cond:
                self.patches += 1
            return None
        except ApiException as e:
            err = kerrors.from_api_exception(e)
            if isinstance(err, kerrors.NotFound):
                self._known.pop((ns, name), None)
                LOG.info("SipAccount %s/%s not found: status not written", ns, name)
                return None
            if isinstance(err, (kerrors.Conflict, kerrors.Invalid)):
                self._known.pop((ns, name), None)  # the next patch replaces the owned fields
            LOG.warning("status patch for %s/%s failed: %s %s", ns, name, err.status, type(err).__name__)
            return err.retry_after if err.retry_after is not None else 1 + random.random()
        except Exception as e:  # noqa: BLE001 - connection problems: retry
            LOG.warning("status patch for %s/%s failed: %s", ns, name, e)
            return 1 + random.random()
