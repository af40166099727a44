"""Pinned control-plane binaries, built from the Go modules in ``gomod/`` and cached outside the repository.

``ensure(components)`` returns ``{name: Path}`` for the requested binaries, building only the missing ones:

- ``kube`` set (``gomod/kube``: k8s.io/kubernetes + go.etcd.io/etcd/server/v3): kube-apiserver,
  kube-controller-manager, kube-scheduler, etcd, kubectl.
- ``helm`` set (``gomod/helm``: helm.sh/helm/v3): helm.

Cache layout: ``$SIPFLEET_CACHE/bin/<set>-<version>-<key>/<name>`` (default ``~/.cache/sipfleet``), where
``key`` is a hash of the set's go.mod, go.sum, tools.go and build flags, so changing a pin rebuilds. A binary is
built into a temporary file in that directory and renamed into place (atomic); a file lock serialises concurrent
builders. Builds run one at a time (a kube-apiserver link peaks at ~2 GB RSS).

Resolution order for each name:

1. ``KUBEBUILDER_ASSETS`` (a directory or ``:``-separated list of directories) holding an executable of that
   name: escape hatch for machines that already have the binaries.
2. The cache, if the binary is already built.
3. kubectl and helm only: a working one on ``PATH``. "Working" means it runs and, for kubectl, its client minor
   version is within one of the server's (the supported skew). The Google Cloud SDK ``kubectl`` dispatcher
   found on some machines reports v1.32 and is therefore not used against our v1.35 server: we build our own.
4. Build it (``go build``), which needs Go >= the module's go directive and the module proxy (or a warm
   GOMODCACHE).
"""

from __future__ import annotations

import fcntl
import hashlib
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

GOMOD_DIR = Path(__file__).resolve().parent / "gomod"


class KubebinError(RuntimeError):
    """A binary could not be provided; the message is one line meant for humans."""


@dataclass(frozen=True)
class BinarySet:
    name: str
    module_dir: Path
    main_module: str  # the module whose version names the set
    packages: dict[str, str]  # binary name -> Go package
    ldflags_template: str  # formatted with version=, major=, minor=

    def version(self) -> str:
        return module_version(self.module_dir / "go.mod", self.main_module)

    def ldflags(self) -> str:
        v = self.version()
        m = re.match(r"v(\d+)\.(\d+)", v)
        major, minor = (m.group(1), m.group(2)) if m else ("0", "0")
        return self.ldflags_template.format(version=v, major=major, minor=minor)

    def component_version(self, name: str) -> str:
        """The version of one binary: its own module's (etcd) or the set's."""
        pkg = self.packages[name]
        if name == "etcd":
            return module_version(self.module_dir / "go.mod", pkg)
        return self.version()

    def key(self) -> str:
        return cache_key(self.module_dir, extra=self.ldflags())

    def cache_dir(self) -> Path:
        return cache_root() / "bin" / f"{self.name}-{self.version()}-{self.key()}"


_KUBE_LDFLAGS = (
    "-s -w -X k8s.io/component-base/version.gitVersion={version}"
    " -X k8s.io/component-base/version.gitMajor={major}"
    " -X k8s.io/component-base/version.gitMinor={minor}"
    " -X k8s.io/component-base/version.gitTreeState=clean"
    " -X k8s.io/client-go/pkg/version.gitVersion={version}"
    " -X k8s.io/client-go/pkg/version.gitMajor={major}"
    " -X k8s.io/client-go/pkg/version.gitMinor={minor}"
)
# Helm's Makefile also stamps the Kubernetes version it was built against (from its client-go: 0.35 -> 1.35).
_HELM_LDFLAGS = (
    "-s -w -X helm.sh/helm/v3/internal/version.version={version}"
    " -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
    " -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=35"
    " -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=35"
)

SETS: dict[str, BinarySet] = {
    "kube": BinarySet(
        name="kube",
        module_dir=GOMOD_DIR / "kube",
        main_module="k8s.io/kubernetes",
        packages={
            "etcd": "go.etcd.io/etcd/server/v3",
            "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
            "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
            "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
            "kubectl": "k8s.io/kubernetes/cmd/kubectl",
        },
        ldflags_template=_KUBE_LDFLAGS,
    ),
    "helm": BinarySet(
        name="helm",
        module_dir=GOMOD_DIR / "helm",
        main_module="helm.sh/helm/v3",
        packages={"helm": "helm.sh/helm/v3/cmd/helm"},
        ldflags_template=_HELM_LDFLAGS,
    ),
}

