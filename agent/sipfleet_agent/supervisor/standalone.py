"""Standalone mode's edges: the assignment from a file (re-read when its mtime changes), credentials from files,
status as one JSON line per change on stdout (``{"account": NAME, "status": DOC}``), events as log lines.

Everything else is the shared :class:`~sipfleet_agent.supervisor.runtime.Supervisor`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import threading
from pathlib import Path
from typing import TextIO

from .. import __version__, logs
from ..config import ConfigError, ResolvedAccount, file_credentials, load_assignment_file
from ..tlsmaterial import file_material
from ..httpserver import serve
from .procenv import claim_stdout, install_signals
from .runtime import Supervisor

LOG = logging.getLogger("sipfleet_agent")


class StdoutEdge:
    def __init__(self, out: TextIO):
        self.out = out
        self.lock = threading.Lock()

    def status(self, key: tuple, name: str, doc: dict) -> None:
        line = json.dumps({"account": name, "status": doc}, separators=(",", ":"))
        with self.lock:
            self.out.write(line + "\n")
            self.out.flush()

    def event(self, key: tuple, name: str, type_: str, reason: str, message: str, count: int = 1) -> None:
        logs.log(LOG, logging.WARNING if type_ == "Warning" else logging.INFO, message, event=reason, account=name,
                 count=count)


def _resolve(path: Path, expires_override: int | None):  # noqa: ANN202
    assignment = load_assignment_file(path)
    return assignment, [ResolvedAccount(a, file_credentials(a, path.parent), expires_override,
                                        file_material(a, path.parent)) for a in assignment.accounts]


def _mtime(p: Path) -> int | None:
    try:
        return p.stat().st_mtime_ns
    except OSError:
        return None


def run(args: argparse.Namespace) -> int:
    out = claim_stdout()
    logs.setup(args.log_level)
    cfg_path = Path(args.config).resolve()
    try:
        assignment, resolved = _resolve(cfg_path, args.expires_override)
    except ConfigError as e:
        LOG.error("%s", e)
        return 2
    settings = assignment.settings
    sup = Supervisor(settings, StdoutEdge(out), name=assignment.agent,
                     pod=os.environ.get("POD_NAME") or socket.gethostname(),
                     self_heal=args.self_heal or settings.self_heal, pjsip_log_level=args.pjsip_log_level,
                     log_level=args.log_level)
    install_signals(sup)
    try:
        http = serve(sup, settings.http_address, settings.http_port, args.debug_hooks)
    except OSError as e:
        LOG.error("cannot bind HTTP on %s:%s: %s", settings.http_address, settings.http_port, e)
        return 1
    logs.log(LOG, logging.INFO, "agent starting", version=__version__, config=str(cfg_path),
             http=f"{http.server_address[0]}:{http.server_address[1]}", accounts=len(resolved),
             self_heal=sup.self_heal, expires_override=args.expires_override)
    sup.start(resolved)
    mtime = _mtime(cfg_path)
    settings_json = settings.model_dump_json()
    while not sup.wait(1.0):
        m = _mtime(cfg_path)
        if m == mtime:
            continue
        mtime = m
        try:
            new, res = _resolve(cfg_path, args.expires_override)
        except ConfigError as e:
            LOG.error("config change ignored: %s", e)
            continue
        if new.settings.model_dump_json() != settings_json:
            LOG.warning("settings changes need a restart; applying account changes only")
        logs.log(LOG, logging.INFO, "config changed: applying", accounts=len(res))
        sup.apply(res)
    http.shutdown()
    logs.log(LOG, logging.INFO, "agent exited", exit_code=sup.exit_code)
    return sup.exit_code
