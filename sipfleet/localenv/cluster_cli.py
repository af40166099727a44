"""`sipfleet cluster build | up | down | status | kubeconfig | logs | kubectl`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="cluster_command", metavar="SUBCOMMAND")

    def add(name: str, help_text: str, func) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--name", default="default", help="cluster name (default: %(default)s)")
        p.set_defaults(func=func)
        return p

    p = add("build", "build (or find) the pinned binaries: control plane, kubectl, helm, the node's and BuildKit",
            _build)
    p.add_argument("components", nargs="*",
                   help="only these components or groups (control-plane, node, images, cni, chart-check, prometheus; default: all)")
    p = add("up", "start the local cluster (idempotent) and wait until it is ready", _up)
    p.add_argument("--fresh", action="store_true", help="drop etcd data first")
    p.add_argument("--timeout", type=float, default=240.0, help="seconds to wait for readiness")
    p = add("down", "stop the local cluster and undo its host changes (logs are kept)", _down)
    p.add_argument("--purge", action="store_true",
                   help="also delete etcd data, certificates, kubeconfigs and the imported images")
    p = add("load-images", "build (cached) sipfleet's images and import them into the cluster's containerd",
            _load_images)
    p.add_argument("components", nargs="*", help="operator, agent (default: both)")
    p = add("status", "show components, addresses, kubeconfig and node readiness", _status)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add("kubeconfig", "print the admin kubeconfig path (export KUBECONFIG=$(sipfleet cluster kubeconfig))",
        _kubeconfig)
    p = add("logs", "print a container's log (as the kubelet wrote it)", _logs)
    p.add_argument("pod")
    p.add_argument("-n", "--namespace", default="default")
    p.add_argument("-c", "--container", default=None)
    p.add_argument("-p", "--previous", action="store_true", help="the previous (crashed) container's log")
    p = add("kubectl", "run the pinned kubectl against the cluster: sipfleet cluster kubectl -- get pods", _kubectl)
    p.add_argument("args", nargs=argparse.REMAINDER)
    parser.set_defaults(func=_help(parser))


def _help(parser: argparse.ArgumentParser):
    def run(args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    return run


def _err(msg: str) -> int:
    print(f"sipfleet cluster: {msg}", file=sys.stderr)
    return 1


def _build(args: argparse.Namespace) -> int:
    from . import kubebin

    t0 = time.monotonic()
    try:
        paths = kubebin.ensure(args.components or kubebin.ALL)
    except kubebin.KubebinError as e:
        return _err(str(e))
    if set(paths) & set(kubebin.CHART_CHECK):  # kubeconform's schemas, from the pinned modules (kubeschemas)
        from . import kubeschemas

        try:
            paths["kubeconform schemas"] = kubeschemas.ensure()
        except kubebin.KubebinError as e:
            return _err(str(e))
    for name, path in paths.items():
        print(f"{name:<25} {path}")
    print(f"ready in {time.monotonic() - t0:.2f} s ({', '.join(f'{k} {v}' for k, v in kubebin.versions().items())})")
    if set(paths) & set(kubebin.NODE):
        try:
            kubebin.check_node()
        except kubebin.KubebinError as e:  # building needs none of this: a note, not a failure
            print(f"sipfleet cluster: note: built, but this machine cannot run a node: {e}", file=sys.stderr)
    return 0


def _up(args: argparse.Namespace) -> int:
    from . import kubebin
    from .cluster import ClusterError, LocalCluster

    c = LocalCluster(args.name)
    t0 = time.monotonic()
    was_running = c.running() and not args.fresh
    try:
        c.up(fresh=args.fresh, timeout=args.timeout)
    except (ClusterError, kubebin.KubebinError) as e:
        return _err(str(e))
    except KeyboardInterrupt:
        print("sipfleet cluster: interrupted; stopped what was started", file=sys.stderr)
        return 130
    what = "already running" if was_running else f"ready in {time.monotonic() - t0:.1f} s"
    print(f"cluster {c.name!r} {what}: {c.server}", file=sys.stderr)
    print(f"export KUBECONFIG={c.kubeconfig}", file=sys.stderr)
    return 0


def _down(args: argparse.Namespace) -> int:
    from .cluster import LocalCluster

    c = LocalCluster(args.name)
    if not c.dir.exists():
        print(f"cluster {c.name!r} does not exist ({c.dir})", file=sys.stderr)
        return 0
    problems = c.down(purge=args.purge)
    print(f"cluster {c.name!r} stopped; logs kept in {c.logs_dir}", file=sys.stderr)
    for p in problems:
        print(f"sipfleet cluster: warning: {p}", file=sys.stderr)
    return 0


def _load_images(args: argparse.Namespace) -> int:
    from .cluster import ClusterError, ContainerRuntimeError, LocalCluster
    from .imagebuild.build import build_images

    c = LocalCluster(args.name)
    if not c.running():
        return _err(f"cluster {args.name!r} is not running: run `sipfleet cluster up --name {args.name}` first")
    try:
        built = build_images(args.components or None)
        imported = set(c.load_images([Path(b.archive) for b in built]))
    except (ClusterError, ContainerRuntimeError, OSError) as e:
        return _err(str(e))
    for b in built:
        print(f"{b.name:<28} {b.digest[:19]}  {'imported' if b.archive in imported else 'already there'}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from .cluster import LocalCluster

    c = LocalCluster(args.name)
    st = c.status()
    if args.json:
        print(json.dumps(st, indent=2))
        return 0 if st["running"] else 3
    print(f"cluster:    {st['name']} ({'running' if st['running'] else 'not running'})")
    print(f"state:      {st['stateDir']}")
    print(f"server:     {st['server'] or '-'}  (ready: {'yes' if st['apiserverReady'] else 'no'})")
    print(f"kubeconfig: {st['kubeconfig']}")
    print(f"netns:      {st['netns']}  (node IP {st['nodeIP'] or '-'}, pods {st['podRange'] or '-'}, "
          f"services {st['serviceCIDR'] or '-'})")
    print()
    print(f"{'COMPONENT':<25} {'PID':>8} {'ALIVE':<6} {'RSS MiB':>8}")
    for comp in st["components"]:
        rss = f"{comp['rssKiB'] / 1024:.0f}" if comp["rssKiB"] else "-"
        print(f"{comp['name']:<25} {comp['pid'] or '-':>8} {'yes' if comp['alive'] else 'no':<6} {rss:>8}")
    if st["nodes"]:
        print()
        print(f"{'NODE':<25} {'STATUS':<10} VERSION")
        for n in st["nodes"]:
            print(f"{n['name']:<25} {'Ready' if n['ready'] else 'NotReady':<10} {n['version']}")
    return 0 if st["running"] else 3


def _kubeconfig(args: argparse.Namespace) -> int:
    from .cluster import LocalCluster

    c = LocalCluster(args.name)
    if not c.kubeconfig.exists():
        return _err(f"cluster {args.name!r} has no kubeconfig yet: run `sipfleet cluster up`")
    print(c.kubeconfig)
    return 0


def _logs(args: argparse.Namespace) -> int:
    from .cluster import ClusterError, LocalCluster

    c = LocalCluster(args.name)
    try:
        path = c.container_log(args.pod, args.namespace, args.container, previous=args.previous)
    except ClusterError as e:
        return _err(str(e))
    except Exception as e:  # noqa: BLE001 - kubernetes ApiException etc.: one line
        return _err(f"cannot find pod {args.namespace}/{args.pod}: {getattr(e, 'reason', None) or e}")
    try:
        with open(path, "rb") as f:
            sys.stdout.buffer.write(f.read())
    except FileNotFoundError:
        return _err(f"no log at {path}")
    return 0


def _kubectl(args: argparse.Namespace) -> int:
    from . import kubebin
    from .cluster import run_kubectl

    rest = list(args.args)
    if rest and rest[0] == "--":
        rest = rest[1:]
    try:
        return run_kubectl(args.name, rest)
    except kubebin.KubebinError as e:
        return _err(str(e))
