"""Pure filter of an agent pod's log for one account (``kubectl sipfleet logs NAME``).

The agent logs one JSON object per line (agent/sipfleet_agent/logs.py: ``time``, ``level``, ``logger``, ``msg`` and
extra fields; the per-account ones carry ``account``). A line is the account's when its ``account`` field (or an
``accounts`` list) names it, or its message names ``<namespace>/<name>``. Lines that are not JSON are kept only
when they contain ``<namespace>/<name>``.
"""

from __future__ import annotations

import json

BASE_FIELDS = ("time", "ts", "level", "logger", "msg")


def parse(line: str) -> dict | None:
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def names_account(doc: dict | None, raw: str, namespace: str, name: str) -> bool:
    qualified = f"{namespace}/{name}"
    if doc is None:
        return qualified in raw
    if doc.get("account") == name and doc.get("namespace") in (None, namespace):
        return True
    accounts = doc.get("accounts")
    if isinstance(accounts, list) and name in accounts:
        return True
    return qualified in str(doc.get("msg") or "")


def filter_lines(text: str, namespace: str, name: str) -> list[tuple[str, dict | None]]:
    """(raw line, parsed JSON or None) for every line of ``text`` that names the account, in order."""
    out = []
    for raw in text.splitlines():
        if not raw.strip():
            continue
        doc = parse(raw)
        if names_account(doc, raw, namespace, name):
            out.append((raw, doc))
    return out


def human(raw: str, doc: dict | None, pod: str | None = None) -> str:
    """``time level msg key=value ...`` (the account field left out: every line is that account's)."""
    if doc is None:
        return raw
    extras = " ".join(f"{k}={v}" for k, v in doc.items() if k not in BASE_FIELDS and k != "account")
    parts = [str(doc.get("time") or doc.get("ts") or "-"), f"{str(doc.get('level') or '-'):7}"]
    if pod:
        parts.append(pod)
    parts.append(str(doc.get("msg") or ""))
    if extras:
        parts.append(extras)
    return " ".join(parts)
