"""The local Python base image: Debian bookworm made with ``debootstrap`` from the Debian mirror, as an OCI
image layout in the cache.

``ensure_base()`` returns the layout of the base image that replaces the Dockerfiles' public
``python:3.11.14-slim-bookworm`` when building here. It is made once per set of inputs (suite, variant,
packages, mirror, architecture and the trimming recipe: ``BaseSpec.key()``) and reused until one of them
changes: ``$SIPFLEET_CACHE/images/base/bookworm-<key>/layout``. Making it runs ``debootstrap`` (as root; it
is installed with apt-get if missing) into a temporary directory next to the cache entry, trims what a runtime
image does not need (apt's package cache and lists, documentation except copyright files, man pages,
translations), writes the OCI layout and removes the directory. A file lock serialises concurrent makers.

The image's Python is Debian's ``python3`` (3.11, ``/usr/bin/python3``) with ``venv``; ``installed.txt`` next
to the layout lists the Debian packages (name and version) it was made from.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import cache, hostfs, oci

#: Bumped when the recipe below changes in a way the key fields do not show.
RECIPE_VERSION = 1
#: What is removed from the debootstrapped tree (relative globs); copyright files are kept.
TRIM = (
    "var/cache/apt/archives/*.deb",
    "var/cache/apt/*.bin",
    "var/lib/apt/lists/*",
    "var/log/*",
    "var/cache/debconf/*-old",
    "usr/share/man/*",
    "usr/share/info/*",
    "usr/share/locale/*",
    "usr/share/lintian/*",
)
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class BaseSpec:
    suite: str = "bookworm"
    variant: str = "minbase"
    include: tuple[str, ...] = ("python3", "python3-venv")
    mirror: str = "http://deb.debian.org/debian"
    arch: str = "amd64"
    trim: tuple[str, ...] = TRIM
    recipe: int = RECIPE_VERSION
    ref: str = field(default="sipfleet/base:bookworm-python3", compare=False)

    def key(self) -> str:
        data = asdict(self)
        data.pop("ref")
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]

    def debootstrap_cmd(self, target: Path, debootstrap: str = "debootstrap") -> list[str]:
        return [debootstrap, f"--variant={self.variant}", f"--include={','.join(self.include)}",
                f"--arch={self.arch}", self.suite, str(target), self.mirror]


@dataclass(frozen=True)
class BaseImage:
    layout: Path
    ref: str
    digest: str
    size: int  # compressed (layer + config + manifest)
    rebuilt: bool
    seconds: float

    @property
    def buildkit_source(self) -> str:
        """The named-context value BuildKit takes for this layout (with ``--oci-layout <store>=<layout>``)."""
        return f"oci-layout://{STORE_ID}@{self.digest}"


STORE_ID = "sipfleet-base"


def cache_dir(spec: BaseSpec) -> Path:
    return cache.root() / "base" / f"{spec.suite}-{spec.key()}"


def _log(msg: str) -> None:
    print(f"images: {msg}", file=sys.stderr, flush=True)


def _debootstrap() -> str:
    found = shutil.which("debootstrap") or ("/usr/sbin/debootstrap" if Path("/usr/sbin/debootstrap").exists() else None)
    if found:
        return found
    if os.geteuid() != 0:
        raise RuntimeError("debootstrap is not installed (apt-get install debootstrap, as root)")
    _log("installing debootstrap with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "debootstrap"], check=True,
                   env=env, stdout=subprocess.DEVNULL)
    return shutil.which("debootstrap") or "/usr/sbin/debootstrap"


def _remove_tree(path: Path) -> None:
    """Remove a debootstrap target: unmount what debootstrap may have left mounted (proc, sys) first."""
    hostfs.unmount_under(path)
    if path.exists():
        shutil.rmtree(path)


def trim(rootfs: Path, patterns: tuple[str, ...]) -> None:
    for pattern in patterns:
        for p in rootfs.glob(pattern):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
    doc = rootfs / "usr/share/doc"
    if doc.is_dir():  # keep each package's copyright file
        for p in sorted(doc.rglob("*"), key=lambda q: len(q.parts), reverse=True):
            if p.name == "copyright" and not p.is_dir():
                continue
            if p.is_dir() and not p.is_symlink():
                if not any(p.iterdir()):
                    p.rmdir()
            else:
                p.unlink()


def installed_packages(rootfs: Path) -> str:
    out = subprocess.run(["chroot", str(rootfs), "dpkg-query", "-W", "-f=${Package} ${Version}\n"],
                         check=True, capture_output=True, text=True).stdout
    return "".join(sorted(out.splitlines(keepends=True)))


def _read(entry: Path, spec: BaseSpec, rebuilt: bool, seconds: float) -> BaseImage:
    info = oci.read_archive(entry / "layout")
    return BaseImage(entry / "layout", spec.ref, info.digest, info.compressed_size, rebuilt, seconds)


def ensure_base(spec: BaseSpec = BaseSpec()) -> BaseImage:
    """The base image's layout, made now if the cache has none for ``spec``."""
    entry = cache_dir(spec)
    t0 = time.monotonic()
    if (entry / "done").exists():
        return _read(entry, spec, False, time.monotonic() - t0)
    entry.parent.mkdir(parents=True, exist_ok=True)
    with cache.FileLock(entry.parent / f".{entry.name}.lock"):
        if (entry / "done").exists():
            return _read(entry, spec, False, time.monotonic() - t0)
        if os.geteuid() != 0:
            raise RuntimeError("making the base image needs root (debootstrap)")
        tool = _debootstrap()
        work = entry.parent / f".{entry.name}.work"
        _remove_tree(work)
        if entry.exists():
            shutil.rmtree(entry)
        rootfs = work / "rootfs"
        rootfs.mkdir(parents=True)
        log = work / "debootstrap.log"
        _log(f"debootstrap {spec.suite} ({spec.variant}, {', '.join(spec.include)}) from {spec.mirror}")
        try:
            with open(log, "wb") as f:
                proc = subprocess.run(spec.debootstrap_cmd(rootfs, tool), stdout=f, stderr=subprocess.STDOUT)
            if proc.returncode != 0:
                tail = log.read_text(errors="replace").splitlines()[-15:]
                raise RuntimeError("debootstrap failed:\n" + "\n".join(tail))
            hostfs.unmount_under(rootfs)  # debootstrap unmounts on success; make sure
            packages = installed_packages(rootfs)
            trim(rootfs, spec.trim)
            staging = entry.parent / f".{entry.name}.new"
            if staging.exists():
                shutil.rmtree(staging)
            staging.mkdir()
            labels = {"org.opencontainers.image.title": "sipfleet local base (Debian bookworm, python3)",
                      "org.opencontainers.image.base.name": f"debian:{spec.suite}",
                      "io.sipfleet.base.key": spec.key()}
            oci.write_image(rootfs, staging / "layout", ref=spec.ref, env=[PATH_ENV, "LANG=C.UTF-8"],
                            cmd=["python3"], labels=labels,
                            history=" ".join(spec.debootstrap_cmd(Path("/rootfs"))) + " && trim")
            (staging / "installed.txt").write_text(packages)
            (staging / "spec.json").write_text(json.dumps(asdict(spec), indent=2) + "\n")
            (staging / "done").write_text("")
            os.replace(staging, entry)
        finally:
            _remove_tree(work)
        image = _read(entry, spec, True, time.monotonic() - t0)
        _log(f"base image {image.ref} {image.digest[:19]} ({image.size / 1e6:.0f} MB compressed) "
             f"in {image.seconds:.0f} s")
        return image
