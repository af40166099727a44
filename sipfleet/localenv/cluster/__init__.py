"""A real local Kubernetes cluster: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd, a
real kubelet and kube-proxy, all built from Go modules (kubebin) and run inside one network namespace of the
cluster's own (network.py), with every path under one state directory (layout.py).

``LocalCluster(name)`` keeps its state in ``$SIPFLEET_STATE/clusters/<name>/`` (default ``~/.local/state/sipfleet``),
or in ``state_dir``. ``up()`` is idempotent (a running cluster is reused); ``down()`` stops everything by PID in
the right order (kube-proxy, the kubelet, the pods, containerd, then the control plane) and removes every mount,
network namespace, veth, bridge, cgroup, sysctl change, nftables table and host path it created (hostside.py).

The host reaches the apiserver at ``https://10.213.c.1:6443`` and pods at their IPs; pods reach the apiserver
through the ``kubernetes`` Service. Images are imported (``load_images``), never pulled.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import json
import os
import shutil
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import yaml

from .. import hostnet, kubebin, pki, procs
from . import configs, hostside, network
from .configs import NODE_NAME, Binaries
from .layout import Layout
from .runtime import ContainerRuntimeError, Runtime, container_log_path

#: start order; down() stops in the order of STOP_STAGES
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

__all__ = ["LocalCluster", "ClusterError", "ContainerRuntimeError", "NODE_NAME", "state_root", "get", "wait_api",
           "run_kubectl"]


class ClusterError(RuntimeError):
    """The cluster could not be started/used; the message is meant for humans (includes log tails)."""


def state_root() -> Path:
    env = os.environ.get("SIPFLEET_STATE")
    return Path(env).expanduser() if env else Path.home() / ".local" / "state" / "sipfleet"


def tail(path: Path, lines: int = 20) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            data = f.read().decode(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(data.splitlines()[-lines:])


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


class LocalCluster:
    def __init__(self, name: str = "default", state_dir: str | Path | None = None, *, die_with_parent: bool = False):
        try:
            hostnet.plan.check_name(name, "cluster name")
        except ValueError as e:
            raise ClusterError(str(e)) from None
        self.name = name
        self.dir = Path(state_dir) if state_dir else state_root() / "clusters" / name
        self.layout = Layout(self.dir)
        self.die_with_parent = die_with_parent
        self._popen: dict[int, subprocess.Popen] = {}

    # -------------------------------------------------------------------------------------------------- state
    @property
    def kubeconfig(self) -> Path:
        return self.layout.kubeconfig

    @property
    def logs_dir(self) -> Path:
        return self.layout.logs_dir

    def log_file(self, component: str) -> Path:
        return self.layout.log_file(component)

    @property
    def pki(self) -> pki.Pki:
        return pki.Pki(self.layout.pki_dir)

    def config(self) -> dict[str, Any]:
        try:
            return json.loads(self.layout.config_file.read_text())
        except (OSError, ValueError):
            return {}

    @property
    def net(self) -> hostnet.plan.ClusterNet | None:
        slot = self.config().get("slot")
        return hostnet.plan.cluster_net(slot, self.name) if isinstance(slot, int) else None

    @property
    def netns(self) -> str:
        return hostnet.plan.cluster_netns(self.name)

    @property
    def node_ip(self) -> str | None:
        return self.net.node_ip if self.net else None

    @property
    def server(self) -> str | None:
        return f"https://{self.node_ip}:{configs.APISERVER_PORT}" if self.node_ip else None

    def records(self) -> list[procs.ProcRecord]:
        return procs.read_records(self.layout.pids_file)

    def _write_records(self, records: list[procs.ProcRecord]) -> None:
        procs.write_json_atomic(self.layout.pids_file, {"cluster": self.name, "processes": [r.to_json() for r in records]})

    def _owned(self) -> hostnet.Owned:
        return hostnet.Owned(self.layout.hostnet_file, owner=f"cluster {self.name}")

    # -------------------------------------------------------------------------------------------------- health
    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_crt))
        ctx.load_cert_chain(str(self.pki.client_crt("admin")), str(self.pki.client_key("admin")))
        return ctx

    def _https_get(self, port: int, path: str, timeout: float = 5.0, verify: bool = True) -> tuple[int, str]:
        ctx = self._ssl_context() if verify else ssl._create_unverified_context()
        conn = http.client.HTTPSConnection(self.node_ip or "127.0.0.1", port, timeout=timeout, context=ctx)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read().decode(errors="replace")
        finally:
            conn.close()

    def _ok(self, port: int, path: str, verify: bool = True) -> bool:
        try:
            return self._https_get(port, path, timeout=3, verify=verify)[0] == 200
        except (OSError, ssl.SSLError, http.client.HTTPException):
            return False

    def apiserver_ready(self) -> bool:
        return bool(self.node_ip) and self.pki.complete() and self._ok(configs.APISERVER_PORT, "/readyz")

    def running(self) -> bool:
        """True when every recorded process is alive, the API server is ready and the node is Ready."""
        recs = self.records()
        return bool(recs) and all(procs.is_alive(r) for r in recs) and self.apiserver_ready() and self.node_ready()

    def nodes(self) -> list[dict[str, Any]]:
        """[{name, ready, reason, version, taints}] from the API (empty when it is unreachable)."""
        if not self.node_ip or not self.pki.complete():
            return []
        try:
            status, body = self._https_get(configs.APISERVER_PORT, "/api/v1/nodes")
        except (OSError, ssl.SSLError, http.client.HTTPException):
            return []
        if status != 200:
            return []
        out = []
        for n in json.loads(body).get("items", []):
            cond = next((c for c in n.get("status", {}).get("conditions", []) or [] if c.get("type") == "Ready"), {})
            out.append({
                "name": n["metadata"]["name"],
                "ready": cond.get("status") == "True",
                "reason": cond.get("reason") or cond.get("message") or "",
                "version": n.get("status", {}).get("nodeInfo", {}).get("kubeletVersion", ""),
                "taints": [t.get("key") for t in (n.get("spec") or {}).get("taints") or []],
            })
        return out

    def node_ready(self) -> bool:
        """The node is Ready and the real node-lifecycle controller has lifted the not-ready taint."""
        return any(n["name"] == NODE_NAME and n["ready"] and "node.kubernetes.io/not-ready" not in n["taints"]
                   for n in self.nodes())

    # -------------------------------------------------------------------------------------------------- up
    def up(self, *, fresh: bool = False, timeout: float = 240.0) -> "LocalCluster":
        """Start the cluster (idempotent) and wait until the node is Ready. ``fresh`` drops etcd data first."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with _flock(self.layout.lock_file):
            if self.running() and not fresh:
                return self
            if self.records() or self.layout.hostnet_file.exists():  # partly running or stale: start over
                self._down_locked(purge=False)
            if fresh:
                shutil.rmtree(self.layout.etcd_dir, ignore_errors=True)
            started: list[procs.ProcRecord] = []
            try:
                self._start_all(started, deadline=time.monotonic() + timeout)
            except BaseException:
                self._down_locked(purge=False)  # Ctrl-C or a failure: undo everything, keep the logs
                raise
        return self

    def _start_all(self, started: list[procs.ProcRecord], deadline: float) -> None:
        sock = str(self.layout.containerd_socket) + ".ttrpc"
        if len(sock.encode()) > SOCKET_PATH_MAX:
            raise ClusterError(f"the state directory {self.dir} is too long: containerd's socket {sock} would be "
                               f"{len(sock.encode())} bytes, a unix socket path has at most {SOCKET_PATH_MAX}; use a "
                               f"shorter --state-dir (or SIPFLEET_STATE)")
        try:
            kubebin.check_node()
            bins = kubebin.ensure([*kubebin.CONTROL_PLANE, *kubebin.NODE, "crictl"])
        except kubebin.KubebinError as e:
            raise ClusterError(str(e)) from None
        b = Binaries.from_ensure(bins)
        lay = self.layout
        hostside.claim_shared(self.netns)  # before anything changes (not under the slot lock: never nested)
        with hostnet.slot_lock():
            net = network.pick_slot(self.name, self.config().get("slot"))
            try:
                network.build(self._owned(), net)
            except hostnet.HostNetError as e:
                raise ClusterError(str(e)) from None
            procs.write_json_atomic(lay.config_file, {"name": self.name, "slot": net.slot, "nodeIP": net.node_ip,
                                                      "server": f"https://{net.node_ip}:{configs.APISERVER_PORT}"})
        p = pki.ensure(lay.pki_dir, node_ip=net.node_ip, service_ip=net.kubernetes_service_ip)
        self._write_kubeconfigs(p, net)
        record = hostside.HostRecord.load(lay.host_file)
        try:
            hostside.prepare(record, lay.host_file, configs.cgroup_root(self.name))
        except hostside.HostSideError as e:
            raise ClusterError(str(e)) from None
        self._write_node_configs(b, net)

        def launch(name: str, argv: list[str], env: dict[str, str] | None = None) -> procs.ProcRecord:
            rec, popen = procs.start(name, hostnet.nsenter_prefix(net.netns) + argv, lay.log_file(name),
                                     env=env, die_with_parent=self.die_with_parent)
            self._popen[rec.pid] = popen
            started.append(rec)
            self._write_records(started)
            return rec

        etcd = launch("etcd", configs.etcd_argv(b, lay))
        self._wait(etcd, lambda: hostnet.in_netns(net.netns, _etcd_healthy), deadline, "etcd /health")
        api = launch("kube-apiserver", configs.apiserver_argv(b, lay, net))
        self._wait(api, self.apiserver_ready, deadline, "kube-apiserver /readyz")
        kcm = launch("kube-controller-manager", configs.controller_manager_argv(b, lay, net))
        sched = launch("kube-scheduler", configs.scheduler_argv(b, lay, net))
        env = {**os.environ, "PATH": f"{b.containerd.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        ctd = launch("containerd", [str(b.containerd), f"--config={lay.containerd_config}"], env=env)
        self._wait(kcm, lambda: self._ok(configs.KCM_PORT, "/healthz", verify=False), deadline,
                   "kube-controller-manager /healthz")
        self._wait(sched, lambda: self._ok(configs.SCHEDULER_PORT, "/healthz", verify=False), deadline,
                   "kube-scheduler /healthz")
        self._wait(ctd, self.runtime(bins).ready, deadline, "containerd socket")
        self._import_pause(bins)
        kubelet = launch("kubelet", configs.kubelet_argv(b.kubelet, lay, net))
        self._wait(kubelet, self.node_ready, deadline, f"node {NODE_NAME} Ready (taint lifted)")
        proxy = launch("kube-proxy", configs.kube_proxy_argv(b.kube_proxy, lay))
        self._wait(proxy, lambda: _http_ok(net.node_ip, configs.KUBE_PROXY_HEALTHZ_PORT, "/healthz"), deadline,
                   "kube-proxy /healthz")

    def _write_kubeconfigs(self, p: pki.Pki, net: hostnet.plan.ClusterNet) -> None:
        server = f"https://{net.node_ip}:{configs.APISERVER_PORT}"
        for stem, (who, user) in KUBECONFIGS.items():
            doc = pki.kubeconfig(server, p.ca_crt, p.client_crt(who), p.client_key(who), user, f"sipfleet-{self.name}")
            path = self.layout.component_kubeconfig(stem) if stem else self.layout.kubeconfig
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)

    def _write_node_configs(self, b: Binaries, net: hostnet.plan.ClusterNet) -> None:
        lay = self.layout
        for d in lay.node_dirs():
            d.mkdir(parents=True, exist_ok=True)
        lay.kubelet_config.write_text(configs.kubelet_config(lay, net, self.name))
        lay.kube_proxy_config.write_text(configs.kube_proxy_config(lay, net))
        lay.containerd_config.write_text(configs.containerd_toml(b, lay))
        (lay.cni_conf_dir / "10-sipfleet.conflist").write_text(configs.cni_conflist(lay, net))
        lay.resolv_conf.write_text("")

    def _import_pause(self, bins: dict[str, Path]) -> None:
        from ..pauseimage import write_oci_archive

        archive = self.layout.images_dir / "pause.tar"
        if not archive.exists():
            write_oci_archive(bins["pause"], archive, configs.PAUSE_IMAGE)
        self.runtime(bins).import_image(archive)

    def _wait(self, rec: procs.ProcRecord, ready, deadline: float, what: str) -> None:
        while True:
            try:
                if ready():
                    return
            except (OSError, hostnet.HostNetError):
                pass
            if not procs.is_alive(rec):
                popen = self._popen.get(rec.pid)
                code = popen.poll() if popen else None
                raise ClusterError(f"{rec.name} exited{f' with code {code}' if code is not None else ''} before "
                                   f"{what}; last lines of {rec.log}:\n{tail(Path(rec.log or ''))}")
            if time.monotonic() > deadline:
                raise ClusterError(f"timed out waiting for {what} (cluster {self.name!r}); last lines of {rec.log}:\n"
                                   f"{tail(Path(rec.log or ''))}")
            time.sleep(0.2)

    # -------------------------------------------------------------------------------------------------- down
    def down(self, *, purge: bool = False, grace: float = 10.0) -> list[str]:
        """Stop everything this cluster started and undo its host changes. Keeps logs (and, unless ``purge``,
        etcd data, PKI and imported images). Returns the problems (names SIGKILLed, what could not be removed)."""
        if not self.dir.exists():
            return []
        with _flock(self.layout.lock_file):
            return self._down_locked(purge=purge, grace=grace)

    def _down_locked(self, *, purge: bool, grace: float = 10.0) -> list[str]:
        recs = self.records()
        problems: list[str] = []
        for stage in STOP_STAGES:
            if stage == "pods":
                problems += self._stop_pods(recs, grace)
            else:
                problems += [f"{n} needed SIGKILL" for n in procs.stop([r for r in recs if r.name in stage], grace)]
        problems += [f"{n} needed SIGKILL" for n in procs.stop([r for r in recs if r.name not in COMPONENTS], grace)]
        self.layout.pids_file.unlink(missing_ok=True)
        problems += hostside.unmount_under(self.dir)
        record = hostside.HostRecord.load(self.layout.host_file)
        problems += hostside.remove_cgroups(record)
        record.save(self.layout.host_file)
        problems += network.teardown(self._owned())
        problems += hostside.release_shared(self.netns, self.layout.pod_logs_dir)
        if purge:
            for d in (self.layout.etcd_dir, self.layout.pki_dir, self.layout.containerd_dir, self.layout.kubelet_dir,
                      self.layout.pod_logs_dir, self.layout.images_dir, self.dir / "cni", self.layout.node_config_dir):
                shutil.rmtree(d, ignore_errors=True)
            for f in self.dir.glob("kubeconfig*"):
                f.unlink(missing_ok=True)
            self.layout.config_file.unlink(missing_ok=True)
        return problems

    def _stop_pods(self, recs: list[procs.ProcRecord], grace: float) -> list[str]:
        """With the kubelet gone: remove every pod through the CRI (containers, mounts, pod networks), then
        SIGKILL whatever is still in the cluster's cgroups (by PID: they can only be its pods)."""
        problems = []
        ctd = next((r for r in recs if r.name == "containerd"), None)
        if ctd is not None and procs.is_alive(ctd):
            try:
                self.runtime().remove_all_pods()
            except (ContainerRuntimeError, kubebin.KubebinError, OSError, subprocess.TimeoutExpired) as e:
                problems.append(f"removing pods through the CRI: {e}")
        record = hostside.HostRecord.load(self.layout.host_file)
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

    # -------------------------------------------------------------------------------------------------- clients
    def runtime(self, bins: dict[str, Path] | None = None) -> Runtime:
        bins = bins or kubebin.ensure(["ctr", "crictl"])
        return Runtime(ctr=bins["ctr"], crictl=bins["crictl"], layout=self.layout)

    def load_images(self, archives: Sequence[Path]) -> list[str]:
        """Import OCI archives into the node's containerd (unchanged ones are skipped); returns the imported."""
        rt = self.runtime()
        return [str(a) for a in archives if rt.import_image(Path(a))]

    def api_client(self):
        """A ``kubernetes.client.ApiClient`` for the admin kubeconfig (close it when done)."""
        from kubernetes import config

        if not self.kubeconfig.exists():
            raise ClusterError(f"cluster {self.name!r} has no kubeconfig yet: run `sipfleet cluster up`")
        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def kubectl_path(self) -> Path:
        return kubebin.ensure(["kubectl"])["kubectl"]

    def kubectl(self, *args: str, check: bool = True, capture: bool = True, input: str | None = None,
                timeout: float = 120) -> subprocess.CompletedProcess:
        """Run kubectl with the admin kubeconfig."""
        cmd = [str(self.kubectl_path()), f"--kubeconfig={self.kubeconfig}", *args]
        res = subprocess.run(cmd, capture_output=capture, text=True, input=input, timeout=timeout)
        if check and res.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed ({res.returncode}): {(res.stderr or '').strip()}")
        return res

    def container_pid(self, namespace: str, pod: str, container: str | None = None) -> int:
        return self.runtime().container_pid(namespace, pod, container)

    def pod_netns(self, namespace: str, pod: str) -> str:
        return self.runtime().pod_netns(namespace, pod)

    def container_log(self, pod: str, namespace: str = "default", container: str | None = None,
                      previous: bool = False) -> Path:
        """The file the kubelet writes a container's log to (``previous``: the run before the last restart)."""
        from kubernetes import client

        api = self.api_client()
        try:
            p = client.CoreV1Api(api).read_namespaced_pod(pod, namespace)
        finally:
            api.close()
        container = container or p.spec.containers[0].name
        st = next((s for s in p.status.container_statuses or [] if s.name == container), None)
        restarts = st.restart_count if st else 0
        if previous and restarts == 0:
            raise ClusterError(f"{namespace}/{pod} container {container} has not restarted: no previous log")
        return container_log_path(self.layout, namespace, pod, p.metadata.uid, container,
                                  restarts - 1 if previous else restarts)

    # -------------------------------------------------------------------------------------------------- status
    def status(self) -> dict[str, Any]:
        recs = {r.name: r for r in self.records()}
        comps = []
        for name in COMPONENTS:
            r = recs.get(name)
            alive = bool(r and procs.is_alive(r))
            comps.append({"name": name, "pid": r.pid if r else None, "alive": alive,
                          "rssKiB": procs.rss_kib(r.pid) if alive and r else None, "log": str(self.log_file(name))})
        ready = self.apiserver_ready() if recs else False
        net = self.net
        return {
            "name": self.name,
            "stateDir": str(self.dir),
            "running": bool(recs) and all(c["alive"] for c in comps if c["pid"]) and ready,
            "apiserverReady": ready,
            "server": self.server,
            "netns": self.netns,
            "nodeIP": self.node_ip,
            "podRange": f"{net.pod_range_start}-{net.pod_range_end}" if net else None,
            "serviceCIDR": net.service_cidr if net else None,
            "kubeconfig": str(self.kubeconfig),
            "components": comps,
            "nodes": self.nodes() if ready else [],
        }


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


def get(name: str = "default") -> LocalCluster:
    return LocalCluster(name)


def wait_api(cluster: LocalCluster, timeout: float = 60) -> None:
    from ..waiting import wait_for

    wait_for(cluster.apiserver_ready, timeout=timeout, interval=0.5, message=f"cluster {cluster.name} API ready")


def run_kubectl(name: str, args: Sequence[str]) -> int:
    c = LocalCluster(name)
    return subprocess.call([str(c.kubectl_path()), f"--kubeconfig={c.kubeconfig}", *args])
