"""Bringing a local cluster up and down, in order.

``start_all``: the machine-wide claim (hostnet.shared), the cluster's network (network.py, under the slot lock),
PKI and kubeconfigs, the host side (cgroups), every config file (configs.py), then the processes inside the
cluster's netns, each waited for before the next needs it: etcd, kube-apiserver, controller-manager and scheduler,
containerd (and the pause image), the kubelet (until the node is Ready and its not-ready taint lifted), kube-proxy.

``down_locked``: the reverse (STOP_STAGES): kube-proxy and the kubelet, every pod through the CRI, whatever is still
in the cluster's cgroups (by PID), containerd, the control plane; then the mounts under the state directory, the
cgroups, the network namespace, and the machine-wide record (the last owner restores what sipfleet changed).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from .. import hostnet, kubebin, pki, procs
from . import configs, hostside, network
from .configs import NODE_NAME, Binaries
from .errors import ClusterError, tail
from .runtime import ContainerRuntimeError

if TYPE_CHECKING:
    from . import LocalCluster

#: start order; down stops in the order of STOP_STAGES
COMPONENTS = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "containerd", "kubelet",
              "kube-proxy"]
STOP_STAGES = [["kube-proxy", "kubelet"], "pods", ["containerd"], ["kube-scheduler", "kube-controller-manager"],
               ["kube-apiserver"], ["etcd"]]
#: sun_path is 108 bytes with its terminating NUL; Go's net package refuses paths longer than this
SOCKET_PATH_MAX = 104
#: kubeconfig file stem -> (certificate, user name)
KUBECONFIGS = {"": ("admin", "sipfleet-admin"), "controller-manager": ("controller-manager", "system:kube-controller-manager"),
               "scheduler": ("scheduler", "system:kube-scheduler"), "node": ("node", f"system:node:{NODE_NAME}"),
               "kube-proxy": ("kube-proxy", "system:kube-proxy")}


def start_all(c: "LocalCluster", started: list[procs.ProcRecord], deadline: float) -> None:
    sock = str(c.layout.containerd_socket) + ".ttrpc"
    if len(sock.encode()) > SOCKET_PATH_MAX:
        raise ClusterError(f"the state directory {c.dir} is too long: containerd's socket {sock} would be "
                           f"{len(sock.encode())} bytes, a unix socket path has at most {SOCKET_PATH_MAX}; use a "
                           f"shorter --state-dir (or SIPFLEET_STATE)")
    try:
        kubebin.check_node()
        bins = kubebin.ensure([*kubebin.CONTROL_PLANE, *kubebin.NODE, "crictl"])
    except kubebin.KubebinError as e:
        raise ClusterError(str(e)) from None
    b = Binaries.from_ensure(bins)
    lay = c.layout
    hostside.claim_shared(c.netns)  # before anything changes (not under the slot lock: never nested)
    with hostnet.slot_lock():
        net = network.pick_slot(c.name, c.config().get("slot"))
        try:
            network.build(c._owned(), net)
        except hostnet.HostNetError as e:
            raise ClusterError(str(e)) from None
        procs.write_json_atomic(lay.config_file, {"name": c.name, "slot": net.slot, "nodeIP": net.node_ip,
                                                  "server": f"https://{net.node_ip}:{configs.APISERVER_PORT}"})
    p = pki.ensure(lay.pki_dir, node_ip=net.node_ip, service_ip=net.kubernetes_service_ip)
    write_kubeconfigs(c, p, net)
    record = hostside.HostRecord.load(lay.host_file)
    try:
        hostside.prepare(record, lay.host_file, configs.cgroup_root(c.name))
    except hostside.HostSideError as e:
        raise ClusterError(str(e)) from None
    write_node_configs(c, b, net)

    def launch(name: str, argv: list[str], env: dict[str, str] | None = None) -> procs.ProcRecord:
        rec, popen = procs.start(name, hostnet.nsenter_prefix(net.netns) + argv, lay.log_file(name),
                                 env=env, die_with_parent=c.die_with_parent)
        c._popen[rec.pid] = popen
        started.append(rec)
        c._write_records(started)
        return rec

    etcd = launch("etcd", configs.etcd_argv(b, lay))
    wait_ready(c, etcd, lambda: hostnet.in_netns(net.netns, _etcd_healthy), deadline, "etcd /health")
    api = launch("kube-apiserver", configs.apiserver_argv(b, lay, net))
    wait_ready(c, api, c.apiserver_ready, deadline, "kube-apiserver /readyz")
    kcm = launch("kube-controller-manager", configs.controller_manager_argv(b, lay, net))
    sched = launch("kube-scheduler", configs.scheduler_argv(b, lay, net))
    env = {**os.environ, "PATH": f"{b.containerd.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    ctd = launch("containerd", [str(b.containerd), f"--config={lay.containerd_config}"], env=env)
    wait_ready(c, kcm, lambda: c._ok(configs.KCM_PORT, "/healthz", verify=False), deadline,
               "kube-controller-manager /healthz")
    wait_ready(c, sched, lambda: c._ok(configs.SCHEDULER_PORT, "/healthz", verify=False), deadline,
               "kube-scheduler /healthz")
    wait_ready(c, ctd, c.runtime(bins).ready, deadline, "containerd socket")
    import_pause(c, bins)
    kubelet = launch("kubelet", configs.kubelet_argv(b.kubelet, lay, net))
    wait_ready(c, kubelet, c.node_ready, deadline, f"node {NODE_NAME} Ready (taint lifted)")
    proxy = launch("kube-proxy", configs.kube_proxy_argv(b.kube_proxy, lay))
    wait_ready(c, proxy, lambda: _http_ok(net.node_ip, configs.KUBE_PROXY_HEALTHZ_PORT, "/healthz"), deadline,
               "kube-proxy /healthz")


def write_kubeconfigs(c: "LocalCluster", p: pki.Pki, net: hostnet.plan.ClusterNet) -> None:
    server = f"https://{net.node_ip}:{configs.APISERVER_PORT}"
    for stem, (who, user) in KUBECONFIGS.items():
        doc = pki.kubeconfig(server, p.ca_crt, p.client_crt(who), p.client_key(who), user, f"sipfleet-{c.name}")
        path = c.layout.component_kubeconfig(stem) if stem else c.layout.kubeconfig
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)


def write_node_configs(c: "LocalCluster", b: Binaries, net: hostnet.plan.ClusterNet) -> None:
    lay = c.layout
    for d in lay.node_dirs():
        d.mkdir(parents=True, exist_ok=True)
    lay.kubelet_config.write_text(configs.kubelet_config(lay, net, c.name))
    lay.kube_proxy_config.write_text(configs.kube_proxy_config(lay, net))
    lay.containerd_config.write_text(configs.containerd_toml(b, lay))
    (lay.cni_conf_dir / "10-sipfleet.conflist").write_text(configs.cni_conflist(lay, net))
    lay.resolv_conf.write_text("")


def import_pause(c: "LocalCluster", bins: dict[str, Path]) -> None:
    from ..pauseimage import write_oci_archive

    archive = c.layout.images_dir / "pause.tar"
    if not archive.exists():
        write_oci_archive(bins["pause"], archive, configs.PAUSE_IMAGE)
    c.runtime(bins).import_image(archive)


def wait_ready(c: "LocalCluster", rec: procs.ProcRecord, ready, deadline: float, what: str) -> None:
    while True:
        try:
            if ready():
                return
        except (OSError, hostnet.HostNetError):
            pass
        if not procs.is_alive(rec):
            popen = c._popen.get(rec.pid)
            code = popen.poll() if popen else None
            raise ClusterError(f"{rec.name} exited{f' with code {code}' if code is not None else ''} before "
                               f"{what}; last lines of {rec.log}:\n{tail(Path(rec.log or ''))}")
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out waiting for {what} (cluster {c.name!r}); last lines of {rec.log}:\n"
                               f"{tail(Path(rec.log or ''))}")
        time.sleep(0.2)


# -------------------------------------------------------------------------------------------------- one again
def readiness(c: "LocalCluster", name: str):
    """The check that says component ``name`` serves again (what ``start_all`` waits for)."""
    net = c.net
    assert net is not None, "the cluster has no network"
    return {
        "etcd": lambda: hostnet.in_netns(net.netns, _etcd_healthy),
        "kube-apiserver": c.apiserver_ready,
        "kube-controller-manager": lambda: c._ok(configs.KCM_PORT, "/healthz", verify=False),
        "kube-scheduler": lambda: c._ok(configs.SCHEDULER_PORT, "/healthz", verify=False),
        "containerd": lambda: c.runtime().ready(),
        # its own healthz, then the node: a restarted kubelet's Node object is still Ready from before
        "kubelet": lambda: _http_ok(net.node_ip, configs.KUBELET_HEALTHZ_PORT, "/healthz") and c.node_ready(),
        "kube-proxy": lambda: _http_ok(net.node_ip, configs.KUBE_PROXY_HEALTHZ_PORT, "/healthz"),
    }[name]


def restart(c: "LocalCluster", name: str, *, down_s: float = 0.0, kill: bool = False, timeout: float = 120.0) -> float:
    """Stop one running component (SIGTERM, or SIGKILL with ``kill``), keep it down ``down_s`` seconds, start it
    again with the same command line and log, and wait until it serves; returns the seconds from the stop to
    ready. Its state (etcd data, the kubelet's pods, containerd's containers) is kept: a restart, not a reset."""
    recs = c.records()
    rec = next((r for r in recs if r.name == name), None)
    if rec is None or not procs.is_alive(rec):
        raise ClusterError(f"component {name} of cluster {c.name!r} is not running")
    t0 = time.monotonic()
    if kill:  # no goodbye: the whole process group at once (our processes lead their own)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(rec.pid, 9) if os.getpgid(rec.pid) == rec.pid else os.kill(rec.pid, 9)
        procs.stop([rec], grace=5.0)
    else:
        procs.stop([rec], grace=10.0)
    time.sleep(down_s)
    env = None
    if name == "containerd":
        binary = next(Path(x) for x in rec.cmd if Path(x).name == "containerd")
        env = {**os.environ, "PATH": f"{binary.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    new, popen = procs.start(name, rec.cmd, Path(rec.log or c.layout.log_file(name)), env=env,
                             die_with_parent=c.die_with_parent)
    c._popen[new.pid] = popen
    c._write_records([new if r.name == name else r for r in recs])
    wait_ready(c, new, readiness(c, name), time.monotonic() + timeout, f"{name} serving again")
    return time.monotonic() - t0


# -------------------------------------------------------------------------------------------------- down
def down_locked(c: "LocalCluster", *, purge: bool, grace: float = 10.0) -> list[str]:
    recs = c.records()
    problems: list[str] = []
    for stage in STOP_STAGES:
        if stage == "pods":
            problems += stop_pods(c, recs, grace)
        else:
            problems += [f"{n} needed SIGKILL" for n in procs.stop([r for r in recs if r.name in stage], grace)]
        if stage == ["containerd"]:
            problems += stop_orphan_shims(c, grace)
    problems += [f"{n} needed SIGKILL" for n in procs.stop([r for r in recs if r.name not in COMPONENTS], grace)]
    c.layout.pids_file.unlink(missing_ok=True)
    problems += hostside.unmount_under(c.dir)
    record = hostside.HostRecord.load(c.layout.host_file)
    problems += hostside.remove_cgroups(record)
    record.save(c.layout.host_file)
    problems += network.teardown(c._owned())
    problems += hostside.release_shared(c.netns, c.layout.pod_logs_dir)
    if purge:
        for d in (c.layout.etcd_dir, c.layout.pki_dir, c.layout.containerd_dir, c.layout.kubelet_dir,
                  c.layout.pod_logs_dir, c.layout.images_dir, c.dir / "cni", c.layout.node_config_dir):
            shutil.rmtree(d, ignore_errors=True)
        for f in c.dir.glob("kubeconfig*"):
            f.unlink(missing_ok=True)
        c.layout.config_file.unlink(missing_ok=True)
    return problems


def stop_pods(c: "LocalCluster", recs: list[procs.ProcRecord], grace: float) -> list[str]:
    """With the kubelet gone: remove every pod through the CRI (containers, mounts, pod networks), then
    SIGKILL whatever is still in the cluster's cgroups (by PID: they can only be its pods)."""
    problems = []
    ctd = next((r for r in recs if r.name == "containerd"), None)
    if ctd is not None and procs.is_alive(ctd):
        try:
            c.runtime().remove_all_pods()
        except (ContainerRuntimeError, kubebin.KubebinError, OSError, subprocess.TimeoutExpired) as e:
            problems.append(f"removing pods through the CRI: {e}")
    record = hostside.HostRecord.load(c.layout.host_file)
    left = hostside.cgroup_pids(record)
    if left:
        problems.append(f"processes left in the cluster's cgroups after the pods were removed: {left[:10]}")
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        end = time.monotonic() + grace
        while hostside.cgroup_pids(record) and time.monotonic() < end:
            time.sleep(0.1)
    return problems


def stop_orphan_shims(c: "LocalCluster", grace: float) -> list[str]:
    """With containerd stopped: SIGKILL (by PID) the shims it started that are still running, e.g. after a run
    killed before its own ``down`` (they hold the network namespace and the pods' mounts)."""
    left = hostside.shim_pids(c.layout.containerd_socket)
    if not left:
        return []
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
    end = time.monotonic() + grace
    while hostside.shim_pids(c.layout.containerd_socket) and time.monotonic() < end:
        time.sleep(0.1)
    return [f"containerd shims outlived containerd, SIGKILLed: {left[:10]}"]


def _etcd_healthy() -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", configs.ETCD_CLIENT, timeout=3)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def _http_ok(host: str, port: int, path: str) -> bool:
    conn = http.client.HTTPConnection(host, port, timeout=3)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()
