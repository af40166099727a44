"""What the demo prints: numbered steps with the elapsed time, indented lines and blocks, the failure line; and
the time formats its tables use. Nothing else in the demo writes to stdout."""

from __future__ import annotations

import datetime as _dt
import time

STEPS = 6


def utc(t: float) -> str:
    """``HH:MM:SS.mmm`` (UTC) of an epoch time."""
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).strftime("%H:%M:%S.%f")[:-3]


def parse_time(s: str | None) -> float | None:
    """An RFC 3339 time (``...Z`` or with an offset) as an epoch time; None when absent or unreadable."""
    if not s:
        return None
    try:
        return _dt.datetime.fromisoformat(str(s).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class Output:
    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def _print(self, text: str = "") -> None:
        print(text, flush=True)

    def title(self, text: str) -> None:
        self._print(text)

    def step(self, n: int, title: str) -> None:
        self._print()
        self._print(f"[{n}/{STEPS}] {title}   (+{self.elapsed():.1f} s)")

    def line(self, text: str = "") -> None:
        self._print(f"  {text}" if text else "")

    def block(self, text: str, indent: str = "    ") -> None:
        for ln in text.rstrip("\n").splitlines():
            self._print(indent + ln)

    def fail(self, text: str) -> None:
        self._print()
        self._print(f"DEMO FAILED after {self.elapsed():.1f} s: {text}")

    def elapsed(self) -> float:
        return time.monotonic() - self.t0
