"""The agent's own account of the fault, from its container log (the kubelet's CRI log file, JSON lines): when it
noticed the link go and come back, when it called handleIpChange(), pjsua's answer while a REGISTER was in
flight, and when it measured the drift. :func:`rows` is pure; :func:`read` reads the file."""

from __future__ import annotations

import json
from pathlib import Path

from .output import parse_time
from .timeline import Row

#: agent log message -> (where, what) in the timeline
MESSAGES: dict[str, tuple[str, str]] = {
    "local link lost: handleIpChange when it is back": (
        "agent", "noticed its link down (netlink: eth0 down, no carrier; the IPv4 address stays): waits for it"),
    "local link change detected": ("agent", "noticed its link up again"),
    "local address change detected": ("agent", "noticed an address change"),
    "handleIpChange called": ("agent", "handleIpChange() called"),
    "Previous IP address change handling still in progress": (
        "pjsua", "previous IP change still in progress (its REGISTER is held at R): the registration client is "
                 "rebuilt"),
    "route drift: REGISTER sent off the configured route": (
        "agent", "its transmit log: REGISTER sent off the configured route"),
}


def parse_cri_line(line: str) -> dict | None:
    """The JSON object of one CRI log line (``<time> <stream> <P|F> <text>``), None for anything else."""
    parts = line.rstrip("\n").split(" ", 3)
    if len(parts) < 4 or not parts[3].startswith("{"):
        return None
    try:
        obj = json.loads(parts[3])
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def rows(lines: list[str], since: float, until: float | None = None, account: str | None = None) -> list[Row]:
    """Timeline rows for the agent log lines of :data:`MESSAGES` logged in ``[since, until]`` (lines naming
    another account are left out)."""
    out: list[Row] = []
    for line in lines:
        obj = parse_cri_line(line)
        if obj is None:
            continue
        msg = str(obj.get("msg", ""))
        at = parse_time(obj.get("time"))
        if msg not in MESSAGES or at is None or at < since or (until is not None and at > until):
            continue
        if account is not None and obj.get("account") not in (None, account):
            continue
        where, what = MESSAGES[msg]
        if msg == "handleIpChange called" and obj.get("why"):
            what += f" ({obj['why']})"
        out.append(Row(at, where, what))
    return out


def read(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()
    except OSError:
        return []
