"""``sipfleet bench pod-memory``: the memory of one agent pod hosting N accounts, as the node counts it.

For each N (``--accounts 1,8``): N accounts of one route in a fresh namespace (so one agent pod hosts them), all
Registered, then ``--settle`` seconds of quiet; then the pod's memory from the kubelet's summary API (through the
apiserver: ``/api/v1/nodes/<node>/proxy/stats/summary``: working set, RSS, usage) and from the pod's own memory
cgroup (``memory.usage_in_bytes`` and ``memory.stat``'s total_rss / total_cache), and the agent process' RSS for
comparison (a cgroup counts shared library pages once, a process RSS counts them in every process). Printed, never
asserted. Uses the fleet benchmarks' environment (cluster, lab, operator; ``--cluster``, ``--keep``).
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import ExitStack
from pathlib import Path

from ..localenv import procs
from ..localenv.cluster.configs import NODE_NAME, cgroup_root

MiB = 1024 * 1024


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pod-memory", help="memory of one agent pod hosting N accounts (kubelet summary, cgroup)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--accounts", "-n", default="1,8", help="comma-separated account counts (default: 1,8)")
    p.add_argument("--settle", type=float, default=20, help="seconds of quiet before reading (default: 20)")
    p.add_argument("--cluster", default="bench")
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--keep", action="store_true")
    p.set_defaults(func=_run)


def pod_cgroup_dir(cluster_name: str, pod_uid: str, controller: str = "memory") -> Path:
    """The pod's cgroup directory (v1) in one controller's hierarchy (memory, cpuacct, pids, ...)."""
    base = Path("/sys/fs/cgroup") / controller / cgroup_root(cluster_name).lstrip("/") / "kubepods"
    hits = [d for d in base.rglob(f"pod{pod_uid}") if d.is_dir()]
    if not hits:
        raise RuntimeError(f"no {controller} cgroup for pod {pod_uid} under {base}")
    return hits[0]


def pod_cgroup_memory(cluster_name: str, pod_uid: str) -> dict[str, int]:
    """The pod's memory cgroup (v1): usage and the totals of memory.stat, in bytes."""
    d = pod_cgroup_dir(cluster_name, pod_uid)
    stat = dict(line.split() for line in (d / "memory.stat").read_text().splitlines())
    return {"usage": int((d / "memory.usage_in_bytes").read_text()), "rss": int(stat.get("total_rss", 0)),
            "cache": int(stat.get("total_cache", 0))}


def summary_memory(cluster, namespace: str, pod: str) -> dict[str, int]:
    raw = cluster.kubectl("get", "--raw", f"/api/v1/nodes/{NODE_NAME}/proxy/stats/summary").stdout
    for p in json.loads(raw).get("pods", []):
        if p["podRef"]["namespace"] == namespace and p["podRef"]["name"] == pod:
            mem = p.get("memory") or {}
            return {"workingSet": mem.get("workingSetBytes", 0), "rss": mem.get("rssBytes", 0),
                    "usage": mem.get("usageBytes", 0)}
    raise RuntimeError(f"pod {namespace}/{pod} is not in the kubelet's summary")


def _run(args: argparse.Namespace) -> int:
    from .fleet import Env, _registered

    counts = [int(x) for x in str(args.accounts).split(",") if x.strip()]
    rows = []
    for n in counts:
        with ExitStack() as stack:
            env = Env(args, stack)
            names = {name for name, _user in env.create_accounts(n, f"m{n}x")}
            env.wait_all(names, _registered, "Registered", args.timeout)
            time.sleep(args.settle)
            pods = [p for p in env.core.list_namespaced_pod(env.ns, label_selector="app.kubernetes.io/component=agent").items
                    if not p.metadata.deletion_timestamp]
            if len(pods) != 1:
                print(f"# {n} accounts: expected one agent pod, found {len(pods)}")
                continue
            pod = pods[0]
            summ = summary_memory(env.cluster, env.ns, pod.metadata.name)
            cg = pod_cgroup_memory(env.cluster.name, pod.metadata.uid)
            pid = env.cluster.container_pid(env.ns, pod.metadata.name, "agent")
            rss = (procs.rss_kib(pid) or 0) * 1024
            rows.append((n, summ, cg, rss))
    print(f"{'accounts':>8} {'workingSet':>11} {'summary rss':>12} {'cgroup usage':>13} {'cgroup rss':>11} "
          f"{'cgroup cache':>13} {'process RSS':>12} {'per account (ws)':>17}")
    for n, summ, cg, rss in rows:
        print(f"{n:>8} {summ['workingSet'] / MiB:>9.1f} M {summ['rss'] / MiB:>10.1f} M {cg['usage'] / MiB:>11.1f} M "
              f"{cg['rss'] / MiB:>9.1f} M {cg['cache'] / MiB:>11.1f} M {rss / MiB:>10.1f} M "
              f"{summ['workingSet'] / MiB / n:>15.2f} M")
    return 0 if rows else 1
