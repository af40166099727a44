"""kubebin's pure parts: versions from go.mod, the cache key, KUBEBUILDER_ASSETS and PATH resolution, errors."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sipfleet.localenv import kubebin


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
    # every component belongs to exactly one set, and tools.go pins each package
    for name in kubebin.ALL:
        bset = kubebin.set_for(name)
        assert bset.packages[name] in (bset.module_dir / "tools.go").read_text()
        assert (bset.module_dir / "go.sum").stat().st_size > 0


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
    assert kubebin.parse_go_version("go1.26.8") == (1, 26)
    assert kubebin.parse_go_version("nonsense") is None
    assert kubebin.go_directive(_module(tmp_path) / "go.mod") == (1, 25)


def test_build_order_is_sequential_and_cheapest_first():
    assert kubebin.ALL[:2] == ["etcd", "kube-apiserver"]
    assert set(kubebin.CONTROL_PLANE) <= set(kubebin.ALL)
    assert os.path.basename(str(kubebin.GOMOD_DIR)) == "gomod"
