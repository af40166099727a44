"""What a real node changes on the host outside its network namespace, recorded at ``up`` and undone at ``down``.

* **cgroups**: the kubelet's cgroup root ``/sipfleet-<cluster>`` in every cgroup v1 hierarchy (cpuset gets its
  parent's cpus and mems), and the one the kubelet makes itself in the unified hierarchy of a hybrid host.
  ``down`` removes those subtrees, deepest first, once their processes are gone; no other cgroup is touched.
* **machine-wide** (hostnet.shared, with the labs): the kernel sysctls the kubelet sets when
  ``protectKernelDefaults`` is off (``kernel.panic``, ``kernel.panic_on_oops``, ``vm.overcommit_memory``, the root
  key quotas), and the fixed host paths the kubelet and containerd create whatever they are told (the
  device-plugin directory, ``/var/log/containers``, containerd's shim socket directory): the last sipfleet
  owner down writes the sysctls back and removes the paths sipfleet created.
* **mounts** under the cluster's state directory (the kubelet's root, pod volumes, pod netns, container
  rootfs): unmounted deepest first at ``down``.

Pure parts (mountinfo parsing, the order of removal) are unit-tested; the rest is thin file-system I/O.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..hostnet import shared

CGROUP_BASE = Path("/sys/fs/cgroup")
KERNEL_SYSCTLS = ("kernel/panic", "kernel/panic_on_oops", "vm/overcommit_memory", "kernel/keys/root_maxkeys",
                  "kernel/keys/root_maxbytes")
#: host paths the kubelet or containerd create regardless of their configuration
FIXED_PATHS = ("/var/lib/kubelet", "/var/log/containers", "/run/containerd")

_MNT_DETACH = 2


class HostSideError(RuntimeError):
    """A host prerequisite is missing (one line, for humans)."""


# ---------------------------------------------------------------------------------------------- pure helpers


def unescape_mount_path(field_: str) -> str:
    """Mount paths in /proc/self/mountinfo escape space, tab, newline and backslash as octal."""
    out, i = [], 0
    while i < len(field_):
        if field_[i] == "\\" and i + 3 < len(field_) and field_[i + 1:i + 4].isdigit():
            out.append(chr(int(field_[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field_[i])
            i += 1
    return "".join(out)


def mount_points(mountinfo: str) -> list[str]:
    """Every mount point listed in a mountinfo text, in order."""
    points = []
    for line in mountinfo.splitlines():
        parts = line.split()
        if len(parts) > 4:
            points.append(unescape_mount_path(parts[4]))
    return points


def mounts_under(mountinfo: str, root: str | os.PathLike[str]) -> list[str]:
    """Mount points at or under ``root``, deepest (and latest) first: the order to unmount them in."""
    base = os.path.normpath(str(root))
    inside = [p for p in mount_points(mountinfo) if p == base or p.startswith(base + "/")]
    seen: dict[str, int] = {}
    for i, p in enumerate(inside):
        seen[p] = i
    return sorted(seen, key=lambda p: (-p.count("/"), -seen[p]))


def cgroup_v1_hierarchies(mountinfo: str) -> list[str]:
    """The cgroup v1 hierarchies mounted under /sys/fs/cgroup (not the unified v2 one)."""
    out = []
    for line in mountinfo.splitlines():
        pre, _, post = line.partition(" - ")
        fstype = post.split()[0] if post else ""
        parts = pre.split()
        if fstype == "cgroup" and len(parts) > 4 and parts[4].startswith(str(CGROUP_BASE) + "/"):
            out.append(unescape_mount_path(parts[4]))
    return sorted(set(out))


def cgroup_dirs_deepest_first(paths: list[str]) -> list[str]:
    return sorted(set(paths), key=lambda p: (-p.count("/"), p))


# ---------------------------------------------------------------------------------------------- the record


@dataclass
class HostRecord:
    """This cluster's own host side effects (``host.json``): its cgroup subtrees."""

    cgroups: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> "HostRecord":
        try:
            d = json.loads(path.read_text())
        except (OSError, ValueError):
            return cls()
        return cls(cgroups=list(d.get("cgroups", [])))

    def save(self, path: Path) -> None:
        if not self.cgroups:
            path.unlink(missing_ok=True)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps({"cgroups": self.cgroups}, indent=1) + "\n")
        os.replace(tmp, path)


def _read_mountinfo() -> str:
    return Path("/proc/self/mountinfo").read_text()


def _sysctl(key: str) -> str | None:
    try:
        return Path("/proc/sys", key).read_text().strip()
    except OSError:
        return None


