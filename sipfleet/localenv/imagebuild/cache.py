"""Where image-building results live and how they are keyed: ``$SIPFLEET_CACHE/images`` (the same cache root
as the Go-built binaries), content hashes of input files and trees, and a file lock per cache entry.

A result is complete once its directory holds a ``done`` marker; it is written in a staging directory and
renamed into place, so a crash never leaves a half entry that looks complete.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import sys
from pathlib import Path
from typing import Iterable

from .. import kubebin


def root() -> Path:
    return kubebin.cache_root() / "images"


def hash_tree(paths: Iterable[Path], base: Path, *, skip_names: tuple[str, ...] = ("__pycache__",),
              skip_suffixes: tuple[str, ...] = (".pyc",)) -> str:
    """sha256 over the relative names, modes and contents of the files under ``paths`` (files or directories),
    in sorted order."""
    h = hashlib.sha256()
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(q for q in p.rglob("*") if q.is_file() and not q.is_symlink())
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(p)
    for f in sorted(set(files)):
        rel = f.relative_to(base)
        if any(part in skip_names for part in rel.parts) or f.suffix in skip_suffixes:
            continue
        h.update(f"{rel}\0{os.stat(f).st_mode & 0o777:o}\0".encode())
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


class FileLock:
    """An exclusive ``flock`` on ``path`` (created if missing), waiting with a message if another holds it."""

    def __init__(self, path: Path):
        self.path = path
        self.fd = -1

    def __enter__(self) -> "FileLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"images: waiting for another build holding {self.path}", file=sys.stderr, flush=True)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
