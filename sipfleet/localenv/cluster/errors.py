"""The local cluster's error (one line or a few, meant for humans, with log tails) and the log tail helper."""

from __future__ import annotations

import os
from pathlib import Path


class ClusterError(RuntimeError):
    """The cluster could not be started/used; the message is meant for humans (includes log tails)."""


def tail(path: Path, lines: int = 20) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            data = f.read().decode(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(data.splitlines()[-lines:])
