"""The supervisor process's own environment: stdout kept for status lines only, and its signal handlers.

SIGTERM/SIGINT stop (every worker un-REGISTERs first), SIGUSR1 repairs every account, SIGUSR2 tells every worker
the local addresses changed. Handlers only hand work to other threads.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from .runtime import Supervisor

LOG = logging.getLogger("sipfleet_agent")


def claim_stdout() -> TextIO:
    """Keep the real stdout for status lines only; fd 1 (inherited by workers) goes to stderr."""
    sys.stdout.flush()
    fd = os.dup(1)
    os.dup2(2, 1)
    out = os.fdopen(fd, "w", buffering=1)
    sys.stdout = sys.stderr
    return out


def install_signals(sup: "Supervisor") -> None:
    def later(op: str) -> None:
        def go() -> None:
            try:
                sup.request(op, None, 10.0)
            except Exception as e:  # noqa: BLE001
                LOG.warning("%s on signal failed: %s", op, e)

        threading.Thread(target=go, name=f"signal-{op}", daemon=True).start()

    def term(signum, frame):  # noqa: ANN001
        LOG.info("signal %s: stopping", signal.Signals(signum).name)
        sup.request_stop(0)

    signal.signal(signal.SIGTERM, term)
    signal.signal(signal.SIGINT, term)
    signal.signal(signal.SIGUSR1, lambda s, f: later("repair"))
    signal.signal(signal.SIGUSR2, lambda s, f: later("ip-change"))
