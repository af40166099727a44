"""Node registration and heartbeat (Lease in kube-node-lease, Node status when needed)."""

from __future__ import annotations

import logging
import os
import platform
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from .kube import MERGE, STRATEGIC, Kube, KubeError, now_microtime, now_time

log = logging.getLogger("sipfleet.noderunner.node")

KUBELET_VERSION = "v1.35.4"
LEASE_DURATION = 40
LEASE_RENEW_INTERVAL = 10.0
#: the kubelet's nodeStatusReportFrequency: status is re-posted this often even when nothing changed
STATUS_REPORT_INTERVAL = 300.0
#: how often the node object is checked (someone marked it NotReady, deleted it, ...)
NODE_CHECK_INTERVAL = 30.0
#: taints the node-lifecycle controller manages (and removes once the node is Ready)
MANAGED_TAINTS = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")


def _read(path: str, default: str = "") -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return default


def node_capacity(state_dir: Path, cpu: str = "2", pods: int = 110) -> dict[str, str]:
    mem_kib = 8 * 1024 * 1024
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    try:
        disk_kib = shutil.disk_usage(state_dir).total // 1024
    except OSError:
        disk_kib = 10 * 1024 * 1024
    return {"cpu": str(cpu), "memory": f"{mem_kib}Ki", "pods": str(pods), "ephemeral-storage": f"{disk_kib}Ki"}


def _os_image() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return "Linux"


def _arch() -> str:
    m = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(m, m)


def parse_taint(text: str) -> dict:
    """``key=value:Effect`` or ``key:Effect`` (kubelet's --register-with-taints syntax) -> a Taint."""
    kv, sep, effect = text.rpartition(":")
    if not sep or effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute") or not kv:
        raise ValueError(f"bad taint {text!r}: want key[=value]:NoSchedule|PreferNoSchedule|NoExecute")
    key, _, value = kv.partition("=")
    taint = {"key": key, "effect": effect}
    if value:
        taint["value"] = value
    return taint


def node_object(name: str, taints: list[dict] | None = None) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": _arch(),
                "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": _arch(),
                "sipfleet.io/node-runner": "true",
            },
        },
        "spec": {"taints": taints} if taints else {},
    }


def node_status(name: str, capacity: dict[str, str], host_ip: str, transitions: dict[str, str],
                kubelet_port: int = 0) -> dict:
    now = now_time()

    def cond(typ: str, status: str, reason: str, message: str) -> dict:
        return {
            "type": typ,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": now,
            "lastTransitionTime": transitions.setdefault(typ, now),
        }

    machine_id = _read("/etc/machine-id", "sipfleet-local")
    return {
        "capacity": capacity,
        "allocatable": dict(capacity),
        "conditions": [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "node runner has sufficient memory available"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "node runner has no disk pressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "node runner has sufficient PID available"),
            cond("Ready", "True", "KubeletReady", "sipfleet node runner is posting ready status"),
        ],
        # no Hostname address: the apiserver prefers it for kubelet connections (kubectl logs) and the node
        # name does not resolve
        # ($patch: replace drops addresses an earlier runner version posted; the list merges by type otherwise)
        "addresses": [{"$patch": "replace"}, {"type": "InternalIP", "address": host_ip}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}},
        "nodeInfo": {
            "machineID": machine_id,
            "systemUUID": machine_id,
            "bootID": _read("/proc/sys/kernel/random/boot_id", "unknown"),
            "kernelVersion": platform.release(),
            "osImage": _os_image(),
            "containerRuntimeVersion": "sipfleet-local://0.1.0",
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": _arch(),
        },
    }


