"""Step 6 and the way out: the result (``kubectl get sipacc -o wide``, the verdict in one line, the wall time),
how to use what keeps running, ``--no-keep`` (stop lab and cluster at the end) and ``--down`` (stop them now).
Everything is stopped by PID through the lab's and the cluster's own ``down``."""

from __future__ import annotations

import shutil
from pathlib import Path

from .context import RELEASE, RELEASE_NAMESPACE, Demo
from .prometheus import prometheus_dir
from .prometheus import stop as stop_prometheus
from .prometheus import wanted as wanted_prometheus
from .verdict import Verdict


def step_finish(d: Demo, v: Verdict) -> None:
    out = d.out
    out.step(6, "result")
    res = d.kubectl("-n", d.namespace, "get", "sipacc", "-o", "wide", check=False)
    out.line(f"kubectl{d.ns_flag} get sipacc -o wide")
    out.block(res.stdout or res.stderr)
    if v.ok:
        out.line(f"RESULT: drift detected and repaired: {v.method} (trigger {v.trigger}), {v.duration_ms or 0:.0f} ms "
                 "from drift seen to the first REGISTER through P again; both verified on the wire")
    else:
        out.line("RESULT: NOT OK: " + ("drift detected" if v.drifted else "drift NOT detected") + ", "
                 + ("repaired" if v.repaired else "NOT repaired"))
        for p in v.problems:
            out.line(f"  - {p}")
    out.line(f"wall time {out.elapsed():.1f} s")
    out.line()
    if d.args.keep:
        _how_to_use(d)


def _how_to_use(d: Demo) -> None:
    out = d.out
    kubectl = d.cluster.kubectl_path()
    on_path = shutil.which("kubectl")
    out.line("cluster and lab keep running. To use them:")
    out.line(f"  export KUBECONFIG={d.cluster.kubeconfig}")
    if not on_path or Path(on_path).resolve() != Path(kubectl).resolve():
        out.line(f"  export PATH={Path(kubectl).parent}:$PATH    # the kubectl built for this cluster")
    out.line(f"  kubectl{d.ns_flag} get sipacc -o wide")
    out.line(f"  kubectl{d.ns_flag} describe sipacc {d.drift_name}")
    out.line(f"  kubectl{d.ns_flag} get events --field-selector involvedObject.kind=SipAccount")
    out.line(f"  kubectl -n {RELEASE_NAMESPACE} logs deploy/{RELEASE}")
    lab = f"sipfleet lab --name {d.lab.name}" + (f" --state-dir {d.lab.state_dir}" if d.state_root else "")
    out.line(f"  {lab} wire --method REGISTER --last 10   # requests as P, R and E received them")
    out.line(f"  {lab} status")
    if wanted_prometheus(d):
        out.line(f"  Prometheus: {prometheus_dir(d) / 'pids.json'} has its URL (the HTTP API: /api/v1/query?query=...)")
    out.line(f"To stop them (by PID; logs are kept): {d.down_command()}")


def teardown(d: Demo) -> None:
    """--no-keep: stop the lab and the cluster (by PID), whatever happened before."""
    d.out.line("--no-keep: stopping the SIP lab and the cluster")
    if stop_prometheus(d):
        d.out.line("Prometheus stopped")
    try:
        d.lab.down()
    except Exception as e:  # noqa: BLE001 - go on with the cluster
        d.out.line(f"stopping the lab failed: {e}")
    problems = d.cluster.down()
    d.out.line("stopped" + (f" ({'; '.join(problems)})" if problems else ""))


def down(d: Demo) -> int:
    """``sipfleet demo --down``: stop lab and cluster (each only if it runs), keep the logs."""
    out = d.out
    if stop_prometheus(d):
        out.line("Prometheus stopped")
    lab_was = any(n.running for n in d.lab.nodes())
    where = f"{d.lab.subnet}.1-3" if d.lab.slot else "no network"
    d.lab.down()
    out.line(f"SIP lab {d.lab.name!r} ({where}): " + ("stopped, its network removed" if lab_was else "was not running"))
    cl_was = bool(d.cluster.records())
    problems = d.cluster.down()
    out.line(f"cluster {d.cluster.name!r}: " + ("stopped, its netns, mounts and cgroups removed" if cl_was
                                                else "was not running")
             + (f" ({'; '.join(problems)})" if problems else ""))
    if d.record_path.exists():
        d.record(linkDown=None)
    out.line(f"logs kept in {d.cluster.logs_dir} and {d.lab.logs_dir} (the next `sipfleet demo` starts the cluster "
             "with fresh etcd data)")
    return 0 if not problems else 1
