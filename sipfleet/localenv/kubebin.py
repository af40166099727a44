"""Pinned binaries (control plane, node, image builder), built from the Go modules in ``gomod/`` and cached
outside the repository.

``ensure(components)`` returns ``{name: Path}`` for the requested binaries, building only the missing ones.
The sets and their flags are in ``binsets`` (``ALL``, ``CONTROL_PLANE``, ``NODE``, ``IMAGE_BUILD``,
``CNI_PLUGINS``); ``ensure_node()`` returns every binary a real node runs (``NodeBinaries``), ``cni_bin_dir()``
the directory holding the CNI plugins, and ``check_node()`` says in one line why this machine cannot run a node.

Cache layout: ``$SIPFLEET_CACHE/bin/<set>-<version>-<key>/<name>`` (default ``~/.cache/sipfleet``), where
``key`` is a hash of the set's go.mod, go.sum, tools.go and build flags, so changing a pin rebuilds. A binary is
built into a temporary file in that directory and renamed into place (atomic); a file lock serialises concurrent
builders. Builds run one at a time (a kube-apiserver or kubelet link peaks at ~2 GB RSS).

Resolution order for each name:

1. ``KUBEBUILDER_ASSETS`` (a directory or ``:``-separated list of directories) holding an executable of that
   name: escape hatch for machines that already have the binaries.
2. The cache, if the binary is already built.
3. kubectl and helm only: a working one on ``PATH``. "Working" means it runs and, for kubectl, its client minor
   version is within one of the server's (the supported skew). The Google Cloud SDK ``kubectl`` dispatcher
   found on some machines reports v1.32 and is therefore not used against our v1.35 server: we build our own.
4. Build it (``go build``; ``gcc`` for the pause binary), which needs Go >= the module's go directive and the
   module proxy (or a warm GOMODCACHE); runc also needs gcc and libseccomp-dev.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from . import prereq, procs
from .binsets import (  # noqa: F401  (re-exported: the rest of sipfleet imports these from kubebin)
    ALL,
    CHART_CHECK,
    CNI_PLUGINS,
    CONTROL_PLANE,
    GOMOD_DIR,
    GROUPS,
    IMAGE_BUILD,
    NODE,
    PATH_OK,
    PROMETHEUS,
    SETS,
    BinarySet,
    KubebinError,
    cache_key,
    cache_root,
    expand,
    module_version,
    set_for,
)
from .prereq import go_directive, parse_go_version  # noqa: F401

# ---------------------------------------------------------------------------------------------------------------
# pure helpers (unit-tested)
# ---------------------------------------------------------------------------------------------------------------


def assets_dirs(value: str | None = None) -> list[Path]:
    """Directories named by KUBEBUILDER_ASSETS (``:``-separated); empty entries ignored."""
    value = os.environ.get("KUBEBUILDER_ASSETS", "") if value is None else value
    return [Path(p).expanduser() for p in value.split(os.pathsep) if p.strip()]


def _executable(p: Path) -> bool:
    return p.is_file() and os.access(p, os.X_OK)


def from_assets(name: str, value: str | None = None) -> Path | None:
    for d in assets_dirs(value):
        candidate = d / name
        if _executable(candidate):
            return candidate.absolute()
    return None


def explain_go_failure(output: str) -> str:
    """Turn go's stderr into one line."""
    low = output.lower()
    if "goproxy=off" in low or "module lookup disabled" in low:
        return "Go modules are not in the local module cache and GOPROXY=off forbids downloading them"
    network = ("dial tcp", "no such host", "connection refused", "i/o timeout", "tls handshake timeout",
               "proxyconnect", "network is unreachable", "temporary failure in name resolution")
    if any(n in low for n in network):
        return f"cannot reach the Go module proxy ({os.environ.get('GOPROXY') or 'https://proxy.golang.org'}) to download modules"
    if "cannot allocate memory" in low or "signal: killed" in low:
        return "the Go compiler ran out of memory (the kube-apiserver link needs ~2 GB)"
    if "no space left" in low:
        return "no space left on device while building"
    lines = [ln.strip() for ln in output.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "go build failed"


# ---------------------------------------------------------------------------------------------------------------
# PATH binaries
# ---------------------------------------------------------------------------------------------------------------


def _run_quiet(cmd: Sequence[str], timeout: float = 20) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None


def kubectl_minor(path: str) -> int | None:
    res = _run_quiet([path, "version", "--client", "-o", "json"])
    if res is None or res.returncode != 0:
        return None
    try:
        info = json.loads(res.stdout)["clientVersion"]
        return int(re.sub(r"\D.*", "", str(info.get("minor", ""))) or -1)
    except (ValueError, KeyError, TypeError):
        return None


def working_on_path(name: str, server_minor: int) -> Path | None:
    """A ``kubectl``/``helm`` on PATH that works with our server, else None."""
    found = shutil.which(name)
    if not found:
        return None
    if name == "kubectl":
        minor = kubectl_minor(found)
        if minor is None or abs(minor - server_minor) > 1:
            return None
        return Path(found)
    if name == "helm":
        res = _run_quiet([found, "version", "--short"])
        if res is None or res.returncode != 0 or not re.match(r"v[34]\.", res.stdout.strip()):
            return None
        return Path(found)
    return None


# ---------------------------------------------------------------------------------------------------------------
# building
# ---------------------------------------------------------------------------------------------------------------


def _log(msg: str) -> None:
    print(f"kubebin: {msg}", file=sys.stderr, flush=True)


def check_build(bset: BinarySet) -> str | None:
    """The path of ``go`` (None for a C-only set) once every build prerequisite of ``bset`` is there."""
    facts = prereq.host_facts(go=bset.builder == "go")
    go_needed = go_directive(bset.module_dir / "go.mod") if bset.builder == "go" else None
    problems = prereq.build_problems(facts, what=", ".join(bset.packages), go_needed=go_needed, needs=bset.needs)
    if problems:
        raise KubebinError("; ".join(problems))
    return facts.go if bset.builder == "go" else None


def _go_command(go: str, bset: BinarySet, name: str, out: Path) -> tuple[list[str], dict[str, str]]:
    env = {"GOTOOLCHAIN": "local", "CGO_ENABLED": "1" if bset.cgo else "0",
           "GOFLAGS": "-mod=readonly -buildvcs=false"}
    cmd = [go, "build", "-trimpath", "-o", str(out), "-ldflags", bset.ldflags()]
    if bset.tags:
        cmd += ["-tags", ",".join(bset.tags)]
    return cmd + [bset.packages[name]], env


def module_source_dir(go: str | None, bset: BinarySet) -> Path:
    """Where the set's main module is unpacked (downloading it if needed), via ``go mod download -json``."""
    go = go or shutil.which("go")
    if not go:
        raise KubebinError(f"Go is needed to fetch {bset.main_module} (the source of {bset.name})")
    env = dict(os.environ, GOTOOLCHAIN="local", GOFLAGS="-mod=readonly")
    res = subprocess.run([go, "mod", "download", "-json", bset.main_module], cwd=bset.module_dir, env=env,
                         capture_output=True, text=True, timeout=600)
    try:
        info = json.loads(res.stdout)
    except ValueError:
        info = {}
    if res.returncode != 0 or not info.get("Dir"):
        raise KubebinError(f"cannot fetch {bset.main_module}: "
                           f"{explain_go_failure(info.get('Error') or res.stderr or res.stdout)}")
    return Path(info["Dir"])


def _cc_command(go: str | None, bset: BinarySet, name: str, out: Path) -> tuple[list[str], dict[str, str]]:
    source = module_source_dir(go, bset) / bset.packages[name]
    cc = shutil.which("gcc") or shutil.which("cc") or "gcc"
    return [cc, *bset.ldflags().split(), "-o", str(out), str(source)], {}


def _build_one(go: str | None, bset: BinarySet, name: str, dest_dir: Path) -> Path:
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = dest_dir / f".{name}.{os.getpid()}.tmp"
    builder = _go_command if bset.builder == "go" else _cc_command
    cmd, env_extra = builder(go, bset, name, tmp)
    env = dict(os.environ, **env_extra)
    started = time.monotonic()
    _log(f"building {name} {bset.component_version(name)} from {bset.packages[name]}"
         + (" (a cold build takes minutes)" if bset.builder == "go" else ""))
    rec, proc = procs.spawn(f"build {name}", cmd, cwd=bset.module_dir, env=env, stdout=subprocess.PIPE, text=True,
                            die_with_parent=True)
    output: list[str] = []
    done = threading.Event()

    def ticker() -> None:
        while not done.wait(30):
            _log(f"  ... still building {name} ({time.monotonic() - started:.0f} s)")

    t = threading.Thread(target=ticker, daemon=True)
    t.start()
    downloads = 0
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            if line.startswith("go: downloading"):
                downloads += 1
                if downloads <= 3 or downloads % 25 == 0:
                    _log(f"  {line.strip()} ({downloads} modules so far)")
        rc = proc.wait()
    except BaseException:
        try:
            procs.stop([rec], grace=0)
        except OSError:
            pass
        proc.wait()
        tmp.unlink(missing_ok=True)
        raise
    finally:
        done.set()
    if rc != 0:
        tmp.unlink(missing_ok=True)
        raise KubebinError(f"building {name} failed: {explain_go_failure(''.join(output))}")
    final = dest_dir / name
    os.chmod(tmp, 0o755)
    os.replace(tmp, final)
    _log(f"built {name} in {time.monotonic() - started:.0f} s -> {final}")
    return final


class _Lock:
    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _log(f"waiting for another build holding {self.path}")
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def resolve(name: str, *, allow_path: bool = True) -> Path | None:
    """Where ``name`` is available without building, or None."""
    found = from_assets(name)
    if found:
        return found
    bset = set_for(name)
    cached = bset.cache_dir() / name
    if _executable(cached):
        return cached
    if allow_path and name in PATH_OK:
        kube_minor = int(re.match(r"v\d+\.(\d+)", SETS["kube"].version()).group(1))
        return working_on_path(name, kube_minor)
    return None


def ensure(components: Iterable[str] = ALL, *, allow_path: bool = True) -> dict[str, Path]:
    """Paths of the requested binaries (names or ``GROUPS`` names), building the missing ones one at a time."""
    wanted = expand(list(components))  # validates names
    result: dict[str, Path] = {}
    missing: list[str] = []
    for n in wanted:
        p = resolve(n, allow_path=allow_path)
        if p is None:
            missing.append(n)
        else:
            result[n] = p
    if not missing:
        return result
    missing.sort(key=lambda n: ALL.index(n) if n in ALL else 99)
    checked: dict[str, str | None] = {}
    for n in missing:
        bset = set_for(n)
        dest = bset.cache_dir()
        with _Lock(cache_root() / "bin" / ".build.lock"):
            if _executable(dest / n):  # somebody else built it meanwhile
                result[n] = dest / n
                continue
            if bset.name not in checked:
                checked[bset.name] = check_build(bset)
            result[n] = _build_one(checked[bset.name], bset, n, dest)
    return {n: result[n] for n in wanted}


def cni_bin_dir() -> Path:
    """The one directory holding every CNI plugin in ``CNI_PLUGINS`` (built if needed): containerd's bin_dir."""
    paths = ensure(CNI_PLUGINS, allow_path=False)
    dirs = {p.parent for p in paths.values()}
    if len(dirs) != 1:
        raise KubebinError("the CNI plugins are spread over " + ", ".join(map(str, sorted(dirs)))
                           + " (KUBEBUILDER_ASSETS?): they must share one directory")
    return dirs.pop()


@dataclass(frozen=True)
class NodeBinaries:
    """Everything a real node runs, built and cached (``ensure_node()``)."""

    kubelet: Path
    kube_proxy: Path
    containerd: Path
    shim: Path  # containerd-shim-runc-v2: containerd looks it up on PATH (or its runtime_path)
    ctr: Path
    runc: Path  # give it to the shim as the runc options' BinaryName
    cni_bin_dir: Path  # bridge, host-local, loopback
    pause: Path  # static binary; pauseimage.write_oci_archive() wraps it into an importable image

    def path_dirs(self) -> list[Path]:
        """Directories to put first on containerd's PATH so it finds the shim (and the shim finds runc)."""
        return list(dict.fromkeys([self.shim.parent, self.runc.parent, self.containerd.parent]))


def ensure_node() -> NodeBinaries:
    """Build (or find) the node's binaries; ``check_node()`` says whether this machine can run them."""
    p = ensure(NODE, allow_path=False)
    return NodeBinaries(kubelet=p["kubelet"], kube_proxy=p["kube-proxy"], containerd=p["containerd"],
                        shim=p["containerd-shim-runc-v2"], ctr=p["ctr"], runc=p["runc"], cni_bin_dir=cni_bin_dir(),
                        pause=p["pause"])


def check_node() -> None:
    """Raise ``KubebinError`` (one line) if this machine cannot run a real node; return if it can."""
    problems = prereq.node_problems(prereq.host_facts(go=False))
    if problems:
        raise KubebinError("; ".join(problems))


def versions() -> dict[str, str]:
    return {name: s.version() for name, s in SETS.items()}
