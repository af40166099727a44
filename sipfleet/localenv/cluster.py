"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
and sipfleet's node runner (a node that runs Pods as local processes).

``LocalCluster(name)`` keeps its state in ``$SIPFLEET_STATE/clusters/<name>/`` (default
``~/.local/state/sipfleet``), or in ``state_dir`` when given:

=====================  ==========================================================================
``pki/``               throwaway CA, serving and client certificates, service-account key pair
``kubeconfig``         admin kubeconfig (O=system:masters), server ``https://127.0.0.1:<port>``
``kubeconfig-*``       per-component kubeconfigs (own client certificates)
``cluster.json``       ports and pod subnet (kept across restarts when still free)
``pids.json``          the running processes (PID + start time); removed by ``down()``
``logs/``              ``<component>.log``; kept by ``down()``
``etcd/``              etcd data (kept by ``down()``; ``up(fresh=True)`` / ``down(purge=True)`` drop it)
``pods/``              the node runner's state (pod processes, container logs)
=====================  ==========================================================================

Everything binds to 127.0.0.1. The node runner gets pod addresses under ``127.<X>.0.0/16`` with ``X`` in
100..199, chosen so that no two running clusters on the machine share it.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import importlib
import importlib.util
import inspect
import json
import os
import random
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import yaml

from . import kubebin, pki, procs

NODE_NAME = "sipfleet-node-0"
SERVICE_CIDR = "10.0.0.0/24"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
POD_SUBNET_RANGE = range(100, 200)
PORT_RANGE = (20000, 32000)  # below Linux's ephemeral range, so outgoing connections never take them
NODERUNNER_MODULE = "sipfleet.localenv.noderunner"

#: controllers we need (and none that expect a kubelet heartbeat, such as node-lifecycle / taint-eviction)
CONTROLLERS = [
    "garbage-collector-controller",
    "deployment-controller",
    "replicaset-controller",
    "statefulset-controller",
    "daemonset-controller",
    "job-controller",
    "cronjob-controller",
    "ttl-after-finished-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "namespace-controller",
    "root-ca-certificate-publisher-controller",
    "clusterrole-aggregation-controller",
    "endpoints-controller",
    "endpointslice-controller",
    "pod-garbage-collector-controller",
    "resourcequota-controller",
    "disruption-controller",
]

#: start order; down() stops in reverse
COMPONENTS = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "noderunner"]


class ClusterError(RuntimeError):
    """The cluster could not be started/used; the message is meant for humans (includes log tails)."""


def state_root() -> Path:
    env = os.environ.get("SIPFLEET_STATE")
    return Path(env).expanduser() if env else Path.home() / ".local" / "state" / "sipfleet"


def noderunner_available() -> bool:
    """True once the node runner (``python -m sipfleet.localenv.noderunner``) exists."""
    try:
        spec = importlib.util.find_spec(NODERUNNER_MODULE)
        if spec is None:
            return False
        if spec.submodule_search_locations is None:  # a plain module
            return spec.origin is not None
        return importlib.util.find_spec(NODERUNNER_MODULE + ".__main__") is not None
    except (ImportError, ValueError):
        return False


