"""Where a local cluster keeps everything: one state directory, nothing in fixed system paths that can be moved.

``Layout(dir)`` names every file and directory (pure; nothing is created here):

=======================  ===================================================================================
``cluster.json``         name, slot (the address plan's), node IP; kept across restarts
``pids.json``            the processes this cluster started (PID + start time)
``hostnet.json``         the network objects it created (hostnet.Owned): netns, veths, nft tables
``host.json``            its other host side effects: cgroups, kernel sysctls with their old values, host paths
``pki/``                 CA, serving and client certificates, service-account keys
``kubeconfig``           admin kubeconfig (O=system:masters); ``kubeconfig-<who>`` one per component
``etcd/``                etcd data (kept by ``down``; ``up(fresh=True)`` drops it)
``config/``              kubelet.yaml, kube-proxy.yaml, containerd.toml, resolv.conf (empty: pods get no DNS)
``cni/``                 ``net.d/`` (the network config), ``ipam/`` (host-local's leases)
``containerd/``          root, state, socket, runc state, opt
``kubelet/``             the kubelet's root directory (pod volumes)
``pod-logs/``            container logs (``<ns>_<pod>_<uid>/<container>/<n>.log``)
``images/``              what was imported into containerd (digests), so an unchanged image is not imported again
``logs/``                ``<component>.log`` of every process; kept by ``down``
=======================  ===================================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    dir: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "dir", Path(self.dir))

    # ---- state files
    @property
    def config_file(self) -> Path:
        return self.dir / "cluster.json"

    @property
    def pids_file(self) -> Path:
        return self.dir / "pids.json"

    @property
    def hostnet_file(self) -> Path:
        return self.dir / "hostnet.json"

    @property
    def host_file(self) -> Path:
        return self.dir / "host.json"

    @property
    def lock_file(self) -> Path:
        return self.dir / ".lock"

    # ---- control plane
    @property
    def pki_dir(self) -> Path:
        return self.dir / "pki"

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    def component_kubeconfig(self, who: str) -> Path:
        return self.dir / f"kubeconfig-{who}"

    @property
    def etcd_dir(self) -> Path:
        return self.dir / "etcd"

    def generated_certs(self, component: str) -> Path:
        return self.pki_dir / f"{component}-generated"

    # ---- node
    @property
    def node_config_dir(self) -> Path:
        return self.dir / "config"

    @property
    def kubelet_config(self) -> Path:
        return self.node_config_dir / "kubelet.yaml"

    @property
    def kube_proxy_config(self) -> Path:
        return self.node_config_dir / "kube-proxy.yaml"

    @property
    def containerd_config(self) -> Path:
        return self.node_config_dir / "containerd.toml"

    @property
    def resolv_conf(self) -> Path:
        return self.node_config_dir / "resolv.conf"

    @property
    def cni_conf_dir(self) -> Path:
        return self.dir / "cni" / "net.d"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.dir / "cni" / "ipam"

    @property
    def containerd_dir(self) -> Path:
        return self.dir / "containerd"

    @property
    def containerd_socket(self) -> Path:
        return self.containerd_dir / "containerd.sock"

    @property
    def kubelet_dir(self) -> Path:
        return self.dir / "kubelet"

    @property
    def pod_logs_dir(self) -> Path:
        return self.dir / "pod-logs"

    @property
    def images_dir(self) -> Path:
        return self.dir / "images"

    @property
    def logs_dir(self) -> Path:
        return self.dir / "logs"

    def log_file(self, component: str) -> Path:
        return self.logs_dir / f"{component}.log"

    def node_dirs(self) -> list[Path]:
        """Directories the node writes into (created at ``up``; their mounts are undone at ``down``)."""
        return [self.node_config_dir, self.cni_conf_dir, self.cni_ipam_dir, self.containerd_dir, self.kubelet_dir,
                self.pod_logs_dir, self.images_dir]
