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

from .. import hostnet, kubebin, pki, procs
from . import configs, lifecycle
from .configs import NODE_NAME
from .errors import ClusterError
from .lifecycle import COMPONENTS
from .layout import Layout
from .runtime import ContainerRuntimeError, Runtime, container_log_path

__all__ = ["LocalCluster", "ClusterError", "ContainerRuntimeError", "NODE_NAME", "state_root", "get", "wait_api",
           "run_kubectl"]


def state_root() -> Path:
    env = os.environ.get("SIPFLEET_STATE")
    return Path(env).expanduser() if env else Path.home() / ".local" / "state" / "sipfleet"


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
                lifecycle.down_locked(self, purge=False)
            if fresh:
                shutil.rmtree(self.layout.etcd_dir, ignore_errors=True)
            started: list[procs.ProcRecord] = []
            try:
                lifecycle.start_all(self, started, deadline=time.monotonic() + timeout)
            except BaseException:
                lifecycle.down_locked(self, purge=False)  # Ctrl-C or a failure: undo everything, keep the logs
                raise
        return self

    def down(self, *, purge: bool = False, grace: float = 10.0) -> list[str]:
        """Stop everything this cluster started and undo its host changes. Keeps logs (and, unless ``purge``,
        etcd data, PKI and imported images). Returns the problems (names SIGKILLed, what could not be removed)."""
        if not self.dir.exists():
            return []
        with _flock(self.layout.lock_file):
            return lifecycle.down_locked(self, purge=purge, grace=grace)

    def restart_component(self, name: str, *, down_s: float = 0.0, kill: bool = False,
                          timeout: float = 120.0) -> float:
        """Stop one component (SIGTERM, or SIGKILL with ``kill``), keep it down ``down_s`` seconds, start it again
        and wait until it serves; the seconds from the stop to ready (lifecycle.restart)."""
        with _flock(self.layout.lock_file):
            return lifecycle.restart(self, name, down_s=down_s, kill=kill, timeout=timeout)

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


def get(name: str = "default") -> LocalCluster:
    return LocalCluster(name)


def wait_api(cluster: LocalCluster, timeout: float = 60) -> None:
    from ..waiting import wait_for

    wait_for(cluster.apiserver_ready, timeout=timeout, interval=0.5, message=f"cluster {cluster.name} API ready")


def run_kubectl(name: str, args: Sequence[str]) -> int:
    c = LocalCluster(name)
    return subprocess.call([str(c.kubectl_path()), f"--kubeconfig={c.kubeconfig}", *args])
