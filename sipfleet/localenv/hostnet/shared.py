"""Host state several sipfleet owners share (labs and clusters), and who is using it.

Some changes cannot belong to one owner: ``ip netns add`` makes ``/run/netns`` a mount point the first time;
the kubelet and containerd create fixed host paths (the device-plugin directory, ``/var/log/containers``,
containerd's shim socket directory) whatever they are told, and the kubelet sets kernel sysctls. One record,
``/run/sipfleet-host.json`` (tmpfs), says what sipfleet found and made, and which owners are up:

* ``claim(user, paths=..., sysctls=...)`` before an owner changes anything: the first user records whether
  ``/run/netns`` was a mount point; any claim records which of ``paths`` are absent (so they count as sipfleet's)
  and the current values of ``sysctls`` not recorded yet;
* ``release(user)`` after the owner removed its own objects: the last user out writes the sysctls back,
  removes the paths sipfleet created, unmounts ``/run/netns`` if sipfleet made it a mount point and nothing is
  left in it, and deletes the record.

Locks (``host_lock``) are flocks on ``/run`` itself, so no lock file is ever left behind; they are never nested.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import shutil
from pathlib import Path
from typing import Iterable, Iterator

RECORD = Path("/run/sipfleet-host.json")
NETNS_DIR = "/run/netns"
_MNT_DETACH = 2


@contextlib.contextmanager
def host_lock() -> Iterator[None]:
    """The machine-wide sipfleet lock: a flock on ``/run`` (no file to clean up). Never hold it twice."""
    fd = os.open(RECORD.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _mount_points() -> set[str]:
    return {line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines() if len(line.split()) > 4}


def _sysctl(key: str) -> str | None:
    try:
        return Path("/proc/sys", key).read_text().strip()
    except OSError:
        return None


@contextlib.contextmanager
def _record() -> Iterator[dict]:
    with host_lock():
        try:
            data = json.loads(RECORD.read_text())
        except (OSError, ValueError):
            data = {}
        data.setdefault("users", [])
        data.setdefault("created", [])
        data.setdefault("sysctls", {})
        data.setdefault("netnsMount", None)
        data.setdefault("netnsDir", None)
        yield data
        if data["users"]:
            tmp = RECORD.with_name(f".{RECORD.name}.tmp")
            tmp.write_text(json.dumps(data, indent=1) + "\n")
            os.replace(tmp, RECORD)
        else:
            RECORD.unlink(missing_ok=True)


def claim(user: str, *, paths: Iterable[str] = (), sysctls: Iterable[str] = ()) -> None:
    with _record() as data:
        if not data["users"]:
            data["netnsMount"] = NETNS_DIR not in _mount_points()  # True: not a mount point before sipfleet
            data["netnsDir"] = os.path.isdir(NETNS_DIR)
        for p in paths:
            if not os.path.lexists(p) and p not in data["created"]:
                data["created"].append(p)
        for key in sysctls:
            value = _sysctl(key)
            if value is not None and key not in data["sysctls"]:
                data["sysctls"][key] = value
        if user not in data["users"]:
            data["users"].append(user)


def release(user: str) -> list[str]:
    """Drop ``user``; the last one restores and removes what sipfleet changed. Returns the problems."""
    problems: list[str] = []
    with _record() as data:
        data["users"] = [u for u in data["users"] if u != user]
        if data["users"]:
            return problems
        for key, value in data["sysctls"].items():
            try:
                if _sysctl(key) != value:
                    Path("/proc/sys", key).write_text(value + "\n")
            except OSError as e:
                problems.append(f"sysctl {key}: {e.strerror}")
        for p in data["created"]:
            with contextlib.suppress(FileNotFoundError):
                if os.path.isdir(p) and not os.path.islink(p):
                    shutil.rmtree(p)
                else:
                    os.unlink(p)
        if data["netnsMount"] and os.path.isdir(NETNS_DIR) and not os.listdir(NETNS_DIR):
            libc = ctypes.CDLL(None, use_errno=True)
            while NETNS_DIR in _mount_points():  # ip may have stacked it more than once
                if libc.umount2(NETNS_DIR.encode(), _MNT_DETACH) != 0:
                    problems.append(f"umount {NETNS_DIR}: {os.strerror(ctypes.get_errno())}")
                    break
            if data["netnsDir"] is False:
                with contextlib.suppress(OSError):
                    os.rmdir(NETNS_DIR)
    return problems


def users() -> list[str]:
    try:
        return list(json.loads(RECORD.read_text()).get("users", []))
    except (OSError, ValueError):
        return []