#: every component, in build order (cheapest and most needed first)
ALL: list[str] = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "helm"]
CONTROL_PLANE: list[str] = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"]
#: binaries taken from PATH when a working one is there
PATH_OK = {"kubectl", "helm"}


def set_for(component: str) -> BinarySet:
    for s in SETS.values():
        if component in s.packages:
            return s
    raise KubebinError(f"unknown component {component!r} (known: {', '.join(ALL)})")


# ---------------------------------------------------------------------------------------------------------------
# pure helpers (unit-tested)
# ---------------------------------------------------------------------------------------------------------------


def cache_root() -> Path:
    env = os.environ.get("SIPFLEET_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sipfleet"


def module_version(go_mod: Path, module: str) -> str:
    """The version a go.mod requires of ``module`` (a replace to a version wins)."""
    text = go_mod.read_text()
    m = re.search(rf"^\s*(?:replace\s+)?{re.escape(module)}(?:\s+v\S+)?\s+=>\s+\S+\s+(v\S+)\s*$", text, re.M)
    if m:
        return m.group(1)
    m = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v[^\s]+)", text, re.M)
    if not m:
        raise KubebinError(f"{go_mod} does not require {module}")
    return m.group(1)


def cache_key(module_dir: Path, extra: str = "") -> str:
    """12 hex digits of sha256 over go.mod, go.sum, tools.go and ``extra`` (build flags)."""
    h = hashlib.sha256()
    for fname in ("go.mod", "go.sum", "tools.go"):
        p = module_dir / fname
        h.update(fname.encode() + b"\0")
        h.update(p.read_bytes() if p.exists() else b"")
        h.update(b"\0")
    h.update(extra.encode())
    return h.hexdigest()[:12]


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


def parse_go_version(text: str) -> tuple[int, int] | None:
    m = re.search(r"go(\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else None


def go_directive(go_mod: Path) -> tuple[int, int]:
    m = re.search(r"^go\s+(\d+)\.(\d+)", go_mod.read_text(), re.M)
    return (int(m.group(1)), int(m.group(2))) if m else (1, 0)


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


def check_go(module_dir: Path) -> str:
    go = shutil.which("go")
    if not go:
        raise KubebinError(
            "Go is not installed (no `go` on PATH): install Go >= "
            + ".".join(map(str, go_directive(module_dir / "go.mod")))
            + " or point KUBEBUILDER_ASSETS at a directory holding the binaries"
        )
    res = _run_quiet([go, "env", "GOVERSION"], timeout=30)
    have = parse_go_version(res.stdout if res else "")
    need = go_directive(module_dir / "go.mod")
    if have is None or have < need:
        raise KubebinError(
            f"Go {'.'.join(map(str, need))} or newer is needed to build {module_dir.name} binaries, "
            f"found {res.stdout.strip() if res else 'unknown'} at {go}"
        )
    return go


def _build_one(go: str, bset: BinarySet, name: str, dest_dir: Path) -> Path:
    package = bset.packages[name]
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = dest_dir / f".{name}.{os.getpid()}.tmp"
    env = dict(os.environ)
    env.update({"GOTOOLCHAIN": "local", "CGO_ENABLED": "0", "GOFLAGS": "-mod=readonly -buildvcs=false"})
    cmd = [go, "build", "-trimpath", "-o", str(tmp), "-ldflags", bset.ldflags(), package]
    started = time.monotonic()
    _log(f"building {name} {bset.component_version(name)} from {package} (a cold build takes minutes)")
    proc = subprocess.Popen(
        cmd, cwd=bset.module_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
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
            os.killpg(proc.pid, 9)
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
    """Paths of the requested binaries, building the missing ones (sequentially) into the cache."""
    wanted = list(dict.fromkeys(components))
    for n in wanted:
        set_for(n)  # validates names
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
    go = None
    for n in missing:
        bset = set_for(n)
        dest = bset.cache_dir()
        with _Lock(cache_root() / "bin" / ".build.lock"):
            if _executable(dest / n):  # somebody else built it meanwhile
                result[n] = dest / n
                continue
            go = go or check_go(bset.module_dir)
            result[n] = _build_one(go, bset, n, dest)
    return {n: result[n] for n in wanted}


def versions() -> dict[str, str]:
    return {name: s.version() for name, s in SETS.items()}
