"""Decisions of the local image build, without building: OCI layouts, cache keys, BuildKit's configuration and
command line, the runtime spec images are tested with, names from the chart."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from sipfleet.localenv.imagebuild import base, build, buildkit, hostfs, oci, pins, run, targets, wheelhouse

REPO = Path(__file__).resolve().parents[2]


def make_tree(root: Path) -> None:
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/tool").write_text("#!/bin/sh\n")
    os.chmod(root / "usr/bin/tool", 0o755)
    os.link(root / "usr/bin/tool", root / "usr/bin/tool2")
    (root / "bin").symlink_to("usr/bin")
    (root / ".hidden").write_text("h")
    for d in oci.RUNTIME_DIRS:
        (root / d).mkdir()
    (root / "dev/null-ish").write_text("runtime content")
    (root / "tmp/junk").write_text("x")
    os.chmod(root / "tmp", 0o1777)


# --- oci ---------------------------------------------------------------------------------------------------

def test_write_image_is_deterministic_and_round_trips(tmp_path):
    make_tree(tmp_path / "root")
    kw = dict(ref="x/y:1", env=["PATH=/usr/bin"], cmd=["tool"], labels={"a": "b"}, history="test")
    one = oci.write_image(tmp_path / "root", tmp_path / "l1", **kw)
    two = oci.write_image(tmp_path / "root", tmp_path / "l2", **kw)
    assert one.digest == two.digest and one.layers == two.layers
    info = oci.read_archive(tmp_path / "l1")
    assert info.ref == "x/y:1" and info.digest == one.digest
    assert info.config["config"]["Cmd"] == ["tool"] and "created" not in info.config

    dest = tmp_path / "unpacked"
    oci.unpack(tmp_path / "l1", dest)
    assert (dest / "usr/bin/tool").read_text() == "#!/bin/sh\n"
    assert os.stat(dest / "usr/bin/tool").st_ino == os.stat(dest / "usr/bin/tool2").st_ino  # a hard link
    assert os.readlink(dest / "bin") == "usr/bin"
    assert (dest / ".hidden").read_text() == "h"
    assert (dest / "dev").is_dir() and not any((dest / "dev").iterdir()), "runtime dirs are empty"
    assert not (dest / "tmp/junk").exists() and (os.stat(dest / "tmp").st_mode & 0o7777) == 0o1777
    assert os.stat(dest / "usr/bin/tool").st_mtime == os.stat(tmp_path / "root/usr/bin/tool").st_mtime

    # an archive (tar of the layout) reads the same
    archive = tmp_path / "image.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(tmp_path / "l1", arcname=".")
    assert oci.read_archive(archive).digest == one.digest


def _layer(entries: list[tuple[str, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue())


def _layout(tmp: Path, layers: list[bytes]) -> Path:
    blobs = tmp / "layout/blobs/sha256"
    blobs.mkdir(parents=True)
    descs = []
    for data in layers:
        d = oci.sha256_digest(data)
        (blobs / d[7:]).write_bytes(data)
        descs.append({"mediaType": oci.MT_LAYER_GZIP, "digest": d, "size": len(data)})
    config = oci.canonical({"rootfs": {"diff_ids": []}, "config": {}})
    (blobs / oci.sha256_digest(config)[7:]).write_bytes(config)
    manifest = oci.canonical({"schemaVersion": 2, "mediaType": oci.MT_MANIFEST, "layers": descs,
                              "config": {"mediaType": oci.MT_CONFIG, "digest": oci.sha256_digest(config),
                                         "size": len(config)}})
    (blobs / oci.sha256_digest(manifest)[7:]).write_bytes(manifest)
    (tmp / "layout/index.json").write_bytes(oci.canonical({"manifests": [
        {"mediaType": oci.MT_MANIFEST, "digest": oci.sha256_digest(manifest), "size": len(manifest)}]}))
    return tmp / "layout"


def test_unpack_applies_whiteouts(tmp_path):
    first = _layer([("etc", None), ("etc/a", b"a"), ("etc/b", b"b"), ("opt", None), ("opt/x", b"x")])
    second = _layer([("etc/.wh.a", b""), ("opt/.wh..wh..opq", b""), ("opt/y", b"y")])
    dest = tmp_path / "root"
    oci.unpack(_layout(tmp_path, [first, second]), dest)
    assert sorted(p.name for p in (dest / "etc").iterdir()) == ["b"]
    assert sorted(p.name for p in (dest / "opt").iterdir()) == ["y"]


@pytest.mark.parametrize("name", ["../evil", "/abs/evil", "a/../../evil"])
def test_unpack_refuses_entries_outside_the_root(tmp_path, name):
    with pytest.raises(oci.OCIError):
        oci.unpack(_layout(tmp_path, [_layer([(name, b"x")])]), tmp_path / "root")
    assert not (tmp_path / "evil").exists()


def test_unpack_refuses_writing_through_an_outside_link(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        link = tarfile.TarInfo("etc")
        link.type = tarfile.SYMTYPE
        link.linkname = str(outside)
        tar.addfile(link)
        f = tarfile.TarInfo("etc/passwd")
        f.size = 1
        tar.addfile(f, io.BytesIO(b"x"))
    with pytest.raises(oci.OCIError):
        oci.unpack(_layout(tmp_path, [gzip.compress(buf.getvalue())]), tmp_path / "root")
    assert not (outside / "passwd").exists()


# --- targets -----------------------------------------------------------------------------------------------

def test_targets_come_from_the_chart():
    t = targets.targets()
    assert t["operator"].name == "sipfleet/operator:0.1.0" and t["agent"].name == "sipfleet/agent:0.1.0"
    assert t["agent"].full_name == "docker.io/sipfleet/agent:0.1.0"
    values = {"image": {"repository": "r/op", "tag": "9"}, "agent": {"image": {"repository": "r/ag", "tag": ""}}}
    got = targets.targets_from(values, "1.2.3")
    assert (got["operator"].name, got["agent"].name) == ("r/op:9", "r/ag:1.2.3")


@pytest.mark.parametrize("ref,full", [("sipfleet/agent:0.1.0", "docker.io/sipfleet/agent:0.1.0"),
                                      ("busybox:1", "docker.io/library/busybox:1"),
                                      ("registry.k8s.io/pause:3.10", "registry.k8s.io/pause:3.10"),
                                      ("localhost/x:1", "localhost/x:1")])
def test_normalise_ref(ref, full):
    assert targets.normalise_ref(ref) == full


def test_allowed_paths_needs_a_deny_all_first():
    assert targets.allowed_paths("# c\n**\n!a/\n!b.txt\n**/*.pyc\n") == ["a", "b.txt"]
    with pytest.raises(ValueError):
        targets.allowed_paths("!a\n")


# --- cache keys ----------------------------------------------------------------------------------------------

def copy_repo(dest: Path) -> Path:
    for rel in ("images", "sipfleet/__init__.py", "sipfleet/api", "operator/sipfleet_operator",
                "agent/sipfleet_agent", "charts/sipfleet/values.yaml", "charts/sipfleet/Chart.yaml"):
        src = REPO / rel
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dest / rel, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / rel)
    return dest


def test_inputs_key_changes_with_each_input_and_only_then(tmp_path):
    repo = copy_repo(tmp_path)
    kw = dict(base_digest="sha256:b", wheelhouse_key="w", buildkit_id="bk", build_args={"PIP_NO_INDEX": "1"})

    def key(component="agent", **over):
        return build.inputs_key(targets.targets(repo)[component], **{**kw, **over})

    first = key()
    (repo / "agent/sipfleet_agent/__pycache__").mkdir()
    (repo / "agent/sipfleet_agent/__pycache__/x.pyc").write_bytes(b"\0")  # not sent: no rebuild
    (repo / "operator/sipfleet_operator/main.py").write_text("# another component\n")
    (repo / "README.md").write_text("not in the context\n")
    assert key() == first
    assert key(base_digest="sha256:c") != first
    assert key(wheelhouse_key="v") != first
    assert key(buildkit_id="bk2") != first
    assert key(build_args={}) != first
    (repo / "agent/sipfleet_agent/engine.py").write_text("# changed\n")
    second = key()
    assert second != first
    (repo / "images/Dockerfile.agent").write_text((repo / "images/Dockerfile.agent").read_text() + "\n# x\n")
    assert key() != second


def test_base_key_covers_the_recipe():
    spec = base.BaseSpec()
    assert spec.key() == base.BaseSpec().key()
    assert base.BaseSpec(include=("python3",)).key() != spec.key()
    assert base.BaseSpec(recipe=spec.recipe + 1).key() != spec.key()
    cmd = spec.debootstrap_cmd(Path("/x"))
    assert cmd[-3:] == ["bookworm", "/x", "http://deb.debian.org/debian"] and "--variant=minbase" in cmd


def test_trim_keeps_copyright_files(tmp_path):
    (tmp_path / "usr/share/doc/pkg").mkdir(parents=True)
    (tmp_path / "usr/share/doc/pkg/copyright").write_text("c")
    (tmp_path / "usr/share/doc/pkg/changelog.gz").write_text("x")
    (tmp_path / "usr/share/doc/empty/sub").mkdir(parents=True)
    (tmp_path / "var/lib/apt/lists").mkdir(parents=True)
    (tmp_path / "var/lib/apt/lists/foo_Packages").write_text("x")
    base.trim(tmp_path, base.TRIM)
    assert (tmp_path / "usr/share/doc/pkg/copyright").exists()
    assert not (tmp_path / "usr/share/doc/pkg/changelog.gz").exists() and not (tmp_path / "usr/share/doc/empty").exists()
    assert (tmp_path / "var/lib/apt/lists").is_dir() and not any((tmp_path / "var/lib/apt/lists").iterdir())


def test_wheelhouse_key_and_completeness():
    reqs = ["a==1", "b-c==2"]
    assert wheelhouse.key_for(reqs) == wheelhouse.key_for(list(reversed(reqs)))
    assert wheelhouse.key_for(reqs) != wheelhouse.key_for(["a==1", "b-c==3"])
    files = ["a-1-py3-none-any.whl", "b_c-2-cp311-cp311-manylinux_2_17_x86_64.whl", "notes.txt"]
    assert wheelhouse.missing(reqs, files) == []
    assert wheelhouse.missing(reqs + ["d==4"], files) == ["d==4"]
    assert wheelhouse.missing(["a==2"], files) == ["a==2"]


def test_wheel_requirements_are_all_exact_pins():
    reqs = pins.wheel_requirements(list(targets.targets().values()))
    assert reqs and all("==" in r for r in reqs)
    names = {pins.canonical_name(r.split("==")[0]) for r in reqs}
    assert {"kopf", "pjsua2-python", "setuptools"} <= names
    flags = pins.target_flags()
    assert "--only-binary=:all:" in flags and flags[flags.index("--python-version") + 1] == "3.11"


# --- buildkit ----------------------------------------------------------------------------------------------

def test_daemon_keeps_everything_under_its_state_dir(tmp_path):
    paths = buildkit.Paths(tmp_path / "state")
    text = buildkit.daemon_config(paths, Path("/opt/x/runc"), Path("/opt/x/cni"))
    for system in ("/var/lib/buildkit", "/run/buildkit", "/etc/buildkit"):
        assert system not in text
    assert 'networkMode = "cni"' in text and "[worker.containerd]\n  enabled = false" in text
    assert f'cniConfigPath = "{paths.cni_config}"' in text and 'binary = "/opt/x/runc"' in text
    assert "disabled = true" in text.split("[cdi]")[1].split("[")[0]
    cmd = buildkit.daemon_cmd(Path("/b/buildkitd"), paths)
    assert cmd[cmd.index("--root") + 1] == str(paths.root) and paths.address in cmd
    assert "--containerd-worker=false" in cmd
    assert not any("insecure-entitlement" in a for a in cmd), "no host networking for anyone"
    assert buildkit.LOOPBACK_ONLY_CNI["plugins"] == [{"type": "loopback"}]


def test_build_cmd_has_no_network_and_no_public_sources(tmp_path):
    paths = buildkit.Paths(tmp_path)
    cmd = buildkit.build_cmd(Path("/b/buildctl"), paths, context=Path("/repo"),
                             dockerfile=Path("/repo/images/Dockerfile.agent"), base_layout=Path("/c/layout"),
                             base_ref="oci-layout://sipfleet-base@sha256:abc", wheelhouse=Path("/c/wh"),
                             output=Path("/o/image.tar"), name="docker.io/sipfleet/agent:0.1.0",
                             build_args={"PIP_NO_INDEX": "1"})
    joined = " ".join(cmd)
    assert "--opt force-network-mode=none" in joined
    assert f"--source-policy-file {paths.policy}" in joined
    assert "--oci-layout sipfleet-base=/c/layout" in joined
    assert "--opt context:base=oci-layout://sipfleet-base@sha256:abc" in joined
    assert "--local wheelhouse=/c/wh --opt context:wheelhouse=local:wheelhouse" in joined
    assert "--opt filename=Dockerfile.agent" in joined and "--local dockerfile=/repo/images" in joined
    assert cmd[-2:] == ["--output", "type=oci,dest=/o/image.tar,name=docker.io/sipfleet/agent:0.1.0"]
    assert "--allow" not in cmd
    denied = {r["selector"]["identifier"] for r in buildkit.SOURCE_POLICY["rules"] if r["action"] == 1}
    assert {"docker-image://*", "https://*", "http://*", "git://*"} <= denied


def test_cgroup_dirs_and_removal(tmp_path):
    for ctrl in ("cpu", "memory"):
        (tmp_path / ctrl).mkdir()
        (tmp_path / ctrl / "cgroup.procs").write_text("")
    (tmp_path / "not-a-hierarchy").mkdir()
    dirs = hostfs.cgroup_dirs("sipfleet-x", root=tmp_path)
    assert dirs == [tmp_path / "cpu/sipfleet-x", tmp_path / "memory/sipfleet-x"]
    (tmp_path / "cpu/sipfleet-x/buildkit/abc").mkdir(parents=True)
    assert hostfs.remove_cgroups(dirs) == []
    assert not (tmp_path / "cpu/sipfleet-x").exists()
    (tmp_path / "cgroup.controllers").write_text("")
    assert hostfs.cgroup_dirs("sipfleet-x", root=tmp_path) == [tmp_path / "sipfleet-x"]


# --- run -----------------------------------------------------------------------------------------------------

def test_process_args_follow_kubernetes_rules():
    cfg = {"Entrypoint": ["sipfleet-agent"], "Cmd": ["run"]}
    assert run.process_args(cfg, None, None) == ["sipfleet-agent", "run"]
    assert run.process_args(cfg, ["--help"], None) == ["sipfleet-agent", "--help"]
    assert run.process_args(cfg, None, ["python3", "-c", "1"]) == ["python3", "-c", "1"]
    assert run.process_args(cfg, ["x"], ["sh"]) == ["sh", "x"]


def test_runtime_spec_is_restricted_and_read_only():
    config = {"config": {"User": "65532:65532", "Env": ["PATH=/opt/sipfleet/bin:/usr/bin", "A=1"],
                         "WorkingDir": "/tmp"}}
    spec = run.runtime_spec(config, ["sipfleet-agent", "--help"], cgroup="sipfleet-imagerun-1", extra_env={"A": "2"})
    assert spec["root"] == {"path": "rootfs", "readonly": True}
    assert spec["process"]["user"] == {"uid": 65532, "gid": 65532}
    assert spec["process"]["noNewPrivileges"] is True
    assert all(v == [] for v in spec["process"]["capabilities"].values())
    assert {"type": "network"} in spec["linux"]["namespaces"], "its own (empty) network namespace"
    assert spec["process"]["env"] == ["PATH=/opt/sipfleet/bin:/usr/bin", "A=2"]
    assert spec["process"]["cwd"] == "/tmp" and spec["linux"]["cgroupsPath"] == "/sipfleet-imagerun-1"
    with pytest.raises(ValueError):
        run.runtime_spec({"config": {"User": "app"}}, ["x"], cgroup="c")
    json.dumps(spec)


def test_only_the_newest_results_are_kept_and_never_the_one_just_built():
    from sipfleet.localenv.imagebuild.build import stale_results

    entries = [("a", 1.0), ("b", 2.0), ("c", 3.0), ("d", 4.0), ("e", 5.0), ("f", 6.0)]
    assert stale_results(entries, keep="f") == ["a", "b"]
    assert stale_results(entries, keep="a") == ["b", "c"]  # the new one may have an old mtime (a renamed dir)
    assert stale_results(entries[:2], keep="b") == []
    day = 24 * 3600  # results younger than a day may serve another checkout's session: kept
    assert stale_results(entries, keep="f", now=2.5 + day) == ["a", "b"]
    assert stale_results(entries, keep="f", now=1.5 + day) == ["a"]
    assert stale_results(entries, keep="f", now=6.0) == []


def test_the_listed_result_is_the_current_inputs_one_even_when_another_checkouts_is_newer():
    def built(key: str) -> build.Built:
        return build.Built("operator", "n", "f", f"/c/{key}/image.tar", f"sha256:{key}", 1, 2, key, False, 0.0)

    mine, other = built("k1"), built("k2")
    mtimes = {mine.archive: 1.0, other.archive: 9.0}  # another checkout built k2 after this one built k1
    assert build.pick_listed([other, mine], "k1", mtimes) is mine
    assert build.pick_listed([other, mine], None, mtimes) is other  # inputs unknown: the newest
    assert build.pick_listed([other, mine], "k3", mtimes) is other  # current inputs not built: the newest
    assert build.pick_listed([], "k1", {}) is None
