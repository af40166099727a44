"""The configuration of every process of a local cluster, rendered from its address plan and layout (pure).

Everything runs inside the cluster's network namespace, so the ports are the standard ones and two clusters never
collide: etcd on 127.0.0.1:2379/2380 (the netns' own loopback), the apiserver on the node IP (``10.213.c.1:6443``),
controller-manager :10257, scheduler :10259, kubelet :10250, kube-proxy health :10256.

Choices kept here, each for a reason written next to it: the kubelet on cgroup v1 with a cgroup root of the
cluster's own; no negative OOM score adjustments (root here lacks CAP_SYS_RESOURCE); no iptables chains from the
kubelet; every kubelet and containerd path under the state directory; pods with no DNS and no default route;
containerd with NRI and tracing off and no imports from /etc; kube-proxy in nftables mode (its table lives in the
cluster's netns); the node-lifecycle controller on, so the real not-ready taint is lifted by the real controller.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..hostnet.plan import ClusterNet
from .layout import Layout

NODE_NAME = "sipfleet-node-0"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
APISERVER_PORT = 6443
ETCD_CLIENT, ETCD_PEER = 2379, 2380
KCM_PORT, SCHEDULER_PORT = 10257, 10259
KUBELET_PORT, KUBELET_HEALTHZ_PORT = 10250, 10248
KUBE_PROXY_HEALTHZ_PORT, KUBE_PROXY_METRICS_PORT = 10256, 10249
PAUSE_IMAGE = "registry.k8s.io/pause:3.10.1"
MAX_PODS = 250

#: the controllers the local cluster needs: workloads, GC, namespaces, service accounts, endpoints, and
#: node-lifecycle (it lifts the not-ready taint new nodes get, and marks a silent node NotReady)
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
    "node-lifecycle-controller",
]


@dataclass(frozen=True)
class Binaries:
    """Paths of the binaries a cluster runs (from kubebin)."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubelet: Path
    kube_proxy: Path
    containerd: Path
    runc: Path
    cni_dir: Path

    @classmethod
    def from_ensure(cls, bins: dict[str, Path]) -> "Binaries":
        return cls(
            etcd=bins["etcd"], kube_apiserver=bins["kube-apiserver"],
            kube_controller_manager=bins["kube-controller-manager"], kube_scheduler=bins["kube-scheduler"],
            kubelet=bins["kubelet"], kube_proxy=bins["kube-proxy"], containerd=bins["containerd"], runc=bins["runc"],
            cni_dir=bins["bridge"].parent,
        )


def cgroup_root(cluster: str) -> str:
    """The kubelet's cgroup root: a cgroup of this cluster's own in every hierarchy (never one we did not make)."""
    return f"/sipfleet-{cluster}"


# ---------------------------------------------------------------------------------------------- control plane


def etcd_argv(b: Binaries, lay: Layout) -> list[str]:
    return [
        str(b.etcd), "--name", "sipfleet", "--data-dir", str(lay.etcd_dir),
        "--listen-client-urls", f"http://127.0.0.1:{ETCD_CLIENT}",
        "--advertise-client-urls", f"http://127.0.0.1:{ETCD_CLIENT}",
        "--listen-peer-urls", f"http://127.0.0.1:{ETCD_PEER}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{ETCD_PEER}",
        "--initial-cluster", f"sipfleet=http://127.0.0.1:{ETCD_PEER}",
        "--listen-metrics-urls", "http://127.0.0.1:2381",
        "--unsafe-no-fsync=true", "--quota-backend-bytes", str(2 * 1024**3), "--log-level", "warn",
    ]


def apiserver_argv(b: Binaries, lay: Layout, net: ClusterNet) -> list[str]:
    pki = lay.pki_dir
    return [
        str(b.kube_apiserver),
        f"--etcd-servers=http://127.0.0.1:{ETCD_CLIENT}",
        f"--secure-port={APISERVER_PORT}",
        f"--bind-address={net.node_ip}",
        f"--advertise-address={net.node_ip}",  # the `kubernetes` Service's endpoint (lease reconciler)
        f"--cert-dir={lay.generated_certs('apiserver')}",
        f"--tls-cert-file={pki / 'apiserver.crt'}",
        f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--client-ca-file={pki / 'ca.crt'}",
        f"--service-cluster-ip-range={net.service_cidr}",
        "--allow-privileged=true",
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction",
        f"--service-account-issuer={SA_ISSUER}",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        # apiserver -> kubelet (logs, exec, port-forward): client certificate, kubelet CA, by InternalIP
        f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
        f"--kubelet-certificate-authority={pki / 'ca.crt'}",
        "--kubelet-preferred-address-types=InternalIP",
        "--profiling=false",
        "--event-ttl=1h",
        "--v=1",
    ]


