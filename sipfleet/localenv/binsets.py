"""The table of pinned binaries: which Go module (or C source) each one is built from, with which flags.

Each ``BinarySet`` is one directory under ``gomod/`` (go.mod, go.sum, tools.go) pinning one upstream project;
its cache directory is ``$SIPFLEET_CACHE/bin/<set>-<version>-<key>/`` where ``key`` hashes the pins and the build
flags, so changing either builds anew. Everything here is pure (reads only files of this repository).

Sets: ``kube`` (control plane, kubectl, kubelet, kube-proxy), ``helm``, ``containerd``, ``runc``, ``cni``
(CNI plugins, installed together in one directory), ``buildkit`` (image builder), ``crictl``, and ``pause``
(the pause container's static C binary, compiled from the k8s.io/kubernetes module's ``build/pause``), and the
chart checkers ``kubeconform`` and ``kube-score``, and ``prometheus`` (the server and ``promtool``: the metrics
tests and ``sipfleet demo --with-prometheus``). ``promcrds`` is a source-only pin (nothing is built from it): the
prometheus-operator module whose CRDs give the chart tests the monitoring.coreos.com schemas (``kubeschemas``).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

GOMOD_DIR = Path(__file__).resolve().parent / "gomod"


class KubebinError(RuntimeError):
    """A binary could not be provided; the message is one line meant for humans."""


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


def prometheus_release(version: str) -> str:
    """Prometheus' Go module versions encode its release: v0.316.0 is 3.16.0 (v0.MNN.P -> M.NN.P); else bare."""
    m = re.fullmatch(r"v0\.(\d)(\d\d)\.(\d+)", version)
    return f"{m.group(1)}.{int(m.group(2))}.{m.group(3)}" if m else version.lstrip("v")


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


