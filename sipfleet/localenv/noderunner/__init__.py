"""The node runner: a kubelet stand-in that runs Pods bound to its Node as local processes.

Run it as ``python -m sipfleet.localenv.noderunner --kubeconfig KUBECONFIG --node-name NAME --state-dir DIR
--pod-subnet 127.X.Y`` (``sipfleet cluster up`` does). Stop it with SIGTERM: it stops its pods' processes and
exits. What it emulates and what it does not: docs/node-runner.md.

Module-level helpers for other parts (``sipfleet cluster logs`` / ``cluster down``):

* :func:`log_path` — where a container's log is
* :func:`stop_recorded_processes` — stop the container processes recorded in ``<state-dir>/pids.json``
"""

from __future__ import annotations

import os
from pathlib import Path

from .process import PIDS_FILE, stop_recorded_processes

__all__ = ["log_path", "pod_dirs", "stop_recorded_processes", "PIDS_FILE", "main"]


def pod_dirs(state_dir: str | os.PathLike, namespace: str, pod: str) -> list[Path]:
    """The pod directories ``<state-dir>/<ns>_<pod>_<uid>`` for a pod name, newest first (a name can be
    re-used by a new pod with another uid)."""
    root = Path(state_dir)
    prefix = f"{namespace}_{pod}_"
    try:
        # names and namespaces cannot contain "_", so the prefix is unambiguous
        found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(prefix) and "_" not in p.name[len(prefix):]]
    except OSError:
        return []
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def log_path(state_dir: str | os.PathLike, namespace: str, pod: str, container: str, previous: bool = False) -> Path:
    """``<state-dir>/<ns>_<pod>_<uid>/<container>.log`` (``<container>.previous.log`` for the run before).

    When several pods of that name have existed, the newest directory wins. When none exists yet, the
    returned path is ``<state-dir>/<ns>_<pod>_unknown/...`` (which does not exist).
    """
    name = f"{container}.previous.log" if previous else f"{container}.log"
    dirs = pod_dirs(state_dir, namespace, pod)
    for d in dirs:
        if (d / name).exists():
            return d / name
    base = dirs[0] if dirs else Path(state_dir) / f"{namespace}_{pod}_unknown"
    return base / name


def main(argv: list[str] | None = None) -> int:
    from .runner import main as _main

    return _main(argv)
