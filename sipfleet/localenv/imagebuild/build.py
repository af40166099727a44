"""Build sipfleet's images (operator, agent) into OCI archives in the cache, only when their inputs changed.

``build_images()`` makes the base image and the wheelhouse if needed, then for each target computes the key of
its inputs (``inputs_key``: the Dockerfile and its .dockerignore, every file of the build context, the
wheelhouse key, the base image digest, the BuildKit binary and the build arguments). An archive built from the
same inputs is reused; otherwise one ``buildkitd`` is started for all the builds needed and stopped after them.
Results live in ``$SIPFLEET_CACHE/images/built/<component>/<key>/`` (``image.tar`` and ``meta.json``); only a
component's ``KEEP`` most recent results are kept (two checkouts with different code each keep theirs).
``list_built()`` reads them back without building anything, preferring the result for the current inputs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tarfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import kubebin
from . import base, buildkit, cache, oci, pins, wheelhouse
from .targets import Target, targets

#: build arguments of every local build: pip installs from the wheelhouse alone
BUILD_ARGS = {"PIP_NO_INDEX": "1"}


@dataclass(frozen=True)
class Built:
    component: str
    name: str  # repository:tag as the chart writes it
    full_name: str  # what containerd stores
    archive: str
    digest: str  # the manifest digest
    size: int  # compressed (manifest + config + layers)
    unpacked: int  # bytes of regular files, all layers applied
    key: str
    rebuilt: bool
    seconds: float

    def line(self) -> str:
        state = "rebuilt" if self.rebuilt else "cached"
        return (f"{self.name}  {self.digest}  {self.size / 1e6:.1f} MB ({self.unpacked / 1e6:.0f} MB unpacked)  "
                f"{state} in {self.seconds:.1f} s  {self.archive}")


def _log(msg: str) -> None:
    print(f"images: {msg}", file=sys.stderr, flush=True)


def inputs_key(target: Target, *, base_digest: str, wheelhouse_key: str, buildkit_id: str,
               build_args: dict[str, str]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"base": base_digest, "wheelhouse": wheelhouse_key, "buildkit": buildkit_id,
                         "args": build_args, "name": target.full_name}, sort_keys=True).encode())
    h.update(cache.hash_tree([target.dockerfile, target.dockerignore, *target.context_paths()], target.repo).encode())
    return h.hexdigest()[:16]


def component_dir(component: str) -> Path:
    return cache.root() / "built" / component


def _load(entry: Path) -> Built | None:
    try:
        return Built(**json.loads((entry / "meta.json").read_text()))
    except (OSError, ValueError, TypeError):
        return None


def current_keys() -> dict[str, str]:
    """The inputs key each target would have now, for those whose inputs can be known without making anything
    (base made, BuildKit built); ``{}`` entries are missing otherwise."""
    all_targets = targets()
    spec = base.BaseSpec()
    buildkitd = kubebin.resolve("buildkitd", allow_path=False)
    if not (base.cache_dir(spec) / "done").exists() or buildkitd is None:
        return {}
    digest = oci.read_archive(base.cache_dir(spec) / "layout").digest
    wh_key = wheelhouse.key_for(pins.wheel_requirements(list(all_targets.values())))
    return {c: inputs_key(t, base_digest=digest, wheelhouse_key=wh_key, buildkit_id=_buildkit_id(buildkitd),
                          build_args=BUILD_ARGS) for c, t in all_targets.items()}


def list_built() -> list[Built]:
    """What the cache holds, one result per component (nothing is built here): the one for the current inputs
    where there is one, else the newest. Checkouts share the cache, so the newest may be another checkout's."""
    keys = current_keys()
    out = []
    for component in targets():
        entries = [e for e in component_dir(component).glob("*") if (e / "done").exists()] \
            if component_dir(component).is_dir() else []
        loaded = [b for b in (_load(e) for e in entries) if b is not None]
        mtimes = {b.archive: Path(b.archive).stat().st_mtime if Path(b.archive).exists() else 0.0 for b in loaded}
        chosen = pick_listed(loaded, keys.get(component), mtimes)
        if chosen is not None:
            out.append(chosen)
    return out


def pick_listed(loaded: list[Built], current_key: str | None, mtimes: dict[str, float]) -> Built | None:
    """The result to list for one component: the current key's, else the newest archive (pure)."""
    for b in loaded:
        if current_key is not None and b.key == current_key:
            return b
    return max(loaded, key=lambda b: mtimes.get(b.archive, 0.0), default=None)


def _buildkit_id(path: Path) -> str:
    return path.parent.name  # buildkit-<version>-<key>: changes with the pinned module


def _unpacked_size(archive: Path) -> int:
    """Sum of regular-file sizes over all layers (what the image takes once unpacked, before whiteouts)."""
    total = 0
    info = oci.read_archive(archive)
    with tarfile.open(archive, "r:") as outer:
        for layer in info.layers:
            member = outer.getmember(f"blobs/{layer.digest.replace(':', '/')}")
            f = outer.extractfile(member)
            assert f is not None
            mode = "r|gz" if layer.media_type.endswith("gzip") else "r|"
            with tarfile.open(fileobj=f, mode=mode) as tar:
                total += sum(m.size for m in tar if m.isreg())
    return total