def prepare(record: HostRecord, path: Path, cluster_root: str) -> None:
    """Create the cluster's cgroup root in every v1 hierarchy (and note the unified one the kubelet makes)."""
    if (CGROUP_BASE / "cgroup.controllers").exists():
        raise HostSideError("this host uses cgroup v2 only; the local cluster is built for cgroup v1 (hybrid) "
                            "hosts like ours and does not set up a v2 cgroup root yet")
    unified = CGROUP_BASE / "unified"
    if unified.is_dir() and str(unified / cluster_root.lstrip("/")) not in record.cgroups:
        record.cgroups.append(str(unified / cluster_root.lstrip("/")))  # the kubelet makes it; down removes it
    hierarchies = cgroup_v1_hierarchies(_read_mountinfo())
    if not hierarchies:
        raise HostSideError("no cgroup v1 hierarchies are mounted under /sys/fs/cgroup")
    for h in hierarchies:
        d = Path(h) / cluster_root.lstrip("/")
        if not d.is_dir():
            d.mkdir()
        if str(d) not in record.cgroups:
            record.cgroups.append(str(d))
        if Path(h).name == "cpuset" or (Path(h) / "cpuset.cpus").exists():
            for f in ("cpuset.cpus", "cpuset.mems"):
                if (d / f).exists() and not (d / f).read_text().strip():
                    (d / f).write_text((Path(h) / f).read_text())
    record.save(path)


def cgroup_pids(record: HostRecord) -> list[int]:
    """Every process still in the cluster's cgroups (pods whose shim outlived the runtime, say)."""
    pids: set[int] = set()
    for root in record.cgroups:
        for dirpath, _dirs, files in os.walk(root):
            if "cgroup.procs" in files:
                try:
                    pids |= {int(x) for x in Path(dirpath, "cgroup.procs").read_text().split()}
                except (OSError, ValueError):
                    pass
    return sorted(pids)


SHIM = "containerd-shim-runc-v2"


def is_shim_of(argv: list[str], socket: str) -> bool:
    """Whether ``argv`` (a process's command line) is a runc shim serving the containerd at ``socket``. Pure."""
    if not argv or os.path.basename(argv[0]) != SHIM:
        return False
    return any(a == "-address" and i + 1 < len(argv) and argv[i + 1] == socket for i, a in enumerate(argv))


def shim_pids(socket: Path) -> list[int]:
    """PIDs of the shims our containerd at ``socket`` started: they are daemons of their own, so they outlive a
    containerd that was killed with the test run that started it (they are in no cgroup of the cluster's)."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            argv = Path("/proc", d, "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if is_shim_of(argv, str(socket)):
            found.append(int(d))
    return sorted(found)


def remove_cgroups(record: HostRecord) -> list[str]:
    """rmdir the cluster's cgroup subtrees, deepest first; returns what could not be removed."""
    left = []
    for root in record.cgroups:
        dirs = [root] + [os.path.join(dp, d) for dp, ds, _ in os.walk(root) for d in ds]
        for d in cgroup_dirs_deepest_first(dirs):
            try:
                os.rmdir(d)
            except FileNotFoundError:
                pass
            except OSError as e:
                left.append(f"{d}: {e.strerror}")
    if not left:
        record.cgroups = []
    return left


def _restore_sysctls(values: dict[str, str]) -> list[str]:
    problems = []
    for key, value in values.items():
        try:
            if _sysctl(key) != value:
                Path("/proc/sys", key).write_text(value + "\n")
        except OSError as e:
            problems.append(f"sysctl {key}: {e.strerror}")
    return problems


def unmount_under(root: Path) -> list[str]:
    """Unmount (lazily) every mount at or under ``root``; returns the failures."""
    libc = ctypes.CDLL(None, use_errno=True)
    failures = []
    for point in mounts_under(_read_mountinfo(), root):
        if libc.umount2(point.encode(), _MNT_DETACH) != 0:
            err = ctypes.get_errno()
            if err not in (22, 2):  # EINVAL (not a mount any more), ENOENT
                failures.append(f"umount {point}: {os.strerror(err)}")
    return failures


# ---------------------------------------------------------------------------------------------- shared host state


def claim_shared(user: str) -> None:
    """Before this cluster changes anything: register it with hostnet's shared record, which notes the kernel
    sysctls and which fixed host paths are not there yet (they then count as sipfleet's)."""
    shared.claim(user, paths=FIXED_PATHS, sysctls=KERNEL_SYSCTLS)


def release_shared(user: str, pod_logs_dir: Path) -> list[str]:
    """This cluster is down: drop its container-log symlinks, then leave the shared record (the last owner out
    restores the sysctls and removes what sipfleet created)."""
    logs = Path("/var/log/containers")
    if logs.is_dir():
        for link in logs.iterdir():
            with contextlib.suppress(OSError):
                if link.is_symlink() and os.readlink(link).startswith(str(pod_logs_dir)):
                    link.unlink()
    return shared.release(user)
