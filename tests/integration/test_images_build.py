"""The operator and agent images, built here with BuildKit from images/Dockerfile.*, run in real containers.

Each image is run with runc as a kubelet would run a restricted pod (its own USER, read-only root filesystem,
no capabilities, a network namespace with only ``lo``): its entrypoint answers ``--help``, it runs as
65532:65532, it cannot write its root filesystem, it holds the product only (no sipfleet.localenv, bench,
demo, tests or test-only distributions; every product module imports), and pjsua2 initialises in the agent
image. The build itself: a second build reuses the first, no RUN step has a network interface but ``lo``, a
public image is refused, and the archives import into a containerd under the names the chart uses.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from sipfleet.localenv import kubebin, procs
from sipfleet.localenv.imagebuild import base, build, buildkit, containerd, hostfs, targets

pytestmark = [pytest.mark.slow]

COMPONENTS = ("operator", "agent")

INSPECT = r"""
import importlib, importlib.metadata, importlib.util, json, os, pkgutil, sys
component = sys.argv[1]
other = "sipfleet_agent" if component == "operator" else "sipfleet_operator"
modules = []
for root in ("sipfleet", "sipfleet_" + component):
    pkg = importlib.import_module(root)
    modules.append(root)
    modules.extend(i.name for i in pkgutil.walk_packages(pkg.__path__, root + "."))
for name in modules:
    importlib.import_module(name)
site = [p for p in sys.path if p.endswith("site-packages")][0]
print(json.dumps({
    "modules": modules,
    "loaded": sorted(n for n in sys.modules if n.split(".")[0] in ("sipfleet", "sipfleet_operator", "sipfleet_agent")),
    "found": {n: importlib.util.find_spec(n) is not None
              for n in ("sipfleet.localenv", "sipfleet.bench", "sipfleet.demo", "sipfleet.cli", other, "tests")},
    "dists": sorted(d.metadata["Name"].lower() for d in importlib.metadata.distributions()),
    "sipfleet_dir": sorted(os.listdir(os.path.dirname(importlib.import_module("sipfleet").__file__))),
    "site": site,
}))
"""

WHO = r"""
import errno, json, os
def attempt(path):
    try:
        open(path, "w").close()
        return "written"
    except OSError as e:
        return errno.errorcode[e.errno]
