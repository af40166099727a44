"""The node runner: registers a Node, watches the Pods bound to it and runs them (see docs/node-runner.md)."""

from __future__ import annotations

import argparse
import calendar
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .logserver import LogServer
from .kube import Kube, KubeError, kubeconfig_server, now_time
from . import log_path
from .logic import DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_CAP, IPAllocator
from .node import NodeHeartbeat, node_capacity, parse_taint
from .process import PidRegistry, stop_recorded
from .worker import PodWorker

log = logging.getLogger("sipfleet.noderunner")

WATCH_TIMEOUT = 240


class NodeRunner:
    def __init__(
        self,
        kubeconfig: str,
        node_name: str,
        state_dir: Path,
        pod_subnet: str,
        *,
        backoff_base: float = DEFAULT_BACKOFF_BASE,
        backoff_cap: float = DEFAULT_BACKOFF_CAP,
        shutdown_grace: float = 5.0,
        taints: list[dict] | None = None,
        cpu: str = "2",
        max_pods: int = 110,
    ):
        self.kube = Kube(kubeconfig)
        self.node_name = node_name
        self.state_dir = state_dir
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.ipam = IPAllocator(pod_subnet)
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.shutdown_grace = shutdown_grace
        self.host_ip = "127.0.0.1"
        self.node_capacity = node_capacity(state_dir, cpu, max_pods)
        host, port, ca = kubeconfig_server(kubeconfig)
        self._ca = ca
        self.api_host = "127.0.0.1" if host in ("localhost", "127.0.0.1", "::1") else host
        self.api_port = port
        self.service_env = {
            "KUBERNETES_SERVICE_HOST": self.api_host,
            "KUBERNETES_SERVICE_PORT": str(port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(port),
            "KUBERNETES_PORT": f"tcp://{self.api_host}:{port}",
            f"KUBERNETES_PORT_{port}_TCP": f"tcp://{self.api_host}:{port}",
            f"KUBERNETES_PORT_{port}_TCP_PROTO": "tcp",
            f"KUBERNETES_PORT_{port}_TCP_PORT": str(port),
            f"KUBERNETES_PORT_{port}_TCP_ADDR": self.api_host,
        }
        self.pids = PidRegistry(state_dir)
        self.stop = threading.Event()
        self.workers: dict[str, PodWorker] = {}
        self._finished: dict[str, float] = {}
        self._lock = threading.Lock()
        self.log_server: LogServer | None = None
        try:
            self.log_server = LogServer(
                state_dir,
                lambda ns, pod, c, prev: log_path(state_dir, ns, pod, c, previous=prev),
                self.container_running,
            )
        except Exception as e:  # noqa: BLE001 - kubectl logs is a convenience; run without it
            log.warning("no log endpoint (kubectl logs will not work): %s", e)
        self.heartbeat = NodeHeartbeat(self.kube, node_name, self.node_capacity, self.host_ip, self.stop,
                                      taints, self.log_server.port if self.log_server else 0)

    # ------------------------------------------------------------------ API helpers used by workers/volumes

    def get_secret(self, namespace: str, name: str) -> dict | None:
        return self.kube.get(f"/api/v1/namespaces/{namespace}/secrets/{name}")

    def get_configmap(self, namespace: str, name: str) -> dict | None:
        return self.kube.get(f"/api/v1/namespaces/{namespace}/configmaps/{name}")

    def cluster_ca(self) -> bytes | None:
        return self._ca

    def request_token(
        self, namespace: str, sa: str, audiences: list[str], expiration: int, pod_name: str, pod_uid: str
    ) -> tuple[str, float]:
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": audiences,
                "expirationSeconds": max(600, int(expiration)),
                "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": pod_name, "uid": pod_uid},
            },
        }
        tr = self.kube.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{sa}/token", body=body)
        token = tr["status"]["token"]
        try:
            expiry = calendar.timegm(time.strptime(tr["status"]["expirationTimestamp"], "%Y-%m-%dT%H:%M:%SZ"))
        except (KeyError, ValueError):
            expiry = time.time() + expiration
        return token, float(expiry)

    def event(self, pod: dict, typ: str, reason: str, message: str, field_path: str | None = None) -> None:
        """Record a core/v1 Event about a pod, as the kubelet does (best effort: failures are only logged)."""
        meta = pod["metadata"]
        now = now_time()
        ref = {"kind": "Pod", "apiVersion": "v1", "namespace": meta["namespace"], "name": meta["name"],
               "uid": meta["uid"], "resourceVersion": meta.get("resourceVersion")}
        if field_path:
            ref["fieldPath"] = field_path
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{time.time_ns():x}", "namespace": meta["namespace"]},
            "involvedObject": ref, "reason": reason, "message": message[:1000], "type": typ,
            "source": {"component": "kubelet", "host": self.node_name},
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
            "reportingComponent": "kubelet", "reportingInstance": self.node_name,
        }
        try:
            self.kube.request("POST", f"/api/v1/namespaces/{meta['namespace']}/events", body=body, timeout=10)
        except Exception as e:  # noqa: BLE001
            log.debug("event %s for %s/%s not recorded: %s", reason, meta["namespace"], meta["name"], e)

    def container_running(self, namespace: str, pod: str, container: str) -> bool:
        with self._lock:
            workers = list(self.workers.values())
        for w in workers:
            if w.namespace == namespace and w.pod_name == pod:
                if any(c.name == container and c.running for c in w.containers + w.init_containers):
                    return True
        return False

    def forget(self, uid: str) -> None:
        with self._lock:
            self.workers.pop(uid, None)
            # late events for a pod we already tore down (MODIFIED before DELETED) must not revive it
            self._finished[uid] = time.monotonic()
            if len(self._finished) > 1000:
                cutoff = time.monotonic() - 600
                self._finished = {u: t for u, t in self._finished.items() if t > cutoff}

    # ------------------------------------------------------------------ pods

    def _on_pod(self, pod: dict) -> None:
        uid = pod["metadata"]["uid"]
        with self._lock:
            w = self.workers.get(uid)
            if w is None:
                if self.stop.is_set() or uid in self._finished:
                    return
                w = PodWorker(self, pod)
                self.workers[uid] = w
                w.start()
                log.info("pod %s/%s (%s) assigned", pod["metadata"]["namespace"], pod["metadata"]["name"], uid)
            else:
                w.update(pod)

    def _on_pod_deleted(self, pod: dict) -> None:
        with self._lock:
            w = self.workers.get(pod["metadata"]["uid"])
        if w is not None:
            w.mark_gone()

    def _watch_pods(self) -> None:
        path = "/api/v1/pods"
        query = {"fieldSelector": f"spec.nodeName={self.node_name}"}
        rv: str | None = None
        delay = 1.0
        while not self.stop.is_set():
            try:
                if rv is None:
                    lst = self.kube.request("GET", path, query=query, timeout=60)
                    rv = lst["metadata"]["resourceVersion"]
                    seen = set()
                    for pod in lst.get("items") or []:
                        seen.add(pod["metadata"]["uid"])
                        self._on_pod(pod)
                    with self._lock:
                        stale = [w for uid, w in self.workers.items() if uid not in seen]
                    for w in stale:
                        w.mark_gone()
                for ev in self.kube.watch(path, dict(query, resourceVersion=rv), WATCH_TIMEOUT):
                    typ = ev.get("type")
                    obj = ev.get("object") or {}
                    if typ == "ERROR":
                        code = obj.get("code")
                        log.info("pod watch ended: %s %s", code, obj.get("message"))
                        if code == 410:
                            rv = None
                        break
                    new_rv = (obj.get("metadata") or {}).get("resourceVersion")
                    if new_rv:
                        rv = new_rv
                    if typ in ("ADDED", "MODIFIED"):
                        self._on_pod(obj)
                    elif typ == "DELETED":
                        self._on_pod_deleted(obj)
                    if self.stop.is_set():
                        return
                delay = 1.0
            except KubeError as e:
                if e.status == 410:
                    rv = None
                    continue
                log.warning("pod watch: %s", e)
                self.stop.wait(delay)
                delay = min(delay * 2, 30)
                rv = None
            except Exception as e:  # noqa: BLE001 - connection errors, timeouts: re-list and go on
                if self.stop.is_set():
                    return
                log.warning("pod watch: %s: %s", type(e).__name__, e)
                self.stop.wait(delay)
                delay = min(delay * 2, 30)
                rv = None

    # ------------------------------------------------------------------ lifecycle

    def clean_previous(self) -> None:
        """Stop container processes a previous runner left behind (it died without stopping them); their
        pods are started afresh by their workers (restartCount goes up) or reported as failed."""
        prev = [p for p in self.pids.previous() if p.get("pid") != os.getpid()]
        if prev:
            n = stop_recorded(prev, grace=5)
            if n:
                log.info("stopped %d container process(es) left by a previous node runner", n)
        self.pids.save()

    def run(self) -> int:
        self.clean_previous()
        if self.log_server:
            self.log_server.start()
        self.heartbeat.start()
        watcher = threading.Thread(target=self._watch_pods, name="pod-watch", daemon=True)
        # pods are only started once the node is registered (the scheduler needs it anyway)
        while not self.stop.is_set() and not self.heartbeat.registered.wait(0.5):
            pass
        if not self.stop.is_set():
            watcher.start()
            log.info("node runner for node %s running (state %s, pod subnet %s)", self.node_name,
                     self.state_dir, self.ipam.network)
        self.stop.wait()
        self.shutdown()
        return 0

    def shutdown(self) -> None:
        log.info("node runner stopping: stopping all pods' processes")
        with self._lock:
            workers = list(self.workers.values())
        for w in workers:
            w.shutdown()
        deadline = time.monotonic() + self.shutdown_grace + 15
        for w in workers:
            w.join(max(0.1, deadline - time.monotonic()))
        # whatever is still recorded (a worker stuck somewhere): stop by PID
        left = self.pids.previous()
        if left:
            stop_recorded(left, grace=1)
        self.pids.save()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sipfleet.localenv.noderunner", description=__doc__)
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--node-name", required=True)
    p.add_argument("--state-dir", required=True, type=Path)
    p.add_argument("--pod-subnet", required=True, help="e.g. 127.0.101 (a /24), 127.5 (a /16) or a CIDR")
    p.add_argument("--backoff-base", type=float, default=DEFAULT_BACKOFF_BASE,
                   help="container restart back-off start in seconds (Kubernetes: 10)")
    p.add_argument("--backoff-cap", type=float, default=DEFAULT_BACKOFF_CAP,
                   help="container restart back-off cap in seconds (Kubernetes: 300)")
    p.add_argument("--shutdown-grace", type=float, default=5.0,
                   help="seconds the runner's processes get after SIGTERM when the runner itself stops")
    p.add_argument("--register-with-taints", action="append", default=[], metavar="KEY[=VALUE]:EFFECT",
                   help="taint the Node when it is created (repeatable), as the kubelet's flag")
    p.add_argument("--cpu", default="2", help="the Node's cpu capacity/allocatable (default 2)")
    p.add_argument("--max-pods", type=int, default=110, help="the Node's pods capacity (default 110)")
    p.add_argument("--log-level", default=os.environ.get("SIPFLEET_NODERUNNER_LOG", "INFO"))
    args = p.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    runner = NodeRunner(
        args.kubeconfig, args.node_name, args.state_dir.resolve(), args.pod_subnet,
        backoff_base=args.backoff_base, backoff_cap=args.backoff_cap, shutdown_grace=args.shutdown_grace,
        taints=[parse_taint(t) for t in args.register_with_taints], cpu=args.cpu, max_pods=args.max_pods,
    )

    def on_signal(signum: int, frame: Any) -> None:
        log.info("received signal %d", signum)
        runner.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return runner.run()