def controller_manager_argv(b: Binaries, lay: Layout, net: ClusterNet) -> list[str]:
    kc = lay.component_kubeconfig("controller-manager")
    pki = lay.pki_dir
    return [
        str(b.kube_controller_manager),
        f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
        "--authentication-skip-lookup=true",  # no front-proxy CA to look up
        f"--client-ca-file={pki / 'ca.crt'}",
        f"--bind-address={net.node_ip}", f"--secure-port={KCM_PORT}",
        f"--cert-dir={lay.generated_certs('controller-manager')}",
        f"--service-account-private-key-file={pki / 'sa.key'}",
        f"--root-ca-file={pki / 'ca.crt'}",
        "--use-service-account-credentials=true",
        f"--controllers={','.join(CONTROLLERS)}",
        f"--service-cluster-ip-range={net.service_cidr}",
        "--node-monitor-grace-period=20s",  # a node whose kubelet stopped turns NotReady in 20 s, not 50 s
        "--leader-elect=false",
        "--v=1",
    ]


def scheduler_argv(b: Binaries, lay: Layout, net: ClusterNet) -> list[str]:
    kc = lay.component_kubeconfig("scheduler")
    return [
        str(b.kube_scheduler),
        f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
        "--authentication-skip-lookup=true",
        f"--client-ca-file={lay.pki_dir / 'ca.crt'}",
        f"--bind-address={net.node_ip}", f"--secure-port={SCHEDULER_PORT}",
        f"--cert-dir={lay.generated_certs('scheduler')}",
        "--leader-elect=false",
        "--v=1",
    ]


# ---------------------------------------------------------------------------------------------- node


def containerd_toml(b: Binaries, lay: Layout) -> str:
    """containerd 2.x (config version 3): every path under the state directory, no imports from /etc, NRI and
    tracing off, runc as the runtime with its state under the state directory, pod netns mounts under the state
    directory (so down finds and removes them), no negative OOM score adjustments."""
    c = lay.containerd_dir
    q = lambda p: "'" + str(p).replace("'", "") + "'"  # noqa: E731 - TOML literal string
    return f"""version = 3
root = {q(c / 'root')}
state = {q(c / 'state')}
imports = []
disabled_plugins = ['io.containerd.nri.v1.nri', 'io.containerd.internal.v1.tracing', \
'io.containerd.tracing.processor.v1.otlp', 'io.containerd.snapshotter.v1.blockfile', \
'io.containerd.snapshotter.v1.erofs', 'io.containerd.differ.v1.erofs', 'io.containerd.mount-handler.v1.erofs']

[grpc]
  address = {q(lay.containerd_socket)}

[ttrpc]
  address = {q(str(lay.containerd_socket) + '.ttrpc')}

[plugins]
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = {q(PAUSE_IMAGE)}
  [plugins.'io.containerd.cri.v1.runtime']
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    enable_cdi = false
    cdi_spec_dirs = []
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = {q(b.runc)}
          Root = {q(c / 'runc')}
          SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = [{q(b.cni_dir)}]
      conf_dir = {q(lay.cni_conf_dir)}
  [plugins.'io.containerd.grpc.v1.cri']
    stream_server_address = '127.0.0.1'
  [plugins.'io.containerd.internal.v1.opt']
    path = {q(c / 'opt')}
  [plugins.'io.containerd.image-verifier.v1.bindir']
    bin_dir = {q(c / 'image-verifiers')}
"""


def cni_conflist(lay: Layout, net: ClusterNet) -> str:
    """The pod network: the bridge plugin on ``cbr0`` (its address is the node IP, set by us), no gateway role,
    no masquerade; host-local addresses in the cluster's range of the on-link /16; one route, to the Service
    range via the node (kube-proxy's rules are there). No default route: nothing can leave the machine."""
    return json.dumps({
        "cniVersion": "1.0.0",
        "name": "sipfleet",
        "plugins": [{
            "type": "bridge",
            "bridge": net.bridge,
            "isGateway": False,
            "isDefaultGateway": False,
            "ipMasq": False,
            "hairpinMode": False,
            "ipam": {
                "type": "host-local",
                "dataDir": str(lay.cni_ipam_dir),
                "ranges": [[{"subnet": net.pod_subnet, "rangeStart": net.pod_range_start,
                             "rangeEnd": net.pod_range_end, "gateway": net.node_ip}]],
                "routes": [{"dst": net.service_cidr, "gw": net.node_ip}],
            },
        }],
    }, indent=1)