ifaces = [line.split(":")[0].strip() for line in open("/proc/net/dev").read().splitlines()[2:]]
caps = [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff:")][0]
import getpass
print(json.dumps({"uid": os.getuid(), "gid": os.getgid(), "euid": os.geteuid(), "cwd": os.getcwd(),
                  "tmp": attempt("/tmp/x"), "venv": attempt("/opt/sipfleet/x"), "ifaces": ifaces, "capeff": caps,
                  "user": getpass.getuser()}))
"""

PJSUA = r"""
import pjsua2 as pj
ep = pj.Endpoint()
ep.libCreate()
cfg = pj.EpConfig()
cfg.logConfig.level = 0
cfg.logConfig.consoleLevel = 0
ep.libInit(cfg)
ep.audDevManager().setNullDev()
tc = pj.TransportConfig()
tc.boundAddress = "127.0.0.1"
tc.port = 0
tid = ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tc)
ep.libStart()
print("pjsua2", ep.libVersion().full, ep.transportGetInfo(tid).localName)
ep.libDestroy()
"""


def test_a_second_build_reuses_the_first(built_images):
    again = {b.component: b for b in build.build_images()}
    for c in COMPONENTS:
        assert again[c].rebuilt is False
        assert again[c].digest == built_images[c].digest and again[c].archive == built_images[c].archive
    listed = {b.component: b.digest for b in build.list_built()}
    assert listed == {c: built_images[c].digest for c in COMPONENTS}


@pytest.mark.parametrize("component", COMPONENTS)
def test_image_is_named_as_the_chart_says(built_images, component):
    b = built_images[component]
    assert b.name == targets.targets()[component].name == f"sipfleet/{component}:0.1.0"
    assert b.full_name == f"docker.io/sipfleet/{component}:0.1.0"
    assert b.digest.startswith("sha256:") and b.size > 0 and b.unpacked > b.size


@pytest.mark.parametrize("component", COMPONENTS)
def test_entrypoint_answers_help(image_bundle, component):
    r = image_bundle(component).run(["--help"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: sipfleet-{component}"), r.stdout


@pytest.mark.parametrize("component", COMPONENTS)
def test_runs_as_65532_on_a_read_only_root_without_network(image_bundle, component):
    r = image_bundle(component).run(entrypoint=["python3", "-c", WHO])
    assert r.returncode == 0, r.stderr
    who = json.loads(r.stdout)
    assert (who["uid"], who["gid"], who["euid"]) == (65532, 65532, 65532)
    assert who["user"] == "sipfleet"  # a name for the UID: kopf's peering identity calls getpass.getuser()
    assert who["cwd"] == "/tmp"
    # EROFS, not EACCES: /tmp is world-writable in the image, only the read-only mount refuses it
    assert who["tmp"] == "EROFS" and who["venv"] in ("EROFS", "EACCES")
    assert who["ifaces"] == ["lo"]
    assert int(who["capeff"], 16) == 0


@pytest.mark.parametrize("component", COMPONENTS)
def test_image_holds_the_product_only(image_bundle, component):
    r = image_bundle(component).run(entrypoint=["python3", "-c", INSPECT, component])
    assert r.returncode == 0, r.stderr
    seen = json.loads(r.stdout)
    assert f"sipfleet_{component}.main" in seen["modules"] and "sipfleet.api.models" in seen["modules"]
    assert not any(seen["found"].values()), seen["found"]
    assert all(not n.startswith(("sipfleet.localenv", "sipfleet.bench", "sipfleet.demo")) for n in seen["loaded"])
    assert sorted(n for n in seen["sipfleet_dir"] if n != "__pycache__") == ["__init__.py", "api"]
    dists = set(seen["dists"])
    assert f"sipfleet-{component}" in dists and "sipfleet" not in dists
    for absent in ("pytest", "pytest-timeout", "cryptography", "pip", "setuptools"):
        assert absent not in dists, absent
    assert ("pjsua2-python" in dists) == (component == "agent")
    assert ("kopf" in dists) == (component == "operator")
    assert seen["site"] == "/opt/sipfleet/lib/python3.11/site-packages"


def test_pjsua2_initialises_in_the_agent_image(image_bundle):
    r = image_bundle("agent").run(entrypoint=["python3", "-c", PJSUA])
    assert r.returncode == 0, r.stderr
    last = r.stdout.strip().splitlines()[-1].split()  # pjlib logs its start-up before libInit
    assert last[:2] == ["pjsua2", "2.15.1"] and last[2].startswith("127.0.0.1:"), r.stdout


def _build(bins, tmp_path: Path, dockerfile: str, out: Path) -> buildkit.Daemon:
    """Build ``dockerfile`` (files out) with a buildkitd of its own, stopped before returning."""
    (tmp_path / "Dockerfile").write_text(dockerfile)
    b = base.ensure_base()
    with buildkit.Daemon(bins["buildkitd"], bins["buildctl"], bins["runc"], kubebin.cni_bin_dir()) as daemon:
        cmd = buildkit.build_cmd(bins["buildctl"], daemon.paths, context=tmp_path, dockerfile=tmp_path / "Dockerfile",
                                 base_layout=b.layout, base_ref=b.buildkit_source, output=out, exporter="local")
        record = daemon.record
        assert record is not None and procs.is_alive(record)
        try:
            daemon.build(cmd, tmp_path / "build.log")
        finally:
            daemon.stop()
            assert not procs.is_alive(record), "buildkitd is stopped by its PID"
    return daemon


def test_build_steps_have_only_loopback_and_leave_nothing_behind(imagebuild_bins, tmp_path):
    out = tmp_path / "out"
    # a unique ARG value so BuildKit runs the step now rather than reusing an earlier result
    daemon = _build(imagebuild_bins, tmp_path, f"FROM scratch AS base\nFROM base\nARG NONCE={time.time_ns()}\n"
                    "RUN cat /proc/net/dev > /netdev && cat /proc/net/route > /route\n"
                    "FROM scratch\nCOPY --from=1 /netdev /route /\n", out)
    ifaces = [line.split(":")[0].strip() for line in (out / "netdev").read_text().splitlines()[2:]]
    assert ifaces == ["lo"]
    assert len((out / "route").read_text().splitlines()) <= 1, "no routes at all"
    # the build ran a container: its cgroups and mounts are gone with the daemon
    assert not hostfs.mounts_under(daemon.paths.state)
    assert not [p for p in hostfs.cgroup_dirs(buildkit.CGROUP_PARENT) if p.exists()]
    assert not daemon.paths.pidfile.exists()


def test_public_images_are_refused_before_any_pull(imagebuild_bins, tmp_path):
    with pytest.raises(buildkit.BuildkitError) as err:
        _build(imagebuild_bins, tmp_path, "FROM docker.io/library/busybox:1.36\nRUN true\n", tmp_path / "out")
    assert "denied by policy" in str(err.value)


def test_images_import_into_containerd(built_images, imagebuild_bins, tmp_path):
    d = tmp_path
    config = d / "config.toml"
    config.write_text("\n".join([
        "version = 3",
        f'root = "{d}/root"', f'state = "{d}/state"', f'temp = "{d}/tmp"',
        'disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", '
        '"io.containerd.cri.v1.runtime", "io.containerd.nri.v1.nri"]',
        "[grpc]", f'  address = "{d}/c.sock"', "[ttrpc]", f'  address = "{d}/c.sock.ttrpc"',
        '[plugins."io.containerd.internal.v1.opt"]', f'  path = "{d}/opt"', ""]))
    rec, proc = procs.start("containerd", [str(imagebuild_bins["containerd"]), "--config", str(config)],
                            d / "containerd.log", die_with_parent=True)
    try:
        deadline = time.monotonic() + 30
        while not (d / "c.sock").exists():
            assert proc.poll() is None and time.monotonic() < deadline, (d / "containerd.log").read_text()[-2000:]
            time.sleep(0.1)
        names = containerd.import_images([Path(built_images[c].archive) for c in COMPONENTS], address=d / "c.sock",
                                         ctr=imagebuild_bins["ctr"])
        assert names == [f"docker.io/sipfleet/{c}:0.1.0" for c in COMPONENTS]
        listing = subprocess.run([str(imagebuild_bins["ctr"]), "--address", str(d / "c.sock"), "-n", "k8s.io",
                                  "images", "list"], capture_output=True, text=True, check=True).stdout
        for c in COMPONENTS:
            line = next(ln for ln in listing.splitlines() if ln.startswith(f"docker.io/sipfleet/{c}:0.1.0"))
            assert built_images[c].digest in line
    finally:
        procs.stop([rec], grace=10)
        hostfs.unmount_under(d)
