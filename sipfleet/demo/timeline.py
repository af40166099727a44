"""The timeline table: rows (when, where, what) rendered in time order with the offset from an origin. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from .output import utc


@dataclass(frozen=True)
class Row:
    at: float
    where: str
    what: str


def render(rows: Iterable[Row], origin: float) -> str:
    """``time (UTC)  +s  where  what``, one line per row, oldest first (rows at the same time keep their order)."""
    ordered = sorted(rows, key=lambda r: r.at)
    width = max([len(r.where) for r in ordered] + [5])
    lines = [f"{'time (UTC)':<12}  {'+s':>7}  {'where':<{width}}  what"]
    for r in ordered:
        lines.append(f"{utc(r.at):<12}  {r.at - origin:>7.3f}  {r.where:<{width}}  {r.what}")
    return "\n".join(lines)
