"""Run a built image once in a real container, with runc and no container engine: what tests use to check
an image before a kubelet exists.

``ImageBundle(archive, runc)`` unpacks the OCI archive once into a bundle under ``$SIPFLEET_CACHE/images/run/``;
each ``run(args)`` writes an OCI runtime spec as a kubelet would for a restricted pod (the image's
ENTRYPOINT/CMD, ENV, WorkingDir and USER; a read-only root filesystem; no capabilities; ``no_new_privs``; its
own PID, IPC, UTS, mount and network namespaces: the network namespace has only ``lo``), runs ``runc run`` in
the foreground and returns the exit code and output. runc removes the container's cgroup
(``sipfleet-imagerun-<id>`` in each hierarchy) when it ends; the bundle is removed on leaving the ``with``.
``run_image`` does all of it for one run. ``entrypoint`` replaces the image's ENTRYPOINT as a pod's
``command`` would.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from . import cache, oci


@dataclass(frozen=True)
class RunResult:
    returncode: int
    stdout: str
    stderr: str
    unpacked_bytes: int


def process_args(config: dict[str, Any], args: Sequence[str] | None, entrypoint: Sequence[str] | None) -> list[str]:
    """Kubernetes' rule: ``command`` replaces ENTRYPOINT (and drops CMD); ``args`` replace CMD (pure)."""
    image_entry = list(config.get("Entrypoint") or [])
    image_cmd = list(config.get("Cmd") or [])
    if entrypoint is not None:
        return list(entrypoint) + list(args or [])
    return image_entry + (list(args) if args is not None else image_cmd)


def parse_user(user: str) -> tuple[int, int]:
    """A numeric ``uid[:gid]`` (names would need the image's /etc/passwd; our images use numbers)."""
    uid, _, gid = (user or "0").partition(":")
    if not uid.isdigit() or (gid and not gid.isdigit()):
        raise ValueError(f"image USER {user!r} is not numeric")
    return int(uid), int(gid or uid)


def runtime_spec(image_config: dict[str, Any], argv: list[str], *, cgroup: str, hostname: str = "sipfleet-test",
                 extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """An OCI runtime spec for a restricted, read-only, network-less run of an image (pure)."""
    cfg = image_config.get("config") or {}
    uid, gid = parse_user(str(cfg.get("User") or "0"))
    env = list(cfg.get("Env") or [])
    for k, v in (extra_env or {}).items():
        env = [e for e in env if not e.startswith(k + "=")] + [f"{k}={v}"]
    if not argv:
        raise ValueError("nothing to run: the image has no ENTRYPOINT/CMD and no command was given")
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": uid, "gid": gid},
            "args": argv,
            "env": env,
            "cwd": cfg.get("WorkingDir") or "/",
            "capabilities": {k: [] for k in ("bounding", "effective", "inheritable", "permitted", "ambient")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": hostname,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        ],
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "cgroupsPath": f"/{cgroup}",
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
                            "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware"],
            "readonlyPaths": ["/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                              "/proc/sysrq-trigger"],
        },
    }


class ImageBundle:
    """An image unpacked once into a bundle, run any number of times (``with ImageBundle(archive, runc) as b``)."""

    def __init__(self, archive: Path, runc: Path):
        self.archive, self.runc = archive, runc
        self.id = f"sipfleet-imagerun-{os.getpid()}-{secrets.token_hex(3)}"
        self.work = cache.root() / "run" / self.id
        self.config: dict[str, Any] = {}
        self.unpacked_bytes = 0
        self._runs = itertools.count()

    def __enter__(self) -> "ImageBundle":
        if self.work.exists():
            shutil.rmtree(self.work)
        try:
            self.config = oci.read_archive(self.archive).config
            self.unpacked_bytes = oci.unpack(self.archive, self.work / "rootfs")
        except BaseException:
            shutil.rmtree(self.work, ignore_errors=True)
            raise
        return self

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.work, ignore_errors=True)

    def run(self, args: Sequence[str] | None = None, *, entrypoint: Sequence[str] | None = None,
            env: dict[str, str] | None = None, timeout: float = 120) -> RunResult:
        """One ``runc run``; raises ``subprocess.TimeoutExpired`` (after killing it) past ``timeout``."""
        cid = f"{self.id}-{next(self._runs)}"
        state = self.work / "runc"
        argv = process_args(self.config.get("config") or {}, args, entrypoint)
        spec = runtime_spec(self.config, argv, cgroup=cid, extra_env=env)
        (self.work / "config.json").write_text(json.dumps(spec, indent=2))
        cmd = [str(self.runc), "--root", str(state), "run", "--bundle", str(self.work), cid]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            subprocess.run([str(self.runc), "--root", str(state), "kill", cid, "KILL"], capture_output=True)
            raise
        finally:
            subprocess.run([str(self.runc), "--root", str(state), "delete", "--force", cid], capture_output=True)
        return RunResult(proc.returncode, proc.stdout, proc.stderr, self.unpacked_bytes)


def run_image(archive: Path, args: Sequence[str] | None = None, *, runc: Path,
              entrypoint: Sequence[str] | None = None, env: dict[str, str] | None = None,
              timeout: float = 120) -> RunResult:
    """Unpack ``archive``, run it once, remove the bundle."""
    with ImageBundle(archive, runc) as bundle:
        return bundle.run(args, entrypoint=entrypoint, env=env, timeout=timeout)
