"""Step 1: the environment. Binaries (built once from pinned Go modules, cached), the real local cluster (started,
or reused when it runs), the SIP lab with the examples' users at R, sipfleet's images built from
images/Dockerfile.* (cached by their inputs) and imported into the node's containerd, and the lab joined to the
cluster's pod bridge at L2. Leftovers of an interrupted run (a pod link left down, R still holding) are undone
first."""

from __future__ import annotations

import contextlib
import time

from .context import Demo, DemoError


def _binaries(d: Demo) -> None:
    from ..localenv import kubebin

    wanted = list(kubebin.ALL)  # control plane, node, kubectl, helm, BuildKit
    try:
        missing = [n for n in kubebin.expand(wanted) if kubebin.resolve(n) is None]
    except Exception:  # noqa: BLE001 - resolve only checks the cache; ensure() reports properly below
        missing = []
    if missing:
        d.out.line(f"building {', '.join(missing)} from pinned Go modules (once; cached in {kubebin.cache_root()}): "
                   "this takes minutes")
    try:
        kubebin.ensure(wanted)
        kubebin.check_node()
    except Exception as e:  # noqa: BLE001
        raise DemoError(f"binaries: {e}") from None
    if missing:
        d.restart_clock()


def _undo_leftovers(d: Demo) -> None:
    """A run killed in the middle of its fault may have left dave's pod link down or R holding REGISTERs."""
    left = d.read_record().get("linkDown")
    if left:
        with contextlib.suppress(Exception):
            d.lab.link_up(netns=left["netns"], dev=left.get("dev", "eth0"))
            d.out.line(f"set {left.get('dev', 'eth0')} of pod {left.get('pod', '?')} up again (left down by an "
                       "interrupted run)")
        d.record(linkDown=None)
    if d.lab.is_up() and d.lab.injection("R") != "normal":
        d.lab.inject("R", "normal")
        d.out.line("R answers normally again (left holding by an interrupted run)")


def step_environment(d: Demo, secrets: list[dict]) -> None:
    from ..localenv.cluster import ClusterError
    from ..localenv.imagebuild.build import build_images
    from ..localenv.siplab import LabError

    out = d.out
    out.step(1, "the real local cluster, the SIP lab, sipfleet's images")
    _binaries(d)

    t = time.monotonic()
    reused = d.cluster.running()
    try:
        # a stopped demo cluster starts from scratch (no objects of an earlier run are adopted)
        d.cluster.up(fresh=not reused, timeout=d.remaining(300))
    except ClusterError as e:
        raise DemoError(f"cluster: {e}") from None
    net = d.cluster.net
    out.line(f"cluster {d.cluster.name!r}: {'reused, already running' if reused else 'started with fresh etcd data'} "
             f"({time.monotonic() - t:.1f} s): etcd, kube-apiserver, controller-manager, scheduler, containerd, "
             f"kubelet and kube-proxy in netns {d.cluster.netns}")
    out.line(f"  API {d.cluster.server}, node {'Ready' if d.cluster.node_ready() else 'NOT ready'}, pods "
             f"{net.pod_range_start}-{net.pod_range_end}, Services {net.service_cidr}")

    t = time.monotonic()
    lab_reused = d.lab.is_up()
    try:
        d.lab.up(timeout=d.remaining(120))
        users = [(s["stringData"]["username"], s["stringData"]["password"]) for s in secrets]
        d.lab.add_users(users)
        _undo_leftovers(d)
    except LabError as e:
        raise DemoError(f"SIP lab: {e}") from None
    out.line(f"SIP lab {d.lab.name!r}: {'reused' if lab_reused else 'started'} ({time.monotonic() - t:.1f} s): "
             f"P proxy {d.lab.hostport('P')}, R registrar {d.lab.hostport('R')} (Service-Route <{d.lab.edge_uri()}>), "
             f"E edge {d.lab.hostport('E')}; users at R: {', '.join(u for u, _ in users)}")

    t = time.monotonic()
    try:
        built = build_images()
        imported = d.cluster.load_images([b.archive for b in built])
    except Exception as e:  # noqa: BLE001 - a build or an import failed: the message says which
        raise DemoError(f"images: {e}") from None
    d.images_changed = bool(imported)
    for b in built:
        state = f"built in {b.seconds:.1f} s" if b.rebuilt else "cached"
        out.line(f"image {b.name} {b.digest[:19]} {b.size / 1e6:.0f} MB ({state}; "
                 f"{'imported into the node' if b.archive in imported else 'already on the node'})")
    out.line(f"  images ready ({time.monotonic() - t:.1f} s; from images/Dockerfile.*, BuildKit, no network)")

    try:
        link = d.lab.join(d.cluster.netns, net.slot)
    except LabError as e:
        raise DemoError(f"joining the lab and the cluster: {e}") from None
    out.line(f"lab bridge {d.lab.bridge} joined to the cluster's cbr0 at L2 (veth {link}): pods reach P, R and E")
    d.record(name=d.cluster.name, subnet=d.lab.subnet, labStateDir=str(d.lab.state_dir))
