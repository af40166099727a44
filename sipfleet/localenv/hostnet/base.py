"""Running network commands: the privilege check, ``ip``/``nft`` run in the caller's netns or inside another one
entered with ``nsenter --net=<path> --`` (never ``ip netns exec``, which remounts /sys), and Python code on a thread
that entered a netns (its sockets stay there). A netns is a name (``/run/netns/<name>``) or a path
(``/proc/<pid>/ns/net``). Every failure is a :class:`HostNetError` with a one-line message.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any, Callable, TypeVar

T = TypeVar("T")
NETNS_DIR = Path("/run/netns")
_CLONE_NEWNET = 0x40000000
_CAP_NET_ADMIN, _CAP_SYS_ADMIN = 12, 21
_NETNS_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


class HostNetError(RuntimeError):
    """A host network operation failed (one line: what and why)."""


# ---------------------------------------------------------------------------------------------- running commands


def check_privileges() -> None:
    """Raise unless this process holds CAP_NET_ADMIN and CAP_SYS_ADMIN (needed for netns, links, nftables)."""
    try:
        caps = next(ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("CapEff:"))
        eff = int(caps.split()[1], 16)
    except (OSError, StopIteration, ValueError):
        eff = 0
    missing = [n for n, bit in (("CAP_NET_ADMIN", _CAP_NET_ADMIN), ("CAP_SYS_ADMIN", _CAP_SYS_ADMIN)) if not eff >> bit & 1]
    if missing:
        who = "not root" if os.geteuid() != 0 else "root without " + " and ".join(missing)
        raise HostNetError(f"sipfleet needs {' and '.join(missing)} to build its network namespaces ({who}): run as root")


def tool(name: str) -> str:
    found = shutil.which(name) or next((f"{d}/{name}" for d in ("/usr/sbin", "/sbin", "/usr/bin") if os.path.exists(f"{d}/{name}")), None)
    if not found:
        pkg = {"nft": "nftables", "nsenter": "util-linux"}.get(name, "iproute2")
        raise HostNetError(f"{name} not found (Debian package {pkg})")
    return found


def netns_path(ns: str) -> str:
    """A netns name -> ``/run/netns/<name>``; an absolute path (``/proc/<pid>/ns/net``) as it is."""
    if ns.startswith("/"):
        return ns
    if not _NETNS_NAME_RE.match(ns):
        raise HostNetError(f"bad network namespace name {ns!r}")
    return str(NETNS_DIR / ns)


def pid_netns(pid: int) -> str:
    """The netns of process ``pid`` as a path (to enter, never to delete)."""
    path = f"/proc/{int(pid)}/ns/net"
    if not os.path.exists(path):
        raise HostNetError(f"no process {pid} (its network namespace {path} does not exist)")
    return path


def nsenter_prefix(ns: str | None) -> list[str]:
    """The command prefix that runs a program inside ``ns`` (empty for the caller's netns)."""
    return [] if ns is None else [tool("nsenter"), f"--net={netns_path(ns)}", "--"]


def run(cmd: list[str], *, netns: str | None = None, input: str | None = None, timeout: float = 30.0) -> str:
    """Run ``cmd`` (inside ``netns`` if given); its stdout, or HostNetError with the first line of stderr."""
    if netns is not None and not os.path.exists(netns_path(netns)):
        raise HostNetError(f"network namespace {netns} does not exist")
    full = nsenter_prefix(netns) + cmd
    try:
        res = subprocess.run(full, input=input, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise HostNetError(f"`{' '.join(cmd)}` timed out after {timeout:.0f} s") from None
    if res.returncode != 0:
        why = next((ln.strip() for ln in (res.stderr or res.stdout).splitlines() if ln.strip()), f"exit {res.returncode}")
        where = f" in netns {netns}" if netns else ""
        raise HostNetError(f"`{' '.join(cmd)}`{where} failed: {why}")
    return res.stdout


def ip(*args: str, netns: str | None = None) -> str:
    return run([tool("ip"), *args], netns=netns)


def ip_json(*args: str, netns: str | None = None) -> list[dict[str, Any]]:
    out = ip("-j", *args, netns=netns).strip()
    return json.loads(out) if out else []


def in_netns(ns: str | None, fn: Callable[[], T]) -> T:
    """Call ``fn`` on a thread that entered ``ns`` (sockets it creates stay in ``ns``); the caller's threads
    are untouched."""
    if ns is None:
        return fn()
    path = netns_path(ns)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.setns(fd, _CLONE_NEWNET) != 0:
                    raise HostNetError(f"cannot enter network namespace {ns}: {os.strerror(ctypes.get_errno())}")
            finally:
                os.close(fd)
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            box["error"] = e

    t = threading.Thread(target=target, name=f"netns:{ns}", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


