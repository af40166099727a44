"""Pure formatting: times, durations, sizes, percentiles and aligned tables (colour only when asked for).

Nothing here reads a clock or a terminal: ``now`` and ``colour`` are passed in.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from typing import Iterable, Sequence

_COLOURS = {"red": "31", "green": "32", "yellow": "33", "blue": "34", "dim": "2", "bold": "1"}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def parse_time(s: str | None) -> datetime | None:
    """An RFC 3339 time from the API (``Z``, offsets, with or without fractions) as an aware datetime."""
    if not s or not isinstance(s, str):
        return None
    try:
        t = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def iso(t: datetime | None) -> str | None:
    if t is None:
        return None
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def clock(t: datetime | None) -> str:
    """``2026-12-02 04:30:07.123`` (UTC), for timelines."""
    if t is None:
        return "-"
    t = t.astimezone(timezone.utc)
    return t.strftime("%Y-%m-%d %H:%M:%S.") + f"{t.microsecond // 1000:03d}"


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(s: str) -> float:
    """``90s``, ``15m``, ``1h``, ``2d``, ``1h30m`` or plain seconds -> seconds. Raises ValueError."""
    s = s.strip()
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return float(s)
    parts = re.findall(r"(\d+(?:\.\d+)?)([smhd])", s)
    if not parts or "".join(n + u for n, u in parts) != s:
        raise ValueError(f"not a duration: {s!r} (use e.g. 90s, 15m, 1h, 2d)")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def age(t: datetime | None, now: datetime) -> str:
    """kubectl-style age: 45s, 12m, 3h, 2d (``-`` when unknown, ``0s`` for the future)."""
    if t is None:
        return "-"
    sec = max(0, int((now - t).total_seconds()))
    if sec < 120:
        return f"{sec}s"
    if sec < 2 * 3600:
        return f"{sec // 60}m"
    if sec < 2 * 86400:
        return f"{sec // 3600}h"
    return f"{sec // 86400}d"


def ms(v: float | None) -> str:
    if v is None:
        return "-"
    if v >= 10000:
        return f"{v / 1000:.1f} s"
    return f"{v:.0f} ms"


def size(b: int | float | None) -> str:
    """Mi/Gi; ``-`` when not measured (yet)."""
    if b is None:
        return "-"
    if b >= 1 << 30:
        return f"{b / (1 << 30):.1f}Gi"
    return f"{b / (1 << 20):.0f}Mi"


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (the smallest value with at least p% of the values at or below it)."""
    if not values:
        return None
    v = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(v)))
    return v[min(rank, len(v)) - 1]


def paint(text: str, colour: str | None, enabled: bool) -> str:
    if not enabled or not colour or colour not in _COLOURS:
        return text
    return f"\x1b[{_COLOURS[colour]}m{text}\x1b[0m"


def visible_len(s: str) -> int:
    return len(_ANSI.sub("", s))


def table(headers: Sequence[str], rows: Iterable[Sequence], colour: bool = False, indent: str = "") -> str:
    """Aligned columns, kubectl style (three spaces apart, no borders). A cell is a string or
    ``(text, colour)``; colour is applied only when ``colour`` is true, and never changes the alignment."""
    cells = [[_cell(c) for c in r] for r in rows]
    widths = [len(h) for h in headers]
    for r in cells:
        for i, (text, _) in enumerate(r):
            widths[i] = max(widths[i], len(text))
    out = [indent + "   ".join(h.ljust(widths[i]) for i, h in enumerate(headers)).rstrip()]
    for r in cells:
        parts = []
        for i, (text, col) in enumerate(r):
            pad = " " * (widths[i] - len(text)) if i < len(r) - 1 else ""
            parts.append(paint(text, col, colour) + pad)
        out.append(indent + "   ".join(parts).rstrip())
    return "\n".join(out)


def _cell(c) -> tuple[str, str | None]:
    if isinstance(c, tuple):
        return (str(c[0]), c[1])
    return ("-" if c is None else str(c), None)


def status_colour(status: str | None, good: str = "True") -> str | None:
    """Colour of a condition status: good green, Unknown yellow, anything else red."""
    if status == good:
        return "green"
    if status in (None, "Unknown"):
        return "yellow"
    return "red"
