"""Prerequisites of building the pinned binaries and of running a real node, each missing one as one line.

``build_problems`` and ``node_problems`` are pure decisions over a ``HostFacts`` snapshot (unit-tested);
``host_facts()`` is the only function here that looks at the machine (PATH, /proc, ``go env``, ``pkg-config``).
Building needs no root; running a node does.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

Version = tuple[int, int, int]

#: commands a node's processes (or the code that sets the node up) run: nftables for kube-proxy's nftables
#: mode, nsenter to enter the cluster's network namespace, ip for links and namespaces.
NODE_TOOLS: dict[str, str] = {"nft": "nftables", "nsenter": "util-linux", "ip": "iproute2"}


@dataclass(frozen=True)
class HostFacts:
    uid: int = 0
    filesystems: str = ""  # text of /proc/filesystems
    overlay_loadable: bool = False  # the kernel has an overlay module that a mount would load
    go: str | None = None  # path of `go`
    go_version: Version | None = None
    go_version_text: str = ""
    cc: str | None = None  # path of gcc (or cc)
    libseccomp_dev: bool = False  # `pkg-config --exists libseccomp` (cgo of libseccomp-golang uses pkg-config)
    tools: dict[str, str | None] = field(default_factory=dict)  # NODE_TOOLS name -> path or None


def parse_go_version(text: str) -> Version | None:
    """``go1.26.8`` -> (1, 26, 8); ``go1.26`` / ``go1.26rc1`` -> (1, 26, 0); else None."""
    m = re.search(r"go(\d+)\.(\d+)(?:\.(\d+))?", text)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)) if m else None


def go_directive(go_mod: Path) -> Version:
    m = re.search(r"^go\s+(\d+)\.(\d+)(?:\.(\d+))?", go_mod.read_text(), re.M)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)) if m else (1, 0, 0)


def dotted(v: Version) -> str:
    return ".".join(map(str, v))


def has_overlayfs(filesystems: str, overlay_loadable: bool = False) -> bool:
    return overlay_loadable or any(ln.split()[-1:] == ["overlay"] for ln in filesystems.splitlines())


def build_problems(facts: HostFacts, *, what: str, go_needed: Version | None, needs: tuple[str, ...] = ()
                   ) -> list[str]:
    """What keeps ``what`` (a set's name) from being built: one line each, empty when nothing does."""
    problems: list[str] = []
    if go_needed is not None:
        if not facts.go:
            problems.append(
                f"Go is not installed (no `go` on PATH): install Go >= {dotted(go_needed)} to build {what}, "
                "or point KUBEBUILDER_ASSETS at a directory holding the binaries"
            )
        elif facts.go_version is None or facts.go_version < go_needed:
            problems.append(
                f"Go {dotted(go_needed)} or newer is needed to build {what}, "
                f"found {facts.go_version_text or 'an unknown version'} at {facts.go}"
            )
    if "cc" in needs and not facts.cc:
        problems.append(f"no C compiler (gcc) to build {what}: apt-get install gcc libc6-dev")
    if "libseccomp" in needs and not facts.libseccomp_dev:
        problems.append(f"libseccomp's headers are missing to build {what} with seccomp: "
                        "apt-get install libseccomp-dev pkg-config")
    return problems


def node_problems(facts: HostFacts) -> list[str]:
    """What keeps this machine from running a real node (kubelet, containerd, runc): one line each."""
    problems: list[str] = []
    if facts.uid != 0:
        problems.append("running a node needs root (containerd, runc and the kubelet mount, create cgroups and "
                        "network namespaces); building the binaries does not")
    if not has_overlayfs(facts.filesystems, facts.overlay_loadable):
        problems.append("the kernel has no overlayfs (not in /proc/filesystems, no overlay module): "
                        "containerd's overlayfs snapshotter needs it")
    for tool, package in NODE_TOOLS.items():
        if not facts.tools.get(tool):
            problems.append(f"`{tool}` is not installed: apt-get install {package}")
    return problems


def _run(cmd: list[str]) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None


def _overlay_module_exists() -> bool:
    if Path("/sys/module/overlay").exists():
        return True
    modules = Path("/lib/modules") / os.uname().release / "kernel" / "fs" / "overlayfs"
    return any(modules.glob("overlay.ko*")) if modules.is_dir() else False


def host_facts(*, go: bool = True) -> HostFacts:
    """Read the facts the decisions above need (``go=False`` skips running ``go env``)."""
    try:
        filesystems = Path("/proc/filesystems").read_text()
    except OSError:
        filesystems = ""
    go_path = shutil.which("go")
    go_text = ""
    if go and go_path:
        res = _run([go_path, "env", "GOVERSION"])
        go_text = res.stdout.strip() if res and res.returncode == 0 else ""
    pkg_config = shutil.which("pkg-config")
    res = _run([pkg_config, "--exists", "libseccomp"]) if pkg_config else None
    return HostFacts(
        uid=os.geteuid(),
        filesystems=filesystems,
        overlay_loadable=_overlay_module_exists(),
        go=go_path,
        go_version=parse_go_version(go_text),
        go_version_text=go_text,
        cc=shutil.which("gcc") or shutil.which("cc"),
        libseccomp_dev=bool(res and res.returncode == 0),
        tools={t: shutil.which(t) for t in NODE_TOOLS},
    )