class NodeHeartbeat(threading.Thread):
    def __init__(self, kube: Kube, name: str, capacity: dict[str, str], host_ip: str, stop: threading.Event,
                 taints: list[dict] | None = None, kubelet_port: int = 0):
        super().__init__(name="node-heartbeat", daemon=True)
        self.kube = kube
        self.node_name = name
        self.capacity = capacity
        self.host_ip = host_ip
        self.stop_event = stop
        self.taints = list(taints or [])
        self.kubelet_port = kubelet_port
        self.transitions: dict[str, str] = {}
        self.node_uid: str | None = None
        self.registered = threading.Event()
        self._last_status = 0.0
        self._last_check = 0.0

    # -------------------------------------------------------------- node

    def register(self) -> None:
        """Create the Node (or take over an existing one) and post its status."""
        node = self.kube.get(f"/api/v1/nodes/{self.node_name}")
        if node is None:
            try:
                node = self.kube.request("POST", "/api/v1/nodes", body=node_object(self.node_name, self.taints))
                log.info("registered node %s", self.node_name)
            except KubeError as e:
                if e.status != 409:
                    raise
                node = self.kube.request("GET", f"/api/v1/nodes/{self.node_name}")
        else:
            # keep the labels we rely on; leave everything else (taints someone added on purpose) alone
            node = self.kube.request(
                "PATCH", f"/api/v1/nodes/{self.node_name}",
                body={"metadata": {"labels": node_object(self.node_name)["metadata"]["labels"]}},
                content_type=STRATEGIC,
            )
        self.node_uid = node["metadata"]["uid"]
        # untaint before reporting Ready: whoever sees the node Ready can schedule to it at once
        self.untaint(node)
        self.post_status()
        self.registered.set()

    def untaint(self, node: dict) -> None:
        """Remove the not-ready/unreachable taints once the node is Ready.

        The TaintNodesByCondition admission plugin taints every new Node ``node.kubernetes.io/not-ready``;
        in a real cluster the node-lifecycle controller removes it when the kubelet reports Ready. The local
        cluster runs without that controller (it would also evict pods on missed heartbeats), so the runner
        removes the taint itself.
        """
        for _ in range(5):
            taints = (node.get("spec") or {}).get("taints") or []
            keep = [t for t in taints if t.get("key") not in MANAGED_TAINTS]
            if len(keep) == len(taints):
                return
            try:
                self.kube.request(
                    "PATCH", f"/api/v1/nodes/{self.node_name}",
                    body={"metadata": {"resourceVersion": node["metadata"]["resourceVersion"]},
                          "spec": {"taints": keep or None}},
                    content_type=MERGE,
                )
                log.info("removed taints %s from node %s",
                         sorted({t["key"] for t in taints if t.get("key") in MANAGED_TAINTS}), self.node_name)
                return
            except KubeError as e:
                if e.status == 409:  # changed meanwhile: look again
                    node = self.kube.request("GET", f"/api/v1/nodes/{self.node_name}")
                    continue
                if e.status == 403:  # e.g. NodeRestriction forbids it: not fatal
                    log.warning("cannot remove taints from node %s: %s", self.node_name, e)
                    return
                raise

    def post_status(self) -> None:
        self.kube.request(
            "PATCH",
            f"/api/v1/nodes/{self.node_name}/status",
            body={"status": node_status(self.node_name, self.capacity, self.host_ip, self.transitions,
                                         self.kubelet_port)},
            content_type=STRATEGIC,
        )
        self._last_status = time.monotonic()

    def check_node(self) -> None:
        node = self.kube.get(f"/api/v1/nodes/{self.node_name}")
        self._last_check = time.monotonic()
        if node is None:
            log.warning("node %s disappeared; registering again", self.node_name)
            self.register()
            return
        if node["metadata"]["uid"] != self.node_uid:
            self.node_uid = node["metadata"]["uid"]
        self.untaint(node)
        ready = next((c for c in (node.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"), None)
        if ready is None or ready.get("status") != "True":
            log.warning("node %s is not Ready in the API (%s); posting status", self.node_name, ready and ready.get("reason"))
            self.transitions.pop("Ready", None)
            self.post_status()

    # -------------------------------------------------------------- lease

    def renew_lease(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node_name}"
        lease = self.kube.get(path)
        spec = {
            "holderIdentity": self.node_name,
            "leaseDurationSeconds": LEASE_DURATION,
            "renewTime": now_microtime(),
        }
        if lease is None:
            body: dict[str, Any] = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.node_name, "namespace": "kube-node-lease"},
                "spec": spec,
            }
            if self.node_uid:
                body["metadata"]["ownerReferences"] = [
                    {"apiVersion": "v1", "kind": "Node", "name": self.node_name, "uid": self.node_uid}
                ]
            try:
                self.kube.request("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", body=body)
            except KubeError as e:
                if e.status == 404:  # kube-node-lease namespace not there yet (apiserver creates it at start)
                    log.warning("cannot create lease yet: %s", e)
                    return
                raise
            return
        lease["spec"].update(spec)
        self.kube.request("PUT", path, body=lease)

    def run(self) -> None:
        delay = 1.0
        while not self.stop_event.is_set():
            try:
                if not self.registered.is_set():
                    self.register()
                self.renew_lease()
                now = time.monotonic()
                if now - self._last_status >= STATUS_REPORT_INTERVAL:
                    self.post_status()
                elif now - self._last_check >= NODE_CHECK_INTERVAL:
                    self.check_node()
                delay = 1.0
                self.stop_event.wait(LEASE_RENEW_INTERVAL)
            except Exception as e:  # noqa: BLE001 - never die; retry with back-off
                log.warning("node heartbeat: %s", e)
                self.stop_event.wait(delay)
                delay = min(delay * 2, LEASE_RENEW_INTERVAL)
