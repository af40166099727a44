"""A snapshot of everything on the host that sipfleet's local environment could change, and the difference of two.

``snapshot()`` reads (never changes): the host netns' links, addresses and routes, the network namespaces in
/run/netns, the host's nftables tables, every mount point, the first level of every cgroup v1 hierarchy, the
kernel and forwarding sysctls, the fixed host paths the kubelet and containerd create, and the processes running
sipfleet's cached binaries (with the network namespace each runs in). ``diff(before, after)`` lists what differs,
one line each: a test brings a cluster or a lab up and down between two snapshots and requires an empty diff.
While other sipfleet owners run (another test session's cluster and lab), ``diff(..., foreign=others(mine))``
leaves out the lines that name *their* objects (sipfleet's link, netns, cgroup and address names that are not
``mine``); their state directories go into ``snapshot(exclude=...)``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any, Callable, Iterable

from .cluster.hostside import CGROUP_BASE, FIXED_PATHS, KERNEL_SYSCTLS, mount_points
from .hostnet.shared import RECORD as SHARED_RECORD

SYSCTLS = (*KERNEL_SYSCTLS, "net/ipv4/ip_forward", "net/ipv4/conf/all/forwarding", "net/ipv6/conf/all/forwarding")
PATHS = (*FIXED_PATHS, "/run/netns", str(SHARED_RECORD), "/var/lib/containerd", "/run/runc", "/etc/cni", "/opt/cni")


def _ip(*args: str) -> Any:
    out = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, timeout=30).stdout.strip()
    return json.loads(out) if out else []


def _cgroups() -> list[str]:
    out = []
    for h in sorted(CGROUP_BASE.iterdir()) if CGROUP_BASE.is_dir() else []:
        if h.is_dir() and not h.is_symlink():
            out += [f"{h.name}/{d.name}" for d in sorted(h.iterdir()) if d.is_dir()]
    return out


def _netns_names() -> dict[int, str]:
    """inode -> name of every named network namespace (``/run/netns``)."""
    out = {}
    for name in os.listdir("/run/netns") if os.path.isdir("/run/netns") else []:
        try:
            out[os.stat(f"/run/netns/{name}").st_ino] = name
        except OSError:
            pass
    return out


def _processes(bin_root: Path, exclude: tuple[str, ...]) -> list[str]:
    """``<binary> in <netns name | host | netns:<inode>>`` for each process running a cached sipfleet binary."""
    names = _netns_names()
    try:
        host_ino = os.stat("/proc/1/ns/net").st_ino
    except OSError:
        host_ino = None
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                exe = os.readlink(f"/proc/{entry}/exe")
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
                ino = os.stat(f"/proc/{entry}/ns/net").st_ino
            except OSError:
                continue
            if exe.startswith(str(bin_root)) and not any(d in cmd for d in exclude):
                where = "host" if ino == host_ino else names.get(ino, f"netns:{ino}")
                found.append(f"{Path(exe).name} in {where}")
    return sorted(found)


def _under_other_cluster(mount: str, own: str | None, seen: dict[str, bool]) -> bool:
    """Whether ``mount`` lies under the state directory of a sipfleet cluster (a directory holding
    ``cluster.json``) other than ``own``."""
    p = Path(mount)
    for d in [p, *p.parents]:
        key = str(d)
        if key not in seen:
            seen[key] = (d / "cluster.json").is_file()
        if seen[key]:
            return key != own
    return False


def snapshot(bin_root: Path | None = None, exclude: tuple[str | os.PathLike[str], ...] = (), *,
             own_cluster: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """``exclude``: state directories of other sipfleet owners that run meanwhile (a session's cluster): their
    mounts and processes (named by their command lines) are left out. With ``own_cluster`` (a cluster's state
    directory), the mounts of every *other* sipfleet cluster, wherever its state lives, are left out too."""
    from .kubebin import cache_root

    skip = tuple(str(d) for d in exclude)
    own = str(Path(own_cluster)) if own_cluster is not None else None
    seen: dict[str, bool] = {}

    nft = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, timeout=30).stdout
    return {
        "links": sorted(ln["ifname"] for ln in _ip("link")),
        "addrs": sorted(f"{a['ifname']} {i['local']}/{i['prefixlen']}" for a in _ip("addr") for i in a.get("addr_info", [])),
        "routes": sorted(json.dumps(r, sort_keys=True) for table in ("main", "local")
                         for r in _ip("route", "show", "table", table)),
        "netns": sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else [],
        "nft": sorted(ln.strip() for ln in nft.splitlines() if ln.strip()),
        "mounts": sorted(m for m in mount_points(Path("/proc/self/mountinfo").read_text())
                         if not any(m == d or m.startswith(d + "/") for d in skip)
                         and not (own is not None and _under_other_cluster(m, own, seen))),
        "cgroups": _cgroups(),
        "sysctls": {k: (Path("/proc/sys", k).read_text().strip() if Path("/proc/sys", k).exists() else None)
                    for k in SYSCTLS},
        "paths": {p: os.path.lexists(p) for p in PATHS},
        "processes": _processes(bin_root or cache_root() / "bin", skip),
    }


#: names sipfleet gives host objects: links sfc<c>h / sfl<l>br / sfj<l>c<c>, netns and cgroups sipfleet-*, its
#: address ranges
_SIPFLEET_NAME = re.compile(r"\bsf[lcj]\d|sipfleet-|\b10\.21[34]\.")


def others(mine: Iterable[str]) -> Callable[[str], bool]:
    """A ``foreign`` filter for :func:`diff`: true for a line that names a sipfleet object and none of ``mine``
    (exact substrings: a cluster's netns and name, its link names, its address prefix ``10.213.<slot>.``)."""
    own = [m for m in mine if m]

    def foreign(line: str) -> bool:
        return bool(_SIPFLEET_NAME.search(line)) and not any(m in line for m in own)

    return foreign


def diff(before: dict[str, Any], after: dict[str, Any], *, foreign: Callable[[str], bool] | None = None) -> list[str]:
    """What differs, one line each; lines ``foreign`` says belong to another owner are left out."""
    out = _lines(before, after)
    return [ln for ln in out if foreign is None or not foreign(ln)]


def _lines(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    out = []
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key), after.get(key)
        if isinstance(a, list) and isinstance(b, list):
            out += [f"{key}: + {x}" for x in sorted(set(b) - set(a))]
            out += [f"{key}: - {x}" for x in sorted(set(a) - set(b))]
        elif isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key}: {k} {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            out.append(f"{key}: {a!r} -> {b!r}")
    return out
