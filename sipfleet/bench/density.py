"""``sipfleet bench density -n N``: N accounts through the operator on one machine, and what they cost.

On the fleet benchmarks' environment (local cluster, lab, an operator process watching only the benchmark's
namespace: ``--cluster``, ``--keep``; ``--accounts-per-agent`` is the operator's accountsPerAgent), N accounts of
one route are created at once (registration expiry ``--expires``, so refreshes happen while measuring), then:

* accounts Registered, and the time from the first create to the last one Registered;
* agent pods, their workers as the assignments plan them (``models.workers_needed``) and as the pods run them
  (processes in each pod's cgroup, less the pause container);
* agent pod memory per account from the kubelet's summary API (working set) and the pods' memory cgroups
  (usage), not process RSS (which counts shared pages once per process);
* after ``--settle`` seconds, a steady window of ``--window`` seconds (default: the expiry, so every account
  refreshes in it): agent CPU (the pods' cpuacct cgroups, in cores), the REGISTERs R saw (the refreshes), API writes per second (the apiserver's apiserver_request_total,
  all clients, and the operator's own write counter), the operator's RSS.

Printed, never asserted. Every process is stopped by PID (the fleet benchmarks' Env).
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import ExitStack

from sipfleet.api import models as m

from .fleet import Env, _op_writes, _registered
from .podmem import MiB, pod_cgroup_dir, pod_cgroup_memory, summary_memory

AGENT_PODS = "app.kubernetes.io/component=agent"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("density", help="N accounts on one machine: Registered, pods, workers, memory, cpu, writes",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--accounts", "-n", type=int, default=1000)
    p.add_argument("--accounts-per-agent", type=int, default=None,
                   help="the operator's accountsPerAgent (default: the operator's, 64)")
    p.add_argument("--expires", type=int, default=300,
                   help="registration expiry in seconds (default: 300, the product's; 60 is the minimum)")
    p.add_argument("--settle", type=float, default=20, help="seconds after all Registered before measuring")
    p.add_argument("--window", type=float, default=None,
                   help="steady-state window in seconds (default: --expires, so every account refreshes in it)")
    p.add_argument("--cluster", default="bench")
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--keep", action="store_true")
    p.set_defaults(func=_run)


def _pods(env: Env) -> list:
    return [p for p in env.core.list_namespaced_pod(env.ns, label_selector=AGENT_PODS).items
            if not p.metadata.deletion_timestamp and p.status.phase == "Running"]


def planned_workers(env: Env) -> dict[str, int]:
    """Workers per agent as its assignment plans them."""
    out = {}
    for cm in env.core.list_namespaced_config_map(env.ns, label_selector=AGENT_PODS).items:
        assignment = m.AgentAssignment.model_validate_json(cm.data["assignment.json"])
        out[cm.metadata.name] = m.workers_needed(list(assignment.accounts))
    return out


def pod_processes(cluster_name: str, pod_uid: str) -> int:
    """Processes in the pod's cgroups, without the pause container's."""
    d = pod_cgroup_dir(cluster_name, pod_uid, "pids")
    n = 0
    for procs in d.rglob("cgroup.procs"):
        for pid in procs.read_text().split():
            try:
                if open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[0].endswith(b"/pause"):
                    continue
            except OSError:
                continue
            n += 1
    return n


def cpu_ns(cluster_name: str, pod_uid: str) -> int:
    return int((pod_cgroup_dir(cluster_name, pod_uid, "cpuacct") / "cpuacct.usage").read_text())


def _run(args: argparse.Namespace) -> int:
    if args.window is None:
        args.window = float(args.expires)
    if args.accounts_per_agent is not None:
        args.operator_env = {"SIPFLEET_ACCOUNTS_PER_AGENT": str(args.accounts_per_agent)}
    with ExitStack() as stack:
        env = Env(args, stack)
        accs = env.create_accounts(args.accounts, "dn", registration={"expiresSeconds": args.expires})
        names = {n for n, _ in accs}
        seen = env.wait_all(names, _registered, "Registered", args.timeout)
        t_all = round(max(seen.values()) - env.t_apply, 2) if seen else None
        print(f"{len(seen)}/{len(names)} Registered, the last {t_all} s after the first create", flush=True)

        time.sleep(args.settle)
        pods = _pods(env)
        uids = {p.metadata.name: p.metadata.uid for p in pods}
        workers = planned_workers(env)
        try:
            processes: dict[str, int] | None = {n: pod_processes(env.cluster.name, uid) for n, uid in uids.items()}
        except (OSError, RuntimeError) as e:  # informative only
            print(f"# could not count the pods' processes: {e}", flush=True)
            processes = None
        ws = sum(summary_memory(env.cluster, env.ns, n)["workingSet"] for n in uids)
        cg = sum(pod_cgroup_memory(env.cluster.name, uid)["usage"] for uid in uids.values())

        print(f"steady window of {args.window:.0f} s (registrations expire after {args.expires} s) ...", flush=True)
        cpu0 = {n: cpu_ns(env.cluster.name, uid) for n, uid in uids.items()}
        api0, op0 = env.apiserver_writes(), _op_writes(env)
        t0, w0 = time.monotonic(), time.time()
        time.sleep(args.window)
        elapsed = time.monotonic() - t0
        cpu1 = {n: cpu_ns(env.cluster.name, uid) for n, uid in uids.items()}
        api1, op_delta = env.apiserver_writes(), _op_writes(env, op0)
        refreshes = len(env.lab.wire(since=w0, method="REGISTER", node="R"))
        still = sum(1 for o in env.accounts() if _registered(o))
        api_delta = {k: v - api0.get(k, 0.0) for k, v in api1.items() if v - api0.get(k, 0.0) > 0
                     and not k.startswith("DELETE")}  # DELETE: other namespaces' deletecollection sweeps
        cores = sum(cpu1[n] - cpu0[n] for n in uids) / 1e9 / elapsed
        n_reg = max(1, len(seen))
        result = {
            "benchmark": "density", "accounts": len(names), "registered": len(seen),
            "registered_after_window": still,
            "all_registered_after_first_create_s": t_all,
            "accounts_per_agent": args.accounts_per_agent or m.MAX_ACCOUNTS_PER_AGENT,
            "agent_pods": len(pods), "workers_planned": sum(workers.values()),
            "agent_processes_in_pods": sum(processes.values()) if processes is not None else None,
            "pod_working_set_mib": round(ws / MiB, 1), "pod_cgroup_usage_mib": round(cg / MiB, 1),
            "pod_memory_per_account_mib_working_set": round(ws / MiB / n_reg, 2),
            "pod_memory_per_account_mib_cgroup": round(cg / MiB / n_reg, 2),
            "agent_cpu_cores_steady": round(cores, 4),
            "agent_cpu_millicores_per_account": round(cores * 1000 / n_reg, 3),
            "register_requests_at_R_in_window": refreshes,
            "api_writes_per_s_all_clients": round(sum(api_delta.values()) / elapsed, 3),
            "api_writes_per_s_by_verb_resource": {k: round(v / elapsed, 3) for k, v in sorted(api_delta.items())},
            "operator_writes_per_s": round(sum(op_delta.values()) / elapsed, 3),
            "operator_rss_mib": round((env.operator.rss_bytes() or 0) / MiB, 1),
            "window_s": round(elapsed, 1),
        }
        print(f"{'Registered':>28}: {len(seen)}/{len(names)} (all within {t_all} s of the first create)")
        print(f"{'agent pods / workers':>28}: {len(pods)} / {sum(workers.values())} planned, "
              f"{result['agent_processes_in_pods']} agent processes running")
        print(f"{'pod memory per account':>28}: {result['pod_memory_per_account_mib_working_set']} MiB working set, "
              f"{result['pod_memory_per_account_mib_cgroup']} MiB cgroup usage")
        print(f"{'agent cpu (steady)':>28}: {cores * 1000:.1f} millicores for {refreshes} REGISTERs at R in "
              f"{elapsed:.0f} s")
        print(f"{'API writes per second':>28}: {result['api_writes_per_s_all_clients']} (all clients), "
              f"{result['operator_writes_per_s']} by the operator")
        print(f"{'operator RSS':>28}: {result['operator_rss_mib']} MiB")
        print(json.dumps(result), flush=True)
        return 0 if len(seen) == len(names) else 1
