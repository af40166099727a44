"""``sipfleet-agent``: standalone (``run --config FILE``) and Kubernetes (``cluster``) modes.

Both modes run the same :class:`~sipfleet_agent.supervisor.runtime.Supervisor` (no pjsua2 in this process), which
runs up to 8 pjsua2 worker processes (:mod:`sipfleet_agent.worker`); they differ only in their edges: where the
assignment and credentials come from and where status goes (stdout JSON lines vs. SipAccount status and Events).

Exit codes: 0 stopped on request (SIGTERM/SIGINT, after every worker un-REGISTERed), 1 fatal error (the
supervisor itself failed), 2 bad configuration. A routeMode prevent route change no longer exits: the account
moves to a worker started with the new global outbound proxy.
"""

from __future__ import annotations

import argparse
import os
import sys

from . import __version__


def cmd_run(args: argparse.Namespace) -> int:
    from .supervisor.standalone import run

    return run(args)


def cmd_cluster(args: argparse.Namespace) -> int:
    from .k8s.edge import run_cluster

    return run_cluster(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sipfleet-agent", description="pjsua2 SIP endpoint with measured route and drift repair")
    p.add_argument("--version", action="version", version=f"sipfleet-agent {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="standalone: read an AgentAssignment file, print status JSON lines on stdout")
    r.add_argument("--config", required=True, help="AgentAssignment as YAML or JSON (credentials via passwordFile)")
    r.add_argument("--self-heal", action="store_true", help="re-create drifted accounts without being asked")
    r.add_argument("--expires-override", type=int, default=None, metavar="SECONDS",
                   help="lab/test aid: register with this expiry instead of registration.expiresSeconds "
                        "(whose API minimum is 60); not available in cluster mode")
    r.add_argument("--debug-hooks", action="store_true",
                   help="enable POST /debug/{ip-change,refresh,reregister,repair,drift}[?account=NAME] on the HTTP address "
                   "(drift: setRegistration(False) then (True), the path that drifts in routeMode account)")
    r.add_argument("--log-level", default=os.environ.get("SIPFLEET_AGENT_LOG_LEVEL") or os.environ.get("SIPFLEET_LOG_LEVEL", "INFO"))
    r.add_argument("--pjsip-log-level", type=int, default=2, help="forward pjsip log lines up to this level (max 4)")
    r.set_defaults(func=cmd_run)
    c = sub.add_parser("cluster", help="in a pod: watch the assignment ConfigMap, patch SipAccount status")
    c.add_argument("--self-heal", action="store_true")
    c.add_argument("--debug-hooks", action="store_true")
    c.add_argument("--log-level", default=os.environ.get("SIPFLEET_AGENT_LOG_LEVEL") or os.environ.get("SIPFLEET_LOG_LEVEL", "INFO"))
    c.add_argument("--pjsip-log-level", type=int, default=2, help="forward pjsip log lines up to this level (max 4)")
    c.set_defaults(func=cmd_cluster)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cmd == "run" and args.expires_override is not None and args.expires_override < 1:
        print("--expires-override must be >= 1", file=sys.stderr)
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