def tail(path: Path, lines: int = 20) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 16384))
            data = f.read().decode(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(data.splitlines()[-lines:])


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Go servers do: TIME_WAIT is no conflict
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def pick_ports(n: int, avoid: set[int] | None = None, rng: random.Random | None = None) -> list[int]:
    rng = rng or random.Random()
    avoid = set(avoid or ())
    out: list[int] = []
    for _ in range(5000):
        p = rng.randrange(*PORT_RANGE)
        if p in avoid or p in out:
            continue
        if port_free(p):
            out.append(p)
            if len(out) == n:
                return out
    raise ClusterError("no free loopback TCP ports found")


def subnets_in_use() -> set[int]:
    """Pod subnets (the X of 127.X) of node runners running anywhere on this machine."""
    used: set[int] = set()
    for pid in procs.all_pids():
        args = procs.cmdline(pid)
        if not any("noderunner" in a for a in args):
            continue
        for i, a in enumerate(args):
            value = None
            if a == "--pod-subnet" and i + 1 < len(args):
                value = args[i + 1]
            elif a.startswith("--pod-subnet="):
                value = a.split("=", 1)[1]
            if value:
                m = re.match(r"127\.(\d+)", value)
                if m:
                    used.add(int(m.group(1)))
    return used


def choose_subnet(used: set[int], preferred: int | None = None) -> int:
    if preferred in POD_SUBNET_RANGE and preferred not in used:
        return preferred
    for x in POD_SUBNET_RANGE:
        if x not in used:
            return x
    raise ClusterError("all pod subnets 127.100-127.199 are used by running clusters")


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


@dataclass
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class LocalCluster:
    def __init__(self, name: str = "default", state_dir: str | Path | None = None, *, die_with_parent: bool = False):
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise ClusterError(f"invalid cluster name {name!r}")
        self.name = name
        self.dir = Path(state_dir) if state_dir else state_root() / "clusters" / name
        self.die_with_parent = die_with_parent
        self._popen: dict[int, subprocess.Popen] = {}

    # -------------------------------------------------------------------------------------------------- paths
    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def pki(self) -> pki.Pki:
        return pki.Pki(self.dir / "pki")

    @property
    def logs_dir(self) -> Path:
        return self.dir / "logs"

    @property
    def pods_dir(self) -> Path:
        return self.dir / "pods"

    @property
    def pids_file(self) -> Path:
        return self.dir / "pids.json"

    @property
    def config_file(self) -> Path:
        return self.dir / "cluster.json"

    def log_file(self, component: str) -> Path:
        return self.logs_dir / f"{component}.log"

    # -------------------------------------------------------------------------------------------------- state
    def config(self) -> dict[str, Any]:
        try:
            return json.loads(self.config_file.read_text())
        except (OSError, ValueError):
            return {}

    def records(self) -> list[procs.ProcRecord]:
        try:
            data = json.loads(self.pids_file.read_text())
        except (OSError, ValueError):
            return []
        return [procs.ProcRecord.from_json(r) for r in data.get("processes", [])]

    def _write_records(self, records: list[procs.ProcRecord]) -> None:
        procs.write_json_atomic(
            self.pids_file, {"cluster": self.name, "processes": [r.to_json() for r in records]}
        )

    @property
    def server(self) -> str | None:
        port = self.config().get("ports", {}).get("apiserver")
        return f"https://127.0.0.1:{port}" if port else None

    @property
    def pod_subnet(self) -> str | None:
        x = self.config().get("podSubnet")
        return f"127.{x}" if x else None

    # -------------------------------------------------------------------------------------------------- health
    def _ssl_context(self, verify: bool = True) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_crt)) if verify else ssl._create_unverified_context()
        ctx.load_cert_chain(str(self.pki.client_crt("admin")), str(self.pki.client_key("admin")))
        return ctx

    def _https_get(self, port: int, path: str, verify: bool = True, timeout: float = 5.0) -> tuple[int, str]:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=self._ssl_context(verify))
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read().decode(errors="replace")
        finally:
            conn.close()

    def apiserver_ready(self) -> bool:
        port = self.config().get("ports", {}).get("apiserver")
        if not port or not self.pki.complete():
            return False
        try:
            status, _ = self._https_get(port, "/readyz", timeout=3)
        except (OSError, ssl.SSLError, http.client.HTTPException):
            return False
        return status == 200

    def running(self) -> bool:
        """True when every recorded process is alive and the API server is ready."""
        recs = self.records()
        return bool(recs) and all(procs.is_alive(r) for r in recs) and self.apiserver_ready()

    # -------------------------------------------------------------------------------------------------- up
    def up(self, *, fresh: bool = False, timeout: float = 180.0, node: bool | None = None) -> "LocalCluster":
        """Start the cluster (idempotent) and wait until it is ready. ``fresh`` drops etcd data first."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with _flock(self.dir / ".lock"):
            if self.running() and not fresh:
                return self
            if self.records():  # partly running or stale: start over cleanly
                self._down_locked(purge=False)
            if fresh:
                shutil.rmtree(self.dir / "etcd", ignore_errors=True)
                shutil.rmtree(self.pods_dir, ignore_errors=True)
            for attempt in (1, 2):
                started: list[procs.ProcRecord] = []
                try:
                    self._start_all(started, timeout=timeout, node=node)
                    break
                except BaseException as exc:
                    # Ctrl-C or a failure: stop what we started, keep the logs for diagnosis.
                    self._stop_staged(started, grace=5)
                    self.pids_file.unlink(missing_ok=True)
                    if attempt == 1 and isinstance(exc, ClusterError) and "address already in use" in str(exc):
                        # a port we checked was taken by someone else meanwhile: pick new ones, once
                        cfg = self.config()
                        cfg.pop("ports", None)
                        procs.write_json_atomic(self.config_file, cfg)
                        continue
                    raise
        return self

    def _start_all(self, started: list[procs.ProcRecord], *, timeout: float, node: bool | None) -> None:
        t0 = time.monotonic()
        deadline = t0 + timeout
        bins = kubebin.ensure(kubebin.CONTROL_PLANE)
        p = pki.ensure(self.dir / "pki")
        # Machine-wide: one cluster at a time goes from choosing free ports to having bound them.
        with _flock(Path(tempfile.gettempdir()) / "sipfleet-cluster-ports.lock"):
            self._start_control_plane(started, bins, p, deadline)
        self._start_node(started, deadline, node)

    def _start_control_plane(self, started: list[procs.ProcRecord], bins: dict[str, Path], p: pki.Pki,
                             deadline: float) -> None:
        ports = self._choose_ports()
        cfg = self.config()
        cfg.update({"name": self.name, "ports": ports.as_dict(), "server": f"https://127.0.0.1:{ports.apiserver}"})
        procs.write_json_atomic(self.config_file, cfg)
        self._write_kubeconfigs(p, ports)
        self.logs_dir.mkdir(parents=True, exist_ok=True)

        def launch(name: str, cmd: list[str]) -> procs.ProcRecord:
            return self._launch(started, name, cmd)

        # etcd
        etcd = launch("etcd", [
            str(bins["etcd"]),
            "--name", "sipfleet",
            "--data-dir", str(self.dir / "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{ports.etcd_client}",
            "--advertise-client-urls", f"http://127.0.0.1:{ports.etcd_client}",
            "--listen-peer-urls", f"http://127.0.0.1:{ports.etcd_peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{ports.etcd_peer}",
            "--initial-cluster", f"sipfleet=http://127.0.0.1:{ports.etcd_peer}",
            "--unsafe-no-fsync=true",
            "--quota-backend-bytes", str(2 * 1024**3),
            "--log-level", "warn",
        ])
        self._wait(etcd, lambda: self._http_ok(ports.etcd_client, "/health"), deadline, "etcd /health")

        # kube-apiserver
        api = launch("kube-apiserver", [
            str(bins["kube-apiserver"]),
            f"--etcd-servers=http://127.0.0.1:{ports.etcd_client}",
            f"--secure-port={ports.apiserver}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--cert-dir={self.dir / 'pki' / 'apiserver-generated'}",
            f"--tls-cert-file={p.serving_crt}",
            f"--tls-private-key-file={p.serving_key}",
            f"--client-ca-file={p.ca_crt}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
            "--authorization-mode=Node,RBAC",
            f"--service-account-issuer={SA_ISSUER}",
            f"--service-account-key-file={p.sa_pub}",
            f"--service-account-signing-key-file={p.sa_key}",
            "--endpoint-reconciler-type=none",
            "--profiling=false",
            "--event-ttl=1h",
            "--v=1",
        ])
        self._wait(api, self.apiserver_ready, deadline, "kube-apiserver /readyz")

        # controller-manager and scheduler
        kcm_kc = self.dir / "kubeconfig-controller-manager"
        kcm = launch("kube-controller-manager", [
            str(bins["kube-controller-manager"]),
            f"--kubeconfig={kcm_kc}",
            f"--authentication-kubeconfig={kcm_kc}",
            f"--authorization-kubeconfig={kcm_kc}",
            "--authentication-skip-lookup=true",  # no front-proxy CA to look up
            f"--client-ca-file={p.ca_crt}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports.controller_manager}",
            f"--cert-dir={self.dir / 'pki' / 'controller-manager-generated'}",
            f"--service-account-private-key-file={p.sa_key}",
            f"--root-ca-file={p.ca_crt}",
            "--use-service-account-credentials=true",
            f"--controllers={','.join(CONTROLLERS)}",
            "--leader-elect=false",
            "--v=1",
        ])
        sched_kc = self.dir / "kubeconfig-scheduler"
        sched = launch("kube-scheduler", [
            str(bins["kube-scheduler"]),
            f"--kubeconfig={sched_kc}",
            f"--authentication-kubeconfig={sched_kc}",
            f"--authorization-kubeconfig={sched_kc}",
            "--authentication-skip-lookup=true",
            f"--client-ca-file={p.ca_crt}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports.scheduler}",
            f"--cert-dir={self.dir / 'pki' / 'scheduler-generated'}",
            "--leader-elect=false",
            "--v=1",
        ])
        self._wait(kcm, lambda: self._https_ok(ports.controller_manager, "/healthz"), deadline,
                   "kube-controller-manager /healthz")
        self._wait(sched, lambda: self._https_ok(ports.scheduler, "/healthz"), deadline, "kube-scheduler /healthz")

    def _launch(self, started: list[procs.ProcRecord], name: str, cmd: list[str]) -> procs.ProcRecord:
        rec, popen = procs.start(name, cmd, self.log_file(name), die_with_parent=self.die_with_parent)
        self._popen[rec.pid] = popen
        started.append(rec)
        self._write_records(started)
        return rec

    def _start_node(self, started: list[procs.ProcRecord], deadline: float, node: bool | None) -> None:
        cfg = self.config()
        if node is None:
            node = noderunner_available()
        if node:
            # The node authenticates as system:node:<name> (O=system:nodes): the Node authorizer gives it what a
            # kubelet gets (its own Node and Lease, pods bound to it, and only the Secrets/ConfigMaps/tokens
            # those pods reference). No extra RBAC.
            self.pods_dir.mkdir(parents=True, exist_ok=True)
            lock = Path(tempfile.gettempdir()) / "sipfleet-pod-subnets.lock"
            with _flock(lock):
                x = choose_subnet(subnets_in_use(), preferred=cfg.get("podSubnet"))
                cfg["podSubnet"] = x
                procs.write_json_atomic(self.config_file, cfg)
                runner = self._launch(started, "noderunner", [
                    sys.executable, "-m", NODERUNNER_MODULE,
                    "--kubeconfig", str(self.dir / "kubeconfig-node"),
                    "--node-name", NODE_NAME,
                    "--state-dir", str(self.pods_dir),
                    "--pod-subnet", f"127.{x}",
                ])
            self._wait(runner, self.node_ready, deadline, f"node {NODE_NAME} Ready")

    def _choose_ports(self) -> Ports:
        old = self.config().get("ports") or {}
        fields = list(Ports.__dataclass_fields__)
        if old and all(isinstance(old.get(f), int) for f in fields) and all(port_free(old[f]) for f in fields):
            return Ports(**{f: old[f] for f in fields})
        return Ports(*pick_ports(len(fields)))

    def _write_kubeconfigs(self, p: pki.Pki, ports: Ports) -> None:
        server = f"https://127.0.0.1:{ports.apiserver}"
        for fname, who, user in [
            ("kubeconfig", "admin", "sipfleet-admin"),
            ("kubeconfig-controller-manager", "controller-manager", "system:kube-controller-manager"),
            ("kubeconfig-scheduler", "scheduler", "system:kube-scheduler"),
            ("kubeconfig-node", "node", f"system:node:{NODE_NAME}"),
        ]:
            doc = pki.kubeconfig(server, p.ca_crt, p.client_crt(who), p.client_key(who), user,
                                 f"sipfleet-{self.name}")
            path = self.dir / fname
            tmp = path.with_name(f".{fname}.tmp")
            tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)

    def _http_ok(self, port: int, path: str) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
        try:
            conn.request("GET", path)
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def _https_ok(self, port: int, path: str) -> bool:
        try:
            status, _ = self._https_get(port, path, verify=False, timeout=3)
        except (OSError, ssl.SSLError, http.client.HTTPException):
            return False
        return status == 200

    def _wait(self, rec: procs.ProcRecord, ready, deadline: float, what: str) -> None:
        while True:
            if ready():
                return
            if not procs.is_alive(rec):
                popen = self._popen.get(rec.pid)
                code = popen.poll() if popen else None
                raise ClusterError(
                    f"{rec.name} exited{f' with code {code}' if code is not None else ''} before {what}; "
                    f"last lines of {rec.log}:\n{tail(Path(rec.log or ''))}"
                )
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"timed out waiting for {what} (cluster {self.name!r}); last lines of {rec.log}:\n"
                    f"{tail(Path(rec.log or ''))}"
                )
            time.sleep(0.2)

    # -------------------------------------------------------------------------------------------------- node
    def nodes(self) -> list[dict[str, Any]]:
        """[{name, ready, reason}] from the API (empty when the API is unreachable)."""
        if not self.kubeconfig.exists():
            return []
        port = self.config().get("ports", {}).get("apiserver")
        try:
            status, body = self._https_get(port, "/api/v1/nodes", timeout=5)
        except (OSError, ssl.SSLError, http.client.HTTPException, TypeError):
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
            })
        return out

    def node_ready(self) -> bool:
        return any(n["name"] == NODE_NAME and n["ready"] for n in self.nodes())

    # -------------------------------------------------------------------------------------------------- down
    def down(self, *, purge: bool = False, grace: float = 10.0) -> list[str]:
        """Stop everything this cluster started (by recorded PID). Keeps logs; ``purge`` also removes all state
        but the logs. Returns the names of processes that had to be SIGKILLed."""
        if not self.dir.exists():
            return []
        with _flock(self.dir / ".lock"):
            return self._down_locked(purge=purge, grace=grace)

    def _down_locked(self, *, purge: bool, grace: float = 10.0) -> list[str]:
        killed = self._stop_staged(self.records(), grace=grace)
        self.pids_file.unlink(missing_ok=True)
        if purge:
            for sub in ("etcd", "pods", "pki"):
                shutil.rmtree(self.dir / sub, ignore_errors=True)
            for f in self.dir.glob("kubeconfig*"):
                f.unlink(missing_ok=True)
            self.config_file.unlink(missing_ok=True)
        return killed

    def _stop_staged(self, recs: list[procs.ProcRecord], grace: float = 10.0) -> list[str]:
        """Stop in stages, each after the previous is gone: the node runner first (it stops its pods), then any
        pod process it recorded, then the control plane in reverse start order (the apiserver shuts down
        cleanly only while etcd is still there). Returns the names that needed SIGKILL."""
        killed: list[str] = []
        stages = [["noderunner"], None, ["kube-scheduler", "kube-controller-manager"], ["kube-apiserver"], ["etcd"]]
        known = {n for st in stages if st for n in st}
        for stage in stages:
            if stage is None:
                killed += self._stop_pod_processes(grace=grace)
            else:
                killed += procs.stop([r for r in recs if r.name in stage], grace=grace)
        killed += procs.stop([r for r in recs if r.name not in known], grace=grace)
        return killed

    def pod_process_records(self) -> list[procs.ProcRecord]:
        """Process records the node runner left in ``pods/`` (``pids.json`` files at any depth up to 2)."""
        recs: list[procs.ProcRecord] = []
        if not self.pods_dir.is_dir():
            return recs
        for f in [*self.pods_dir.glob("pids.json"), *self.pods_dir.glob("*/pids.json"),
                  *self.pods_dir.glob("*/*/pids.json")]:
            recs.extend(procs.read_records(f))
        return recs

    def _stop_pod_processes(self, grace: float = 10.0) -> list[str]:
        recs = [r for r in self.pod_process_records() if procs.is_alive(r)]
        return procs.stop(recs, grace=grace) if recs else []

    # -------------------------------------------------------------------------------------------------- clients
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

    # -------------------------------------------------------------------------------------------------- status
    def status(self) -> dict[str, Any]:
        recs = {r.name: r for r in self.records()}
        cfg = self.config()
        comps = []
        for name in COMPONENTS:
            r = recs.get(name)
            alive = bool(r and procs.is_alive(r))
            comps.append({
                "name": name,
                "pid": r.pid if r else None,
                "alive": alive,
                "rssKiB": procs.rss_kib(r.pid) if alive and r else None,
                "log": str(self.log_file(name)),
            })
        ready = self.apiserver_ready() if recs else False
        return {
            "name": self.name,
            "stateDir": str(self.dir),
            "running": bool(recs) and all(c["alive"] for c in comps if c["pid"]) and ready,
            "apiserverReady": ready,
            "server": self.server,
            "ports": cfg.get("ports", {}),
            "podSubnet": self.pod_subnet,
            "kubeconfig": str(self.kubeconfig),
            "components": comps,
            "nodes": self.nodes() if ready else [],
        }

    def container_log(self, pod: str, namespace: str = "default", container: str | None = None,
                      previous: bool = False) -> Path:
        """The file holding a container's log, as written by the node runner."""
        from kubernetes import client

        if container is None:
            api = self.api_client()
            try:
                p = client.CoreV1Api(api).read_namespaced_pod(pod, namespace)
            finally:
                api.close()
            container = p.spec.containers[0].name
        nr = importlib.import_module(NODERUNNER_MODULE)
        log_path = getattr(nr, "log_path")
        params = inspect.signature(log_path).parameters
        if previous:
            if "previous" not in params:
                raise ClusterError("the node runner does not keep previous container logs")
            return Path(log_path(self.pods_dir, namespace, pod, container, previous=True))
        return Path(log_path(self.pods_dir, namespace, pod, container))



def get(name: str = "default") -> LocalCluster:
    return LocalCluster(name)


def wait_api(cluster: LocalCluster, timeout: float = 60) -> None:
    from .waiting import wait_for

    wait_for(cluster.apiserver_ready, timeout=timeout, interval=0.5, message=f"cluster {cluster.name} API ready")


def run_kubectl(name: str, args: Sequence[str]) -> int:
    c = LocalCluster(name)
    return subprocess.call([str(c.kubectl_path()), f"--kubeconfig={c.kubeconfig}", *args])
