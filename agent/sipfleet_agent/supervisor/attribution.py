"""Which account to blame for a worker that died by a crash signal without saying why. Pure (time passed in).

Promise: :func:`suspect` names an account only in a crash loop (the worker's ``failures``-th consecutive quick
failure, at least the second, so its worker ran with breadcrumbs: :class:`~sipfleet_agent.protocol.Answer`), when
it died by SIGSEGV, SIGBUS, SIGABRT, SIGILL or SIGFPE (never SIGKILL/SIGTERM: someone else ended it) and its last
breadcrumb (pjsua about to process a 2xx to that account's REGISTER) came at most ``window_s`` before the death
was seen. Detection in the worker (:mod:`sipfleet_agent.worker.responseguard`) is the main path; this is the net.
"""

from __future__ import annotations

import signal

CRASH_SIGNALS = frozenset({signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGILL, signal.SIGFPE})


def suspect(returncode: int | None, last_answer: tuple | None, now: float, failures: int,
            window_s: float = 2.0) -> tuple | None:
    """``last_answer``: (account key, clock time) of the worker's last breadcrumb, or None."""
    if returncode is None or returncode >= 0 or -returncode not in CRASH_SIGNALS:
        return None
    if failures < 2 or last_answer is None:
        return None
    key, at = last_answer
    return key if now - at <= window_s else None
