"""The real node's configuration, network plan choices and host bookkeeping (pure parts; no root needed)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import yaml

from sipfleet.localenv import hoststate
from sipfleet.localenv.cluster import configs, hostside
from sipfleet.localenv.cluster.layout import Layout
from sipfleet.localenv.hostnet.plan import cluster_net

NET = cluster_net(7, "demo")
LAY = Layout(Path("/state/clusters/demo"))
BINS = configs.Binaries(*(Path(f"/bin/{n}") for n in ("etcd", "kube-apiserver", "kube-controller-manager",
                                                     "kube-scheduler", "kubelet", "kube-proxy", "containerd",
                                                     "runc", "cni")))


def _paths(obj) -> list[str]:
    if isinstance(obj, dict):
        return [p for v in obj.values() for p in _paths(v)]
    if isinstance(obj, list):
        return [p for v in obj for p in _paths(v)]
    return [obj] if isinstance(obj, str) and obj.startswith("/") else []


def test_kubelet_config_keeps_to_the_state_dir_and_the_fixes_this_host_needs():
    doc = yaml.safe_load(configs.kubelet_config(LAY, NET, "demo"))
    assert doc["failCgroupV1"] is False and doc["cgroupDriver"] == "cgroupfs"
    assert doc["cgroupRoot"] == "/sipfleet-demo"
    assert doc["oomScoreAdj"] == 0 and doc["makeIPTablesUtilChains"] is False
    assert doc["address"] == doc["healthzBindAddress"] == "10.213.7.1"
    assert doc["authentication"]["anonymous"]["enabled"] is False and doc["readOnlyPort"] == 0
    assert doc["clusterDNS"] == []
    for p in _paths(doc):
        if p != "/sipfleet-demo":
            assert p.startswith("/state/clusters/demo/"), p  # nothing in /var/lib/kubelet & co.
    argv = configs.kubelet_argv(Path("/bin/kubelet"), LAY, NET)
    assert "--node-ip=10.213.7.1" in argv and f"--root-dir={LAY.kubelet_dir}" in argv


def test_containerd_config_is_valid_toml_with_every_path_in_the_state_dir():
    doc = tomllib.loads(configs.containerd_toml(BINS, LAY))
    assert doc["version"] == 3 and doc["imports"] == []
    assert "io.containerd.nri.v1.nri" in doc["disabled_plugins"]
    runtime = doc["plugins"]["io.containerd.cri.v1.runtime"]
    assert runtime["restrict_oom_score_adj"] is True and runtime["netns_mounts_under_state_dir"] is True
    runc = runtime["containerd"]["runtimes"]["runc"]["options"]
    assert runc["BinaryName"] == "/bin/runc" and runc["SystemdCgroup"] is False
    assert runtime["cni"]["bin_dirs"] == ["/bin/cni"]  # the CNI plugins' directory
    for p in _paths(doc):
        assert p.startswith("/state/clusters/demo/") or p.startswith("/bin/") or p == "/bin", p


def test_pods_get_no_default_route_no_masquerade_and_only_the_service_route():
    doc = json.loads(configs.cni_conflist(LAY, NET))
    (bridge,) = doc["plugins"]
    assert bridge["bridge"] == "cbr0" and not bridge["isGateway"] and not bridge["isDefaultGateway"]
    assert not bridge["ipMasq"]
    ipam = bridge["ipam"]
    assert ipam["ranges"] == [[{"subnet": "10.213.0.0/16", "rangeStart": "10.213.7.10", "rangeEnd": "10.213.7.250",
                                "gateway": "10.213.7.1"}]]
    assert ipam["routes"] == [{"dst": "10.214.7.0/24", "gw": "10.213.7.1"}]
    assert all(r["dst"] not in ("0.0.0.0/0", "default") for r in ipam["routes"])


def test_control_plane_listens_on_the_node_ip_and_names_the_service_range():
    api = configs.apiserver_argv(BINS, LAY, NET)
    assert "--bind-address=10.213.7.1" in api and "--advertise-address=10.213.7.1" in api
    assert "--service-cluster-ip-range=10.214.7.0/24" in api
    assert not any(a.startswith("--endpoint-reconciler-type") for a in api)  # the real (lease) reconciler
    assert "--kubelet-preferred-address-types=InternalIP" in api
    kcm = configs.controller_manager_argv(BINS, LAY, NET)
    assert "node-lifecycle-controller" in next(a for a in kcm if a.startswith("--controllers=")).split("=", 1)[1].split(",")
    assert "127.0.0.1:2379" in " ".join(configs.etcd_argv(BINS, LAY))  # etcd only on the netns' loopback


def test_kube_proxy_uses_nftables_and_leaves_conntrack_alone():
    doc = yaml.safe_load(configs.kube_proxy_config(LAY, NET))
    assert doc["mode"] == "nftables"
    assert set(doc["conntrack"].values()) <= {0, "0s"}
    family, table, script = configs.hairpin_nft(NET)
    assert (family, table) == ("inet", "sipfleet-hairpin")
    assert "policy drop" in script and 'iifname "cbr0" oifname "cbr0" accept' in script


MOUNTINFO = """\
22 1 8:1 / / rw - ext4 /dev/vda rw
30 22 0:26 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
31 22 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
32 22 0:28 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
40 22 8:1 /s/k /s/k rw - ext4 /dev/vda rw
41 40 0:50 / /s/k/pods/u1/volumes/secret rw - tmpfs tmpfs rw
42 22 0:51 / /s/containerd/state/task/a/rootfs rw - overlay overlay rw
43 22 0:52 / /s/with\\040space rw - tmpfs tmpfs rw
44 22 0:53 / /s2/other rw - tmpfs tmpfs rw
"""


def test_mounts_under_the_state_dir_deepest_first():
    assert hostside.mounts_under(MOUNTINFO, "/s") == [
        "/s/containerd/state/task/a/rootfs", "/s/k/pods/u1/volumes/secret", "/s/with space", "/s/k",
    ]
    assert "/s2/other" not in hostside.mounts_under(MOUNTINFO, "/s")


def test_cgroup_v1_hierarchies_leave_out_the_unified_one():
    assert hostside.cgroup_v1_hierarchies(MOUNTINFO) == ["/sys/fs/cgroup/cpu", "/sys/fs/cgroup/memory"]
    assert hostside.cgroup_dirs_deepest_first(["/a", "/a/b/c", "/a/b"]) == ["/a/b/c", "/a/b", "/a"]


def test_host_state_diff_names_each_change():
    before = {"links": ["eth0"], "sysctls": {"kernel/panic": "1"}, "paths": {"/run/netns": False}}
    after = {"links": ["eth0", "sfc1h"], "sysctls": {"kernel/panic": "10"}, "paths": {"/run/netns": True}}
    assert hoststate.diff(before, after) == [
        "links: + sfc1h", "paths: /run/netns False -> True", "sysctls: kernel/panic '1' -> '10'",
    ]
    assert hoststate.diff(after, after) == []


def test_host_state_diff_leaves_out_only_other_owners_objects():
    before = {"links": ["eth0", "sfc1h"], "netns": ["sipfleet-c-main"], "processes": ["kubelet in sipfleet-c-main"],
              "cgroups": [], "addrs": []}
    after = {"links": ["eth0", "sfc1h", "sfc2h", "sfl3br", "sfc12h", "tap0"],
             "netns": ["sipfleet-c-main", "sipfleet-c-side", "sipfleet-l-lab-P"],
             "processes": ["kubelet in sipfleet-c-main", "kubelet in sipfleet-c-side", "buildkitd in host"],
             "cgroups": ["cpu/sipfleet-side", "cpu/sipfleet-gw1"], "addrs": ["sfc2h 10.213.2.254/24", "sfc12h 10.213.12.254/24"]}
    foreign = hoststate.others(["side", "sipfleet-c-side", "sfc2h", "10.213.2."])
    assert hoststate.diff(before, after, foreign=foreign) == [
        "addrs: + sfc2h 10.213.2.254/24", "cgroups: + cpu/sipfleet-side", "links: + sfc2h", "links: + tap0",
        "netns: + sipfleet-c-side", "processes: + buildkitd in host", "processes: + kubelet in sipfleet-c-side",
    ]


def test_archive_image_names(tmp_path):
    import io
    import tarfile

    from sipfleet.localenv.cluster.runtime import archive_image_names

    def archive(name: str, index: dict | None) -> Path:
        path = tmp_path / name
        with tarfile.open(path, "w") as tar:
            if index is not None:
                data = json.dumps(index).encode()
                info = tarfile.TarInfo("index.json")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return path

    named = archive("a.tar", {"manifests": [
        {"digest": "sha256:1", "annotations": {"io.containerd.image.name": "docker.io/sipfleet/agent:0.1.0",
                                                "org.opencontainers.image.ref.name": "0.1.0"}},
        {"digest": "sha256:2", "annotations": {"org.opencontainers.image.ref.name": "registry.k8s.io/pause:3.10.1"}}]})
    assert archive_image_names(named) == ["docker.io/sipfleet/agent:0.1.0", "registry.k8s.io/pause:3.10.1"]
    assert archive_image_names(archive("b.tar", {"manifests": [{"digest": "sha256:3"}]})) == []
    assert archive_image_names(archive("c.tar", None)) == []
    assert archive_image_names(tmp_path / "missing.tar") == []


def test_a_shim_is_ours_only_when_it_serves_our_containerd_socket():
    sock = "/tmp/x/clusters/a/containerd/containerd.sock"
    ours = ["/root/.cache/sipfleet/bin/node/containerd-shim-runc-v2", "-namespace", "k8s.io", "-id", "abc",
            "-address", sock]
    assert hostside.is_shim_of(ours, sock)
    assert not hostside.is_shim_of(ours[:-1] + ["/run/containerd/containerd.sock"], sock)
    assert not hostside.is_shim_of(["/usr/bin/containerd-shim-runc-v2", "-address"], sock)
    assert not hostside.is_shim_of(["/usr/bin/sleep", "-address", sock], sock)
    assert not hostside.is_shim_of([], sock)