@dataclass(frozen=True)
class BinarySet:
    name: str
    module_dir: Path
    main_module: str  # the module whose version names the set
    packages: dict[str, str]  # binary name -> Go package (builder "go") or source path in main_module ("cc")
    ldflags_template: str  # formatted with version=, bare= (no "v"), major=, minor=
    cgo: bool = False
    tags: tuple[str, ...] = ()
    builder: str = "go"  # "go": go build; "cc": gcc on a C file of main_module
    needs: tuple[str, ...] = ()  # build prerequisites besides Go: "cc", "libseccomp"
    component_modules: dict[str, str] = field(default_factory=dict)  # binary -> module naming its version

    def version(self) -> str:
        return module_version(self.module_dir / "go.mod", self.main_module)

    def ldflags(self) -> str:
        v = self.version()
        m = re.match(r"v(\d+)\.(\d+)", v)
        major, minor = (m.group(1), m.group(2)) if m else ("0", "0")
        return self.ldflags_template.format(version=v, bare=v.lstrip("v"), major=major, minor=minor,
                                            release=prometheus_release(v))

    def build_flags(self) -> str:
        """Everything besides the pins that changes the output; part of the cache key."""
        flags = self.ldflags()
        if self.cgo or self.tags:  # left out when default, so that sets older than these fields keep their key
            flags += f" cgo={int(self.cgo)} tags={','.join(self.tags)}"
        return flags

    def component_version(self, name: str) -> str:
        """The version of one binary: its own module's (etcd) or the set's."""
        module = self.component_modules.get(name)
        return module_version(self.module_dir / "go.mod", module) if module else self.version()

    def key(self) -> str:
        return cache_key(self.module_dir, extra=self.build_flags())

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
# The -X variables each project's Makefile sets (the git revision is not known from a module zip: left out).
_CONTAINERD_LDFLAGS = (
    "-s -w -X github.com/containerd/containerd/v2/version.Version={version}"
    " -X github.com/containerd/containerd/v2/version.Package=github.com/containerd/containerd/v2"
)
# runc embeds its version from the VERSION file; static like its release binaries (libseccomp.a from Debian's
# libseccomp-dev), so it needs no shared library at run time.
_RUNC_LDFLAGS = "-s -w -linkmode external -extldflags -static"
_CNI_LDFLAGS = "-s -w -X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion={version}"
_BUILDKIT_LDFLAGS = (
    "-s -w -X github.com/moby/buildkit/version.Version={version}"
    " -X github.com/moby/buildkit/version.Package=github.com/moby/buildkit"
)
_CRICTL_LDFLAGS = "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version={bare}"
# both print `var version = "development"` of their main package unless stamped (their release builds do the same)
_KUBECONFORM_LDFLAGS = "-s -w -X main.version={version}"
_KUBE_SCORE_LDFLAGS = "-s -w -X main.version={bare}"
# build/pause/Makefile: CFLAGS = -Os -Wall -Werror -static -DVERSION=v$(TAG)-$(REV)
# Prometheus' .promu.yml: -X github.com/prometheus/common/version.* (the module v0.316.0 is release 3.16.0; the git
# revision is not known from a module zip: left out). Tags: netgo as its release builds; no builtinassets (the
# module zip has no built web UI: the HTTP API is all sipfleet uses); remove_all_sd + enable_kubernetes_sd keep
# only the file, HTTP and Kubernetes service discovery (no cloud SDKs compiled in).
_PROMETHEUS_LDFLAGS = (
    "-s -w -X github.com/prometheus/common/version.Version={release}"
    " -X github.com/prometheus/common/version.Branch=HEAD"
)
PAUSE_TAG = "3.10.1"
_PAUSE_CFLAGS = "-Os -Wall -Werror -static -DVERSION=v" + PAUSE_TAG + "-{version}"

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
            "kubelet": "k8s.io/kubernetes/cmd/kubelet",
            "kube-proxy": "k8s.io/kubernetes/cmd/kube-proxy",
        },
        ldflags_template=_KUBE_LDFLAGS,
        component_modules={"etcd": "go.etcd.io/etcd/server/v3"},
    ),
    "helm": BinarySet(
        name="helm",
        module_dir=GOMOD_DIR / "helm",
        main_module="helm.sh/helm/v3",
        packages={"helm": "helm.sh/helm/v3/cmd/helm"},
        ldflags_template=_HELM_LDFLAGS,
    ),
    "buildkit": BinarySet(
        name="buildkit",
        module_dir=GOMOD_DIR / "buildkit",
        main_module="github.com/moby/buildkit",
        packages={
            "buildkitd": "github.com/moby/buildkit/cmd/buildkitd",
            "buildctl": "github.com/moby/buildkit/cmd/buildctl",
        },
        ldflags_template=_BUILDKIT_LDFLAGS,
        tags=("osusergo", "netgo", "static_build"),  # as BuildKit's Dockerfile (CGO_ENABLED=0 there too)
    ),
    "runc": BinarySet(
        name="runc",
        module_dir=GOMOD_DIR / "runc",
        main_module="github.com/opencontainers/runc",
        packages={"runc": "github.com/opencontainers/runc"},
        ldflags_template=_RUNC_LDFLAGS,
        cgo=True,
        tags=("seccomp", "netgo", "osusergo"),
        needs=("cc", "libseccomp"),
    ),
    "containerd": BinarySet(
        name="containerd",
        module_dir=GOMOD_DIR / "containerd",
        main_module="github.com/containerd/containerd/v2",
        packages={
            "containerd": "github.com/containerd/containerd/v2/cmd/containerd",
            "containerd-shim-runc-v2": "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2",
            "ctr": "github.com/containerd/containerd/v2/cmd/ctr",
        },
        ldflags_template=_CONTAINERD_LDFLAGS,
        tags=("no_btrfs", "no_devmapper", "no_zfs"),
    ),
    "cni": BinarySet(
        name="cni",
        module_dir=GOMOD_DIR / "cni",
        main_module="github.com/containernetworking/plugins",
        packages={
            "bridge": "github.com/containernetworking/plugins/plugins/main/bridge",
            "host-local": "github.com/containernetworking/plugins/plugins/ipam/host-local",
            "loopback": "github.com/containernetworking/plugins/plugins/main/loopback",
        },
        ldflags_template=_CNI_LDFLAGS,
    ),
    "pause": BinarySet(
        name="pause",
        module_dir=GOMOD_DIR / "kube",
        main_module="k8s.io/kubernetes",
        packages={"pause": "build/pause/linux/pause.c"},
        ldflags_template=_PAUSE_CFLAGS,
        builder="cc",
        needs=("cc",),
    ),
    "crictl": BinarySet(
        name="crictl",
        module_dir=GOMOD_DIR / "crictl",
        main_module="sigs.k8s.io/cri-tools",
        packages={"crictl": "sigs.k8s.io/cri-tools/cmd/crictl"},
        ldflags_template=_CRICTL_LDFLAGS,
    ),
    "kubeconform": BinarySet(
        name="kubeconform",
        module_dir=GOMOD_DIR / "kubeconform",
        main_module="github.com/yannh/kubeconform",
        packages={"kubeconform": "github.com/yannh/kubeconform/cmd/kubeconform"},
        ldflags_template=_KUBECONFORM_LDFLAGS,
    ),
    "kube-score": BinarySet(
        name="kube-score",
        module_dir=GOMOD_DIR / "kube-score",
        main_module="github.com/zegl/kube-score",
        packages={"kube-score": "github.com/zegl/kube-score/cmd/kube-score"},
        ldflags_template=_KUBE_SCORE_LDFLAGS,
    ),
    "prometheus": BinarySet(
        name="prometheus",
        module_dir=GOMOD_DIR / "prometheus",
        main_module="github.com/prometheus/prometheus",
        packages={
            "prometheus": "github.com/prometheus/prometheus/cmd/prometheus",
            "promtool": "github.com/prometheus/prometheus/cmd/promtool",
        },
        ldflags_template=_PROMETHEUS_LDFLAGS,
        tags=("netgo", "remove_all_sd", "enable_kubernetes_sd"),
    ),
}
#: source-only pin: the prometheus-operator module (its CRDs), read by ``kubeschemas``; nothing is built from it
PROMCRDS_DIR = GOMOD_DIR / "promcrds"
PROMCRDS_MODULE = "github.com/prometheus-operator/prometheus-operator"

