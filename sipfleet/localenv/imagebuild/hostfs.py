"""Host state that image building creates and must remove: mounts under our own directories, and cgroups of
our own name in every cgroup hierarchy (v1 or v2). Nothing here touches a mount or cgroup we did not name."""

from __future__ import annotations

import subprocess
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_dirs(parent: str, root: Path = CGROUP_ROOT) -> list[Path]:
    """``<hierarchy>/<parent>`` for every cgroup hierarchy mounted under ``root`` (v1 or v2)."""
    if (root / "cgroup.controllers").exists():  # unified (v2)
        return [root / parent]
    return [d / parent for d in sorted(root.iterdir()) if d.is_dir() and not d.is_symlink()
            and (d / "cgroup.procs").exists()]


def remove_cgroups(dirs: list[Path]) -> list[Path]:
    """rmdir each directory's empty cgroup subtree, deepest first; returns those that could not be removed."""
    left = []
    for d in dirs:
        if not d.exists():
            continue
        for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            try:
                sub.rmdir()
            except OSError:
                pass
        try:
            d.rmdir()
        except OSError:
            left.append(d)
    return left


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` (deepest first), from /proc/self/mountinfo."""
    prefix = str(path)
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mp = line.split()[4].replace("\\040", " ")
        if mp == prefix or mp.startswith(prefix + "/"):
            found.append(mp)
    return sorted(found, key=len, reverse=True)


def unmount_under(path: Path) -> None:
    """Lazily unmount everything mounted at or below ``path`` (deepest first)."""
    for mp in mounts_under(path):
        subprocess.run(["umount", "-l", mp], check=False)
