"""``sipfleet-agent``: standalone (``run --config FILE``) and Kubernetes (``cluster``) modes.

Both modes drive the same :class:`~sipfleet_agent.engine.Agent`; they differ only in where the
assignment and credentials come from and where status goes (stdout JSON lines vs. SipAccount status).

Exit codes: 0 stopped on request (SIGTERM/SIGINT), 1 fatal error, 2 bad configuration,
3 restart required (``routeMode: prevent`` route change: the global outbound proxy is fixed for the
life of the pjsua Endpoint, so the process exits and is started again - by Kubernetes in cluster
mode, by whoever runs it in standalone mode - with the new route).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import TextIO

from . import __version__, logs
from .config import ConfigError, ResolvedAccount, file_credentials, load_assignment_file
from .engine import EXIT_RESTART, Agent, AgentError, RestartRequired
from .httpserver import serve

LOG = logging.getLogger("sipfleet_agent")


def claim_stdout() -> TextIO:
    """Keep the real stdout for status lines only; fd 1 goes to stderr (pjlib prints there before libInit)."""
    sys.stdout.flush()
    fd = os.dup(1)
    os.dup2(2, 1)
    out = os.fdopen(fd, "w", buffering=1)
    sys.stdout = sys.stderr
    return out


def install_signals(agent: Agent, on_term=None) -> None:
    def term(signum, frame):  # noqa: ANN001
        LOG.info("signal %s: stopping", signal.Signals(signum).name)
        agent.request_stop(0)
        if on_term:
            on_term()

    def usr1(signum, frame):  # noqa: ANN001
        agent.request_repair(None, trigger="user")

    def usr2(signum, frame):  # noqa: ANN001
        agent.request_ip_change()

    signal.signal(signal.SIGTERM, term)
    signal.signal(signal.SIGINT, term)
    signal.signal(signal.SIGUSR1, usr1)
    signal.signal(signal.SIGUSR2, usr2)


def cmd_run(args: argparse.Namespace) -> int:
    out = claim_stdout()
    logs.setup(args.log_level)
    cfg_path = Path(args.config).resolve()
    try:
        assignment = load_assignment_file(cfg_path)
        resolved = [ResolvedAccount(a, file_credentials(a, cfg_path.parent), args.expires_override) for a in assignment.accounts]
    except ConfigError as e:
        LOG.error("%s", e)
        return 2
    lock = threading.Lock()

    def sink(key, name, doc):  # noqa: ANN001
        line = json.dumps({"account": name, "status": doc}, separators=(",", ":"))
        with lock:
            out.write(line + "\n")
            out.flush()

    agent = Agent(assignment.settings, sink, name=assignment.agent, pod=os.environ.get("POD_NAME") or socket.gethostname(),
                  self_heal=args.self_heal)
    agent.pjsip_log_level = args.pjsip_log_level
    install_signals(agent)
    try:
        http = serve(agent, assignment.settings.http_address, assignment.settings.http_port, args.debug_hooks)
    except OSError as e:
        LOG.error("cannot bind HTTP on %s:%s: %s", assignment.settings.http_address, assignment.settings.http_port, e)
        return 1
    logs.log(LOG, logging.INFO, "agent starting", version=__version__, config=str(cfg_path),
             http=f"{http.server_address[0]}:{http.server_address[1]}", accounts=len(resolved),
             self_heal=agent.self_heal, expires_override=args.expires_override)
    try:
        agent.start(resolved)
    except RestartRequired:
        agent.wait(30)
        return EXIT_RESTART
    except (AgentError, ValueError) as e:
        LOG.error("start failed: %s", e)
        agent.request_stop(1)
        agent.wait(30)
        return 1
    mtime = _mtime(cfg_path)
    settings_json = assignment.settings.model_dump_json()
    while not agent.wait(1.0):
        m = _mtime(cfg_path)
        if m == mtime:
            continue
        mtime = m
        try:
            new = load_assignment_file(cfg_path)
            res = [ResolvedAccount(a, file_credentials(a, cfg_path.parent), args.expires_override) for a in new.accounts]
        except ConfigError as e:
            LOG.error("config change ignored: %s", e)
            continue
        if new.settings.model_dump_json() != settings_json:
            LOG.warning("settings changes need a restart; applying account changes only")
        logs.log(LOG, logging.INFO, "config changed: applying", accounts=len(res))
        try:
            agent.apply(res).result(30)
        except RestartRequired:
            pass
        except Exception as e:  # noqa: BLE001
            LOG.error("applying config failed: %s", e)
    http.shutdown()
    logs.log(LOG, logging.INFO, "agent exited", exit_code=agent.exit_code)
    return agent.exit_code


def _mtime(p: Path) -> float | None:
    try:
        st = p.stat()
        return st.st_mtime_ns
    except OSError:
        return None


def cmd_cluster(args: argparse.Namespace) -> int:
    claim_stdout()
    logs.setup(args.log_level)
    from .cluster import run_cluster

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
                   help="enable POST /debug/{ip-change,refresh,reregister,repair}[?account=NAME] on the HTTP address")
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
