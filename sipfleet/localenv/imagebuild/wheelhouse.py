"""The wheelhouse: every wheel the images install, downloaded with pip on the host into a directory that the
image builds get as their ``wheelhouse`` named context (installed there with ``pip --no-index``).

``ensure_wheelhouse(targets)`` returns ``$SIPFLEET_CACHE/images/wheelhouse/<key>/wheels``, where ``key`` hashes
the requirement list (the targets' constraints and build requirements) and pip's target-interpreter flags: it is
downloaded again only when a pin changes. Downloads are wheels only, for CPython 3.11 manylinux x86_64 (the
images' interpreter), with ``--no-deps`` (the constraints already are the full closure); every pin must then be
present as exactly one wheel, or making it fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import cache, pins
from .targets import Target


@dataclass(frozen=True)
class Wheelhouse:
    path: Path
    key: str
    wheels: int
    size: int
    rebuilt: bool
    seconds: float


def key_for(requirements: list[str]) -> str:
    data = json.dumps({"requirements": sorted(requirements), "flags": pins.target_flags()}, sort_keys=True)
    return hashlib.sha256(data.encode()).hexdigest()[:16]


def wheel_name(filename: str) -> tuple[str, str]:
    """(canonical distribution name, version) of a wheel file name."""
    dist, version = filename.split("-")[:2]
    return pins.canonical_name(dist), version


def missing(requirements: list[str], filenames: list[str]) -> list[str]:
    """The ``name==version`` requirements no wheel in ``filenames`` satisfies (pure)."""
    have = {wheel_name(f) for f in filenames if f.endswith(".whl")}
    out = []
    for req in requirements:
        name, _, version = req.partition("==")
        if (pins.canonical_name(name), version) not in have:
            out.append(req)
    return out


def _summary(entry: Path, key: str, rebuilt: bool, seconds: float) -> Wheelhouse:
    wheels = sorted((entry / "wheels").glob("*.whl"))
    return Wheelhouse(entry / "wheels", key, len(wheels), sum(w.stat().st_size for w in wheels), rebuilt, seconds)


def ensure_wheelhouse(targets: list[Target]) -> Wheelhouse:
    requirements = pins.wheel_requirements(targets)
    if any("==" not in r for r in requirements):
        raise ValueError(f"the wheelhouse needs exact pins, got {[r for r in requirements if '==' not in r]}")
    key = key_for(requirements)
    entry = cache.root() / "wheelhouse" / key
    t0 = time.monotonic()
    if (entry / "done").exists():
        return _summary(entry, key, False, time.monotonic() - t0)
    with cache.FileLock(entry.parent / f".{key}.lock"):
        if (entry / "done").exists():
            return _summary(entry, key, False, time.monotonic() - t0)
        staging = entry.parent / f".{key}.new"
        if staging.exists():
            shutil.rmtree(staging)
        (staging / "wheels").mkdir(parents=True)
        (staging / "requirements.txt").write_text("".join(r + "\n" for r in requirements))
        print(f"images: downloading {len(requirements)} wheels with pip", file=sys.stderr, flush=True)
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
               "--dest", str(staging / "wheels"), *pins.target_flags(), "-r", str(staging / "requirements.txt")]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise RuntimeError(f"pip download failed:\n{proc.stderr.strip()}")
        lacking = missing(requirements, os.listdir(staging / "wheels"))
        if lacking:
            shutil.rmtree(staging, ignore_errors=True)
            raise RuntimeError(f"the wheelhouse lacks wheels for {lacking}")
        (staging / "done").write_text("")
        if entry.exists():
            shutil.rmtree(entry)
        os.replace(staging, entry)
    return _summary(entry, key, True, time.monotonic() - t0)