CONTROL_PLANE: list[str] = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"]
#: BuildKit: builds the images (buildkitd runs as root, buildctl talks to it)
IMAGE_BUILD: list[str] = ["buildkitd", "buildctl"]
#: the CNI plugins, all in one directory (``kubebin.cni_bin_dir()``)
CNI_PLUGINS: list[str] = ["bridge", "host-local", "loopback"]
#: what a real node runs: kubelet, kube-proxy, containerd + shim + ctr, runc, the CNI plugins, the pause binary
NODE: list[str] = ["runc", "containerd", "containerd-shim-runc-v2", "ctr", *CNI_PLUGINS, "pause", "kubelet",
                   "kube-proxy"]
#: the chart checkers (tests/unit/test_chart_checks.py)
CHART_CHECK: list[str] = ["kubeconform", "kube-score"]
#: the metrics pipeline: a real Prometheus and its promtool (tests/unit/test_prom_rules.py, the metrics test)
PROMETHEUS: list[str] = ["prometheus", "promtool"]
#: every component, in build order (cheapest and most needed first)
ALL: list[str] = [*CONTROL_PLANE, "kubectl", "helm", *IMAGE_BUILD, *NODE, "crictl", *CHART_CHECK, *PROMETHEUS]
#: names accepted by ``sipfleet cluster build`` besides single components
GROUPS: dict[str, list[str]] = {
    "control-plane": [*CONTROL_PLANE, "kubectl", "helm"],
    "node": NODE,
    "images": IMAGE_BUILD,
    "cni": CNI_PLUGINS,
    "chart-check": CHART_CHECK,
    "prometheus": PROMETHEUS,
    "all": ALL,
}
#: binaries taken from PATH when a working one is there
PATH_OK = {"kubectl", "helm"}


def set_for(component: str) -> BinarySet:
    for s in SETS.values():
        if component in s.packages:
            return s
    raise KubebinError(f"unknown component {component!r} (known: {', '.join(ALL)})")


def expand(names: list[str]) -> list[str]:
    """Components and group names -> components, in order, without repeats; unknown names raise."""
    out: list[str] = []
    for n in names:
        for c in GROUPS.get(n, [n]):
            set_for(c)
            if c not in out:
                out.append(c)
    return out