def _record(target: Target, staging: Path, entry: Path, key: str, seconds: float) -> Built:
    """Check the archive in ``staging`` and write its meta.json, naming the archive where ``entry`` will be."""
    archive = staging / "image.tar"
    info = oci.read_archive(archive)
    if info.ref != target.full_name:
        raise RuntimeError(f"{archive} holds {info.ref!r}, expected {target.full_name!r}")
    built = Built(target.component, target.name, target.full_name, str(entry / "image.tar"), info.digest,
                  info.compressed_size, _unpacked_size(archive), key, True, seconds)
    (staging / "meta.json").write_text(json.dumps(asdict(built), indent=2) + "\n")
    return built


KEEP = 4
#: a result younger than this may be in use by another checkout's session (its cluster loads it at start, its
#: demo later): never removed, however many there are
MIN_AGE_S = 24 * 3600


def stale_results(entries: list[tuple[str, float]], keep: str, n: int = KEEP, *, now: float = float("inf"),
                  min_age: float = MIN_AGE_S) -> list[str]:
    """Which of a component's results (name, mtime) to remove: all but the ``n`` newest, never ``keep`` and
    never one younger than ``min_age`` at ``now`` (pure)."""
    newest = [name for name, _ in sorted(entries, key=lambda e: -e[1]) if name != keep]
    kept = {keep, *newest[: n - 1]}
    return sorted(name for name, mtime in entries if name not in kept and now - mtime >= min_age)


def _prune(directory: Path, keep: str) -> None:
    entries = [(d.name, d.stat().st_mtime) for d in directory.iterdir() if not d.name.startswith(".")]
    for name in stale_results(entries, keep, now=time.time()):
        shutil.rmtree(directory / name, ignore_errors=True)


def build_images(components: list[str] | None = None, *, force: bool = False) -> list[Built]:
    """Build (or reuse) the images of ``components`` (default: all); returns one ``Built`` per image."""
    all_targets = targets()
    wanted = [all_targets[c] for c in (components or list(all_targets))]
    base_image = base.ensure_base()
    _log(f"base {base_image.ref} {base_image.digest[:19]} {base_image.size / 1e6:.1f} MB "
         f"{'made' if base_image.rebuilt else 'cached'} in {base_image.seconds:.1f} s")
    wh = wheelhouse.ensure_wheelhouse(list(all_targets.values()))
    _log(f"wheelhouse {wh.wheels} wheels {wh.size / 1e6:.1f} MB {'downloaded' if wh.rebuilt else 'cached'} "
         f"in {wh.seconds:.1f} s ({wh.path})")
    bins = kubebin.ensure(["buildkitd", "buildctl", "runc"], allow_path=False)
    keys = {t.component: inputs_key(t, base_digest=base_image.digest, wheelhouse_key=wh.key,
                                    buildkit_id=_buildkit_id(bins["buildkitd"]), build_args=BUILD_ARGS)
            for t in wanted}
    results: dict[str, Built] = {}
    todo = []
    for t in wanted:
        entry = component_dir(t.component) / keys[t.component]
        cached = _load(entry) if (entry / "done").exists() and not force else None
        if cached is not None:
            results[t.component] = Built(**{**asdict(cached), "rebuilt": False, "seconds": 0.0})
        else:
            todo.append(t)
    if todo:
        with buildkit.Daemon(bins["buildkitd"], bins["buildctl"], bins["runc"], kubebin.cni_bin_dir()) as daemon:
            _log(f"buildkitd ready in {daemon.started_in:.1f} s ({daemon.paths.state})")
            for t in todo:
                key = keys[t.component]
                entry = component_dir(t.component) / key
                # another process may have built it while we waited for the daemon's lock: never build (and
                # replace under its reader) what is already there
                done = _load(entry) if (entry / "done").exists() and not force else None
                if done is not None:
                    results[t.component] = Built(**{**asdict(done), "rebuilt": False, "seconds": 0.0})
                    continue
                staging = entry.with_name(f".{key}.new")
                shutil.rmtree(staging, ignore_errors=True)
                staging.mkdir(parents=True)
                cmd = buildkit.build_cmd(bins["buildctl"], daemon.paths, context=t.repo, dockerfile=t.dockerfile,
                                         base_layout=base_image.layout, base_ref=base_image.buildkit_source,
                                         wheelhouse=wh.path, output=staging / "image.tar", name=t.full_name,
                                         build_args=BUILD_ARGS)
                t0 = time.monotonic()
                daemon.build(cmd, staging / "build.log")
                os.chmod(staging / "image.tar", 0o644)
                (staging / "buildctl.json").write_text(json.dumps(cmd, indent=2) + "\n")
                results[t.component] = _record(t, staging, entry, key, time.monotonic() - t0)
                (staging / "done").write_text("")
                shutil.rmtree(entry, ignore_errors=True)
                os.replace(staging, entry)
                _prune(component_dir(t.component), keep=key)
    return [results[t.component] for t in wanted]