def kubelet_config(lay: Layout, net: ClusterNet, cluster: str) -> str:
    pki = lay.pki_dir
    sock = f"unix://{lay.containerd_socket}"
    doc = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": False,  # our machines are cgroup v1 (hybrid); 1.35 refuses v1 unless told
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": cgroup_root(cluster),
        "cgroupsPerQOS": True,
        "enforceNodeAllocatable": ["pods"],
        "oomScoreAdj": 0,  # negative values need CAP_SYS_RESOURCE, which root lacks here
        "makeIPTablesUtilChains": False,
        "address": net.node_ip,
        "port": KUBELET_PORT,
        "readOnlyPort": 0,
        "healthzBindAddress": net.node_ip,
        "healthzPort": KUBELET_HEALTHZ_PORT,
        "authentication": {"x509": {"clientCAFile": str(pki / "ca.crt")}, "webhook": {"enabled": True},
                           "anonymous": {"enabled": False}},
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": str(pki / "kubelet.crt"),
        "tlsPrivateKeyFile": str(pki / "kubelet.key"),
        "volumePluginDir": str(lay.kubelet_dir / "volume-plugins"),
        "podLogsDir": str(lay.pod_logs_dir),
        "containerRuntimeEndpoint": sock,
        "imageServiceEndpoint": sock,
        "resolvConf": str(lay.resolv_conf),  # empty: pods get no nameserver to send anything to
        "clusterDNS": [],
        "failSwapOn": False,
        "maxPods": MAX_PODS,
        "serializeImagePulls": False,
        # images are imported, never pulled: no image GC, and eviction only when the disk is really full
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                         "nodefs.inodesFree": "1%"},
        "protectKernelDefaults": False,  # it sets kernel.panic & co.; down restores the values it found
        "staticPodPath": "",
        "kubeAPIQPS": 50,
        "kubeAPIBurst": 100,
        "containerLogMaxSize": "10Mi",
        "containerLogMaxFiles": 3,
    }
    return yaml.safe_dump(doc, sort_keys=False)


def kubelet_argv(kubelet: Path, lay: Layout, net: ClusterNet) -> list[str]:
    return [
        str(kubelet),
        f"--config={lay.kubelet_config}",
        f"--kubeconfig={lay.component_kubeconfig('node')}",
        f"--root-dir={lay.kubelet_dir}",
        f"--cert-dir={lay.kubelet_dir / 'pki'}",
        f"--node-ip={net.node_ip}",
        f"--hostname-override={NODE_NAME}",
        "--v=1",
    ]


def kube_proxy_config(lay: Layout, net: ClusterNet) -> str:
    doc = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "nftables",
        "clientConnection": {"kubeconfig": str(lay.component_kubeconfig("kube-proxy"))},
        "hostnameOverride": NODE_NAME,
        "bindAddress": net.node_ip,
        "healthzBindAddress": f"{net.node_ip}:{KUBE_PROXY_HEALTHZ_PORT}",
        "metricsBindAddress": f"{net.node_ip}:{KUBE_PROXY_METRICS_PORT}",
        "clusterCIDR": net.host_subnet,
        # leave the host's conntrack settings alone (0 = do not change)
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        "nodePortAddresses": [f"{net.node_ip}/32"],
    }
    return yaml.safe_dump(doc, sort_keys=False)


def kube_proxy_argv(kube_proxy: Path, lay: Layout) -> list[str]:
    return [str(kube_proxy), f"--config={lay.kube_proxy_config}", "--v=1"]


def hairpin_nft(net: ClusterNet) -> tuple[str, str, str]:
    """(family, table, script): inside the cluster's netns only, forwarding is allowed from ``cbr0`` back onto
    ``cbr0`` (a pod reaching another pod through a ClusterIP: kube-proxy's DNAT, then out the same bridge) and
    dropped otherwise. The netns has no route off the machine; the host's own forwarding stays off."""
    table = "sipfleet-hairpin"
    script = f"""table inet {table} {{
  chain forward {{
    type filter hook forward priority 0; policy drop;
    iifname "{net.bridge}" oifname "{net.bridge}" accept
  }}
}}
"""
    return "inet", table, script
