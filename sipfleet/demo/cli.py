"""``sipfleet demo``: its options, and the run from step 1 to step 6 with its exits: 0 only when the drift was
seen and repaired (:func:`sipfleet.demo.verdict.judge`), 1 with the reason otherwise, 130 when interrupted.
Whatever happens, a fault in progress is undone, and ``--no-keep`` stops lab and cluster."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal

from .accounts import step_accounts
from .context import DEFAULT_NAME, DEFAULT_NAMESPACE, Demo, DemoError
from .environment import step_environment
from .examples import EXAMPLE_SUBNET, ExampleError, drift_account, parse_accounts_option, render_examples
from .fault import step_fault
from .finish import down, step_finish, teardown
from .follow import step_follow
from .install import step_helm
from .output import Output
from .prometheus import report as prometheus_report
from .prometheus import step_prometheus
from .watcher import StatusWatcher

NEEDS_ROOT = ("sipfleet demo needs root: it runs a real Kubernetes node (containerd, runc, the kubelet) and network "
              "namespaces of its own (run it with sudo, or as root)")


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--down", action="store_true",
                        help="stop the demo's SIP lab and cluster (by PID) and exit")
    parser.add_argument("--keep", action=argparse.BooleanOptionalAction, default=True,
                        help="leave cluster and lab running at the end (default); --no-keep stops them")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds for the whole demo once the binaries are built (default 600)")
    parser.add_argument("--name", default=DEFAULT_NAME, help="cluster and lab name (default demo)")
    parser.add_argument("--lab-slot", type=int, default=None,
                        help="SIP lab slot 1..49: P=10.213.(200+slot).1, R=.2, E=.3 (default: the first free one; "
                             "examples/ are written for slot 1 and rewritten to the lab's)")
    parser.add_argument("--namespace", default=DEFAULT_NAMESPACE,
                        help="namespace of the example SipAccounts (default: default)")
    parser.add_argument("--state-dir", default=None,
                        help="state root (default $SIPFLEET_STATE or ~/.local/state/sipfleet): "
                             "clusters/<name>/ and labs/<name>/ under it")
    parser.add_argument("--accounts", default="all",
                        help="comma-separated example SipAccounts to apply (default all); the routeMode "
                             "account example is always included")
    parser.add_argument("--record", default=None, metavar="FILE",
                        help="write what the verdict was computed from (wire records, status history, events, the "
                             "agent's log rows, the fault) to FILE as JSON")
    parser.add_argument("--with-prometheus", action="store_true",
                        help="also run a real Prometheus (built from the pinned module, on loopback) that scrapes "
                             "the operator and the agents with the chart's alerts, and print what the dashboard's "
                             "queries and the alerts show after the fault")
    parser.set_defaults(func=main)


def _terminated(signum, frame) -> None:  # noqa: ARG001
    raise KeyboardInterrupt(f"signal {signum}")


def main(args: argparse.Namespace) -> int:
    out = Output()
    if os.geteuid() != 0:
        out.title(NEEDS_ROOT)
        return 1
    # SIGTERM like Ctrl-C: the fault is undone (link up, R answering normally) and --no-keep still tears down
    with contextlib.suppress(ValueError):  # not in the main thread
        signal.signal(signal.SIGTERM, _terminated)
    d = Demo(args, out)
    if args.down:
        return down(d)
    try:
        return run(d)
    except (DemoError, ExampleError) as e:
        out.fail(str(e))
        if args.keep and d.cluster.records():
            out.line(f"cluster and lab are left running for a look (export KUBECONFIG={d.cluster.kubeconfig}); "
                     f"stop them with: {d.down_command()}")
        return 1
    except KeyboardInterrupt:
        out.fail("interrupted (a fault in progress is undone: the pod's link up, R answering normally)")
        return 130
    finally:  # a fault in progress undoes itself (siplab.linkfault's finally): link up, R normal
        if not args.keep:
            teardown(d)


def run(d: Demo) -> int:
    wanted = parse_accounts_option(d.args.accounts)
    _, _, secrets = render_examples(EXAMPLE_SUBNET, wanted, d.namespace)
    d.out.title(f"sipfleet demo: cluster {d.cluster.name!r}, SIP lab {d.lab.name!r}, SipAccounts in namespace "
                f"{d.namespace!r}")
    step_environment(d, secrets)
    manifest, accounts, _ = render_examples(d.lab.subnet, wanted, d.namespace)
    step_helm(d)
    step_accounts(d, manifest, accounts)
    prom = step_prometheus(d)
    drift = drift_account(accounts)
    watcher = StatusWatcher(d.cluster, d.namespace, drift["metadata"]["name"])
    watcher.start()
    try:
        d.wait(watcher.started_watching.is_set, 30, f"a watch on sipaccount/{drift['metadata']['name']}")
        target, fault = step_fault(d, drift)
        verdict = step_follow(d, target, fault, watcher)
    finally:
        watcher.stop()
    prometheus_report(d, prom)
    step_finish(d, verdict)
    return 0 if verdict.ok else 1
