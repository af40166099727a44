"""Volume files, container mount namespaces, log paths and the PID registry of the node runner.

No cluster: the Secret/ConfigMap/TokenRequest source is a small in-memory provider (these are unit tests of
the file layout); processes are real (unshare + bind mounts, as root).
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sipfleet.localenv.noderunner import log_path, stop_recorded_processes
from sipfleet.localenv.noderunner.process import PidRegistry, proc_alive, proc_start_time, spawn
from sipfleet.localenv.noderunner.volumes import UnsupportedVolume, VolumeError, VolumeManager


class Provider:
    def __init__(self):
        self.secrets = {("ns", "creds"): {"data": {"password": base64.b64encode(b"pw").decode(),
                                                   "user": base64.b64encode(b"alice").decode()}}}
        self.cms = {("ns", "cfg"): {"data": {"a.conf": "A", "b.conf": "B"}}}
        self.tokens = 0

    def get_secret(self, ns, name):
        return self.secrets.get((ns, name))

    def get_configmap(self, ns, name):
        return self.cms.get((ns, name))

    def request_token(self, ns, sa, audiences, exp, pod_name, pod_uid):
        self.tokens += 1
        return f"token-{self.tokens}-{sa}-{','.join(audiences)}", time.time() + exp

    def cluster_ca(self):
        return b"-----BEGIN CERTIFICATE-----\nfake\n-----END CERTIFICATE-----\n"


def _pod(volumes):
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"b": "2", "a": "1"}},
            "spec": {"serviceAccountName": "sa1", "volumes": volumes, "containers": [{"name": "c"}]}}


KUBE_API_ACCESS = {"name": "kube-api-access-x", "projected": {"defaultMode": 420, "sources": [
    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
    {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
]}}


def test_volumes_are_materialised(tmp_path):
    prov = Provider()
    vm = VolumeManager(tmp_path, prov, {"cpu": "2"})
    paths = vm.setup(_pod([
        {"name": "s", "secret": {"secretName": "creds", "items": [{"key": "password", "path": "sub/pw", "mode": 0o400}]}},
        {"name": "c", "configMap": {"name": "cfg"}},
        {"name": "e", "emptyDir": {}},
        {"name": "d", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
        KUBE_API_ACCESS,
    ]), "127.0.101.9")
    assert (paths["s"] / "sub" / "pw").read_bytes() == b"pw"
    assert oct((paths["s"] / "sub" / "pw").stat().st_mode & 0o777) == oct(0o400)
    assert not (paths["s"] / "user").exists()
    assert sorted(p.name for p in paths["c"].iterdir()) == ["a.conf", "b.conf"]
    assert paths["e"].is_dir() and not any(paths["e"].iterdir())
    assert (paths["d"] / "labels").read_text() == 'a="1"\nb="2"'
    kaa = paths["kube-api-access-x"]
    assert (kaa / "token").read_text() == "token-1-sa1-"
    assert "BEGIN CERTIFICATE" in (kaa / "ca.crt").read_text()  # kube-root-ca.crt not published: kubeconfig CA
    assert (kaa / "namespace").read_text() == "ns"

    # a refresh re-uses the still-valid token and follows changed data
    prov.cms[("ns", "cfg")] = {"data": {"a.conf": "A2"}}
    vm.setup(_pod([{"name": "c", "configMap": {"name": "cfg"}}, KUBE_API_ACCESS]), "127.0.101.9")
    assert sorted(p.name for p in paths["c"].iterdir()) == ["a.conf"]
    assert (paths["c"] / "a.conf").read_text() == "A2"
    assert prov.tokens == 1

    ro = {m[1]: m[2] for m in vm.mounts_for({"name": "c", "volumeMounts": [
        {"name": "c", "mountPath": "/etc/c"}, {"name": "e", "mountPath": "/data"},
        {"name": "e", "mountPath": "/data-ro", "readOnly": True}]})}
    assert ro == {"/etc/c": True, "/data": False, "/data-ro": True}


def test_missing_and_unsupported_volumes(tmp_path):
    vm = VolumeManager(tmp_path, Provider(), {})
    with pytest.raises(VolumeError, match='secret "nope" not found'):
        vm.setup(_pod([{"name": "s", "secret": {"secretName": "nope"}}]), None)
    vm.setup(_pod([{"name": "s", "secret": {"secretName": "nope", "optional": True}}]), None)
    with pytest.raises(UnsupportedVolume, match="persistentVolumeClaim"):
        vm.setup(_pod([{"name": "v", "persistentVolumeClaim": {"claimName": "x"}}]), None)
    with pytest.raises(VolumeError, match="unknown volume"):
        vm.mounts_for({"name": "c", "volumeMounts": [{"name": "zzz", "mountPath": "/x"}]})


@pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces need root")
def test_container_sees_its_mounts_and_the_host_does_not(tmp_path):
    vm = VolumeManager(tmp_path, Provider(), {})
    vm.setup(_pod([{"name": "s", "secret": {"secretName": "creds"}}]), None)
    target = tmp_path / "mnt" / "secret-at-mountpath"
    mounts = vm.mounts_for({"name": "c", "volumeMounts": [{"name": "s", "mountPath": str(target)}]})
    log = tmp_path / "c.log"
    script = (f"cat {target}/user; echo; "
              f"if (echo x > {target}/new) 2>/dev/null; then echo writable; else echo read-only; fi")
    proc = spawn(["/bin/sh", "-c", script], {"PATH": os.environ["PATH"]}, str(tmp_path), mounts, log)
    assert proc.wait(timeout=30) == 0, log.read_text()
    out = log.read_text().split()
    assert out == ["alice", "read-only"], out
    assert target.is_dir() and not any(target.iterdir())  # on the host the mount point stays empty


def test_pid_registry_and_stop_recorded_processes(tmp_path):
    reg = PidRegistry(tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        reg.add(proc.pid, {"name": "ns/p/c", "namespace": "ns", "pod": "p", "container": "c"})
        rec = reg.previous()
        assert rec[0]["pid"] == proc.pid and rec[0]["start_time"] == proc_start_time(proc.pid)
        assert stop_recorded_processes(tmp_path, grace=5) == 1
        assert proc.wait(timeout=10) == -15
        assert not proc_alive(proc.pid, rec[0]["start_time"])
        reg.remove(proc.pid)
        assert reg.previous() == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_log_path(tmp_path):
    assert log_path(tmp_path, "ns", "p", "c") == tmp_path / "ns_p_unknown" / "c.log"
    old = tmp_path / "ns_p_uid1"
    old.mkdir()
    (old / "c.log").write_text("old")
    assert log_path(tmp_path, "ns", "p", "c") == old / "c.log"
    (tmp_path / "ns_p-2_uid9").mkdir()  # another pod whose name starts the same
    new = tmp_path / "ns_p_uid2"
    new.mkdir()
    (new / "c.log").write_text("new")
    (new / "c.previous.log").write_text("before")
    os.utime(old, (1, 1))
    assert log_path(tmp_path, "ns", "p", "c") == new / "c.log"
    assert log_path(tmp_path, "ns", "p", "c", previous=True) == new / "c.previous.log"


def test_mount_order_parents_first_but_covering_mounts_after_the_sources_they_hide():
    from sipfleet.localenv.noderunner.process import mount_order

    state = "/tmp/state/pods/p"
    mounts = [
        (f"{state}/tmp", "/tmp", False),                          # an emptyDir at /tmp covers the pod's files
        (f"{state}/sa", "/var/run/secrets/kubernetes.io/serviceaccount", True),
        (f"{state}/cfg", "/etc/app", True),
        (f"{state}/cfg-sub", "/etc/app/sub", True),
    ]
    order = [m[1] for m in mount_order(mounts)]
    assert order[-1] == "/tmp"
    assert order.index("/etc/app") < order.index("/etc/app/sub")


@pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces need root")
def test_an_emptydir_over_the_state_directory_does_not_hide_other_volumes(tmp_path, tmp_path_factory):
    pod = tmp_path / "pod"
    (pod / "emptydir").mkdir(parents=True)
    (pod / "emptydir" / "scratch").write_text("")
    (pod / "sa").mkdir()
    (pod / "sa" / "token").write_text("tok")
    sa_target = tmp_path_factory.mktemp("elsewhere") / "serviceaccount"
    mounts = [(str(pod / "emptydir"), str(tmp_path), False), (str(pod / "sa"), str(sa_target), True)]
    log = tmp_path_factory.mktemp("logs") / "c.log"
    proc = spawn(["/bin/sh", "-c", f"cat {sa_target}/token; echo; ls {tmp_path}"],
                 {"PATH": os.environ["PATH"]}, "/", mounts, log)
    assert proc.wait(timeout=30) == 0, log.read_text()
    assert log.read_text().split() == ["tok", "scratch"], log.read_text()
