"""kubebin's pure parts: the set table, versions from go.mod, the cache key, KUBEBUILDER_ASSETS and PATH
resolution, build and node prerequisites, errors."""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path

import pytest

from sipfleet.localenv import kubebin, prereq


def _exe(path: Path, body: str = "#!/bin/sh\nexit 0\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def _module(tmp_path: Path, extra: str = "") -> Path:
    d = tmp_path / "mod"
    d.mkdir(exist_ok=True)
    (d / "go.mod").write_text(
        "module example.local/x\n\ngo 1.25.0\n\nrequire (\n\tk8s.io/kubernetes v1.35.4\n"
        "\tgo.etcd.io/etcd/server/v3 v3.6.5\n)\n\nrequire k8s.io/api v0.0.0 // indirect\n"
        "replace k8s.io/api => k8s.io/api v0.35.4\n" + extra
    )
    (d / "go.sum").write_text("k8s.io/kubernetes v1.35.4 h1:abc=\n")
    (d / "tools.go").write_text("package tools\n")
    return d


def test_pinned_modules_name_their_versions():
    kube = kubebin.SETS["kube"]
    assert kube.version() == "v1.35.4"
    assert kube.component_version("etcd") == "v3.6.5"
    assert kube.component_version("kube-apiserver") == "v1.35.4"
    assert kubebin.SETS["helm"].version().startswith("v3.")
    # every component belongs to exactly one set, and tools.go pins each Go package
    for name in kubebin.ALL:
        bset = kubebin.set_for(name)
        if bset.builder == "go":
            assert f'"{bset.packages[name]}"' in (bset.module_dir / "tools.go").read_text()
        assert (bset.module_dir / "go.sum").stat().st_size > 0


def test_node_sets_are_pinned_to_the_planned_versions():
    assert kubebin.set_for("kubelet") is kubebin.SETS["kube"] is kubebin.set_for("kube-proxy")
    assert kubebin.set_for("kubelet").component_version("kubelet") == "v1.35.4"
    expected = {"containerd": "v2.2.9", "runc": "v1.3.7", "cni": "v1.10.0", "buildkit": "v0.34.2",
                "crictl": "v1.34.0", "pause": "v1.35.4"}
    assert {n: kubebin.SETS[n].version() for n in expected} == expected
    # the machine's Go (1.26.8, GOTOOLCHAIN=local) must be new enough for every module
    for bset in kubebin.SETS.values():
        assert prereq.go_directive(bset.module_dir / "go.mod") <= (1, 26, 8), bset.name
    # BuildKit's excludes are copied, so minimal version selection picks what BuildKit's release was built with
    bk = (kubebin.SETS["buildkit"].module_dir / "go.mod").read_text()
    assert "github.com/davecgh/go-spew v1.1.2-0.20180830191138-d8f796af33cc" in bk.split("exclude (", 1)[1]


def test_every_component_once_and_groups():
    owners = [n for s in kubebin.SETS.values() for n in s.packages]
    assert sorted(owners) == sorted(kubebin.ALL) and len(set(owners)) == len(owners)
    assert kubebin.expand(["node"]) == kubebin.NODE
    assert {"kubelet", "kube-proxy", "containerd", "containerd-shim-runc-v2", "runc", "pause",
            *kubebin.CNI_PLUGINS} <= set(kubebin.NODE)
    assert kubebin.expand(["buildctl", "images", "etcd"]) == ["buildctl", "buildkitd", "etcd"]
    assert kubebin.expand(["all"]) == kubebin.ALL
    with pytest.raises(kubebin.KubebinError):
        kubebin.expand(["node", "kube-nonsense"])


def test_build_flags_per_set():
    runc = kubebin.SETS["runc"]
    assert runc.cgo and "seccomp" in runc.tags and "-static" in runc.ldflags()
    assert set(runc.needs) == {"cc", "libseccomp"}
    assert kubebin.SETS["containerd"].tags == ("no_btrfs", "no_devmapper", "no_zfs")
    assert "version.Version=v2.2.9" in kubebin.SETS["containerd"].ldflags()
    assert "BuildVersion=v1.10.0" in kubebin.SETS["cni"].ldflags()
    assert "version.Version=v0.34.2" in kubebin.SETS["buildkit"].ldflags()
    assert "version.Version=1.34.0" in kubebin.SETS["crictl"].ldflags()  # crictl's Makefile drops the "v"
    assert "-static" in kubebin.SETS["pause"].ldflags() and "-DVERSION=v3.10.1-v1.35.4" in kubebin.SETS[
        "pause"].ldflags()
    cmd, env = kubebin._go_command("go", runc, "runc", Path("/tmp/out"))
    assert env["CGO_ENABLED"] == "1" and env["GOTOOLCHAIN"] == "local" and "-mod=readonly" in env["GOFLAGS"]
    assert cmd[cmd.index("-tags") + 1] == "seccomp,netgo,osusergo" and cmd[-1] == "github.com/opencontainers/runc"
    cmd, env = kubebin._go_command("go", kubebin.SETS["kube"], "kubelet", Path("/tmp/out"))
    assert env["CGO_ENABLED"] == "0" and "-tags" not in cmd and "-trimpath" in cmd
    assert cmd[-1] == "k8s.io/kubernetes/cmd/kubelet"


def test_cache_keys_follow_build_flags_and_keep_old_sets_stable():
    helm = kubebin.SETS["helm"]
    # sets without cgo/tags keep the key they had before those fields existed (no needless rebuild)
    assert helm.key() == kubebin.cache_key(helm.module_dir, extra=helm.ldflags())
    containerd = kubebin.SETS["containerd"]
    untagged = dataclasses.replace(containerd, tags=())
    assert untagged.key() != containerd.key()
    assert dataclasses.replace(containerd, cgo=True).key() != containerd.key()
    dirs = [s.cache_dir() for s in kubebin.SETS.values()]
    assert len(set(dirs)) == len(dirs)


def test_module_version_parsing(tmp_path):
    d = _module(tmp_path)
    assert kubebin.module_version(d / "go.mod", "k8s.io/kubernetes") == "v1.35.4"
    assert kubebin.module_version(d / "go.mod", "go.etcd.io/etcd/server/v3") == "v3.6.5"
    assert kubebin.module_version(d / "go.mod", "k8s.io/api") == "v0.35.4"  # the replace wins over v0.0.0
    with pytest.raises(kubebin.KubebinError):
        kubebin.module_version(d / "go.mod", "helm.sh/helm/v3")


def test_cache_key_follows_pins_and_flags(tmp_path):
    d = _module(tmp_path)
    key = kubebin.cache_key(d, extra="-s -w")
    assert len(key) == 12 and int(key, 16) >= 0
    assert kubebin.cache_key(d, extra="-s -w") == key  # stable
    assert kubebin.cache_key(d, extra="-s") != key  # build flags are part of it
    (d / "go.sum").write_text("k8s.io/kubernetes v1.35.4 h1:def=\n")
    assert kubebin.cache_key(d, extra="-s -w") != key  # so is every pin


def test_cache_dir_layout(monkeypatch, tmp_path):
    monkeypatch.setenv("SIPFLEET_CACHE", str(tmp_path / "c"))
    kube = kubebin.SETS["kube"]
    d = kube.cache_dir()
    assert d.parent == tmp_path / "c" / "bin"
    assert d.name == f"kube-v1.35.4-{kube.key()}"
    monkeypatch.delenv("SIPFLEET_CACHE")
    assert kubebin.cache_root() == Path.home() / ".cache" / "sipfleet"


def test_kubebuilder_assets_escape_hatch(monkeypatch, tmp_path):
    monkeypatch.setenv("SIPFLEET_CACHE", str(tmp_path / "empty-cache"))
    first, second = tmp_path / "a", tmp_path / "b"
    _exe(second / "etcd")
    _exe(first / "kube-apiserver")
    (first / "etcd").parent.mkdir(parents=True, exist_ok=True)
    (first / "etcd").write_text("not executable")
    monkeypatch.setenv("KUBEBUILDER_ASSETS", f"{tmp_path / 'missing'}:{first}::{second}")
    assert kubebin.assets_dirs() == [tmp_path / "missing", first, second]
    assert kubebin.from_assets("etcd") == second / "etcd"  # the non-executable one is skipped
    assert kubebin.from_assets("kube-apiserver") == first / "kube-apiserver"
    assert kubebin.from_assets("kube-scheduler") is None
    # ensure() takes them without building anything (a build would fail: no go on this PATH)
    monkeypatch.setenv("PATH", str(tmp_path / "nopath"))
    got = kubebin.ensure(["etcd", "kube-apiserver"])
    assert got == {"etcd": second / "etcd", "kube-apiserver": first / "kube-apiserver"}


def test_cached_binary_is_used_and_missing_go_is_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setenv("SIPFLEET_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "nopath"))
    cached = _exe(kubebin.SETS["kube"].cache_dir() / "etcd")
    assert kubebin.ensure(["etcd"]) == {"etcd": cached}
    with pytest.raises(kubebin.KubebinError) as info:
        kubebin.ensure(["kube-scheduler"])
    msg = str(info.value)
    assert "Go is not installed" in msg and "KUBEBUILDER_ASSETS" in msg
    assert "\n" not in msg
    with pytest.raises(kubebin.KubebinError):
        kubebin.ensure(["kube-nonsense"])


def test_kubectl_on_path_must_be_within_one_minor(monkeypatch, tmp_path):
    monkeypatch.setenv("SIPFLEET_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    bindir = tmp_path / "bin"
    monkeypatch.setenv("PATH", str(bindir))

    def fake_kubectl(minor: str) -> None:
        _exe(bindir / "kubectl", "#!/bin/sh\necho '{\"clientVersion\": {\"major\": \"1\", \"minor\": \"%s\"}}'\n" % minor)

    fake_kubectl("32")  # like the Google Cloud SDK dispatcher: too old for a 1.35 server
    assert kubebin.resolve("kubectl") is None
    fake_kubectl("34+")
    assert kubebin.resolve("kubectl") == bindir / "kubectl"
    fake_kubectl("36")
    assert kubebin.resolve("kubectl") == bindir / "kubectl"
    _exe(bindir / "kubectl", "#!/bin/sh\nexit 1\n")  # broken
    assert kubebin.resolve("kubectl") is None
    # a built one in the cache wins over PATH
    fake_kubectl("35")
    cached = _exe(kubebin.SETS["kube"].cache_dir() / "kubectl")
    assert kubebin.resolve("kubectl") == cached
    # control-plane binaries never come from PATH
    _exe(bindir / "etcd")
    assert kubebin.resolve("etcd") is None


def test_helm_on_path(monkeypatch, tmp_path):
    monkeypatch.setenv("SIPFLEET_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    bindir = tmp_path / "bin"
    monkeypatch.setenv("PATH", str(bindir))
    assert kubebin.resolve("helm") is None
    _exe(bindir / "helm", "#!/bin/sh\necho v3.19.0+g1234\n")
    assert kubebin.resolve("helm") == bindir / "helm"
    _exe(bindir / "helm", "#!/bin/sh\necho v2.17.0\n")
    assert kubebin.resolve("helm") is None


@pytest.mark.parametrize("output, expected", [
    ("go: go.etcd.io/etcd/server/v3@v3.6.5: module lookup disabled by GOPROXY=off", "GOPROXY=off"),
    ('go: k8s.io/api@v0.35.4: Get "https://proxy.golang.org/k8s.io/api/@v/v0.35.4.mod": dial tcp: '
     "lookup proxy.golang.org: no such host", "cannot reach the Go module proxy"),
    ("compile: signal: killed", "out of memory"),
    ("some\nlast line of the error\n", "last line of the error"),
])
def test_go_failures_become_one_line(output, expected):
    msg = kubebin.explain_go_failure(output)
    assert expected in msg and "\n" not in msg


def test_go_version_checks(tmp_path):
    assert kubebin.parse_go_version("go1.26.8") == (1, 26, 8)
    assert kubebin.parse_go_version("go1.27rc1") == (1, 27, 0)
    assert kubebin.parse_go_version("nonsense") is None
    assert kubebin.go_directive(_module(tmp_path) / "go.mod") == (1, 25, 0)
    assert kubebin.go_directive(kubebin.SETS["buildkit"].module_dir / "go.mod") == (1, 26, 8)


_GOOD = prereq.HostFacts(
    uid=0, filesystems="nodev\tsysfs\nnodev\toverlay\n", go="/usr/local/go/bin/go", go_version=(1, 26, 8),
    go_version_text="go1.26.8", cc="/usr/bin/gcc", libseccomp_dev=True,
    tools={"nft": "/usr/sbin/nft", "nsenter": "/usr/bin/nsenter", "ip": "/usr/bin/ip"},
)


def test_build_prerequisites_are_one_line_each():
    ok = prereq.build_problems(_GOOD, what="runc binaries", go_needed=(1, 26, 8), needs=("cc", "libseccomp"))
    assert ok == []
    old = dataclasses.replace(_GOOD, go_version=(1, 26, 7), go_version_text="go1.26.7")
    (msg,) = prereq.build_problems(old, what="buildkit binaries", go_needed=(1, 26, 8))
    assert "Go 1.26.8 or newer" in msg and "go1.26.7" in msg  # the patch level counts
    (msg,) = prereq.build_problems(dataclasses.replace(_GOOD, go=None), what="x", go_needed=(1, 25, 0))
    assert "Go is not installed" in msg and "KUBEBUILDER_ASSETS" in msg
    bare = dataclasses.replace(_GOOD, cc=None, libseccomp_dev=False)
    msgs = prereq.build_problems(bare, what="runc binaries", go_needed=(1, 23, 0), needs=("cc", "libseccomp"))
    assert len(msgs) == 2 and "gcc" in msgs[0] and "libseccomp-dev" in msgs[1]
    # the pause binary needs no Go, and nothing needs what it does not name
    assert prereq.build_problems(dataclasses.replace(bare, go=None), what="pause", go_needed=None) == []
    assert all("\n" not in m for m in msgs)


def test_node_prerequisites():
    assert prereq.node_problems(_GOOD) == []
    bad = dataclasses.replace(_GOOD, uid=1000, filesystems="nodev\tsysfs\n", tools={"ip": "/usr/bin/ip"})
    msgs = prereq.node_problems(bad)
    assert "needs root" in msgs[0] and "building the binaries does not" in msgs[0]
    assert "overlayfs" in msgs[1]
    assert any("apt-get install nftables" in m for m in msgs) and any("util-linux" in m for m in msgs)
    assert len(msgs) == 4 and all("\n" not in m for m in msgs)
    # an overlay module that a mount would load is as good as a listed filesystem
    loadable = dataclasses.replace(_GOOD, filesystems="", overlay_loadable=True)
    assert prereq.node_problems(loadable) == []
    assert not prereq.has_overlayfs("nodev\toverlayfoo\n")


def test_missing_build_prerequisite_stops_ensure_with_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("SIPFLEET_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    monkeypatch.setattr(prereq, "host_facts", lambda go=True: dataclasses.replace(_GOOD, libseccomp_dev=False))
    with pytest.raises(kubebin.KubebinError) as info:
        kubebin.ensure(["runc"])
    assert "libseccomp-dev" in str(info.value) and "\n" not in str(info.value)
    assert not (kubebin.SETS["runc"].cache_dir() / "runc").exists()


def test_check_node_reports_all_problems_in_one_line(monkeypatch):
    monkeypatch.setattr(prereq, "host_facts", lambda go=True: dataclasses.replace(_GOOD, uid=1000))
    with pytest.raises(kubebin.KubebinError, match="needs root"):
        kubebin.check_node()
    monkeypatch.setattr(prereq, "host_facts", lambda go=True: _GOOD)
    kubebin.check_node()  # nothing missing: returns


def test_cni_bin_dir_is_the_sets_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("SIPFLEET_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    d = kubebin.SETS["cni"].cache_dir()
    for n in kubebin.CNI_PLUGINS:
        _exe(d / n)
    assert kubebin.cni_bin_dir() == d
    # one plugin from KUBEBUILDER_ASSETS would split them over two directories: refused
    _exe(tmp_path / "assets" / "loopback")
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path / "assets"))
    with pytest.raises(kubebin.KubebinError, match="one directory"):
        kubebin.cni_bin_dir()


def test_build_order_is_sequential_and_cheapest_first():
    assert kubebin.ALL[:2] == ["etcd", "kube-apiserver"]
    assert set(kubebin.CONTROL_PLANE) <= set(kubebin.ALL)
    assert os.path.basename(str(kubebin.GOMOD_DIR)) == "gomod"


def test_ensure_node_from_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("SIPFLEET_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "nopath"))  # no go: a build would fail, so nothing is built
    for n in kubebin.NODE:
        _exe(kubebin.set_for(n).cache_dir() / n)
    node = kubebin.ensure_node()
    assert node.kubelet == kubebin.SETS["kube"].cache_dir() / "kubelet"
    assert node.runc == kubebin.SETS["runc"].cache_dir() / "runc"
    assert node.cni_bin_dir == kubebin.SETS["cni"].cache_dir()
    assert node.pause.name == "pause" and node.shim.name == "containerd-shim-runc-v2"
    assert node.path_dirs() == [kubebin.SETS["containerd"].cache_dir(), kubebin.SETS["runc"].cache_dir()]


def test_cluster_build_notes_a_host_that_cannot_run_a_node(monkeypatch, tmp_path, capsys):
    import argparse

    from sipfleet.localenv import cluster_cli

    monkeypatch.setenv("SIPFLEET_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    _exe(kubebin.SETS["kube"].cache_dir() / "kubelet")
    monkeypatch.setattr(prereq, "host_facts", lambda go=True: dataclasses.replace(_GOOD, uid=1000))
    assert cluster_cli._build(argparse.Namespace(components=["kubelet"])) == 0  # built: not a failure
    out, err = capsys.readouterr()
    assert "kubelet" in out
    (note,) = [ln for ln in err.splitlines() if "note:" in ln]
    assert "cannot run a node" in note and "needs root" in note
