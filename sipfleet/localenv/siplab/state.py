"""Where one lab keeps its state, and how it reads, writes and locks it.

``$SIPFLEET_STATE/labs/<name>/`` (default ``~/.local/state/sipfleet``): ``lab.json`` (slot, addresses),
``net.json`` (the hostnet record of every netns, link and address the lab created), ``pids.json``,
``inject.json``, ``faults.json``, ``users.json`` (HA1 hashes only, mode 0600), ``clients.json``, the rendered
``<node>.cfg``, ``logs/<node>.log``, ``run/`` (Kamailio runtime dirs, ctl sockets) and ``sipp/<run>/``.
Everything is plain JSON written atomically, so another process (``sipfleet lab ...``) can drive the lab.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


def default_state_root() -> Path:
    env = os.environ.get("SIPFLEET_STATE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".local" / "state" / "sipfleet"


class LabState:
    """The files of one lab under ``state_dir``."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir)

    @property
    def logs_dir(self) -> Path:
        return self.dir / "logs"

    @property
    def run_dir(self) -> Path:
        return self.dir / "run"

    def path(self, name: str) -> Path:
        return self.dir / name

    def log_path(self, node: str) -> Path:
        return self.logs_dir / f"{node}.log"

    def cfg_path(self, node: str) -> Path:
        return self.dir / f"{node}.cfg"

    def ctl_socket(self, node: str) -> Path:
        p = self.run_dir / f"{node}.ctl"
        if len(str(p)) < 100:
            return p
        # unix socket paths are limited to 108 bytes: fall back to a short, per-lab path
        h = hashlib.sha1(str(self.dir.resolve()).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"sipfleet-lab-{h}" / f"{node}.ctl"

    def read_json(self, name: str, default: Any) -> Any:
        try:
            return json.loads((self.dir / name).read_text())
        except (OSError, ValueError):
            return default

    def write_json(self, name: str, data: Any, mode: int = 0o644) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / name
        tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
        os.chmod(tmp, mode)
        os.replace(tmp, path)

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.dir / name).unlink()

    def write_secret(self, path: Path, text: str) -> None:
        """Write ``text`` to ``path`` readable by the owner only."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(path, 0o600)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """The lab's lock (every change to the lab's processes, network or files happens under it)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
