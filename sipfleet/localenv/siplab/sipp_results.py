"""What one SIPp run produced, read from its run directory into a :class:`SippResult`.

SIPp writes, under the run dir, ``<scenario>_<pid>_logs.log`` (the scenario's ``<log>`` lines, where the lab's
scenarios write ``FINAL <call-id> <code>``), ``_errors.log`` (-trace_err), ``_rtt.csv`` (-trace_rtt) and
``_.csv`` (-trace_stat). The parsers are pure; :func:`collect` reads the files.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from .model import SippResult

_SIPP_EVENT_SPLIT = re.compile(r"\n(?=\d{4}-\d{2}-\d{2}\t)")


def parse_sipp_errors(text: str, final: dict[str, int | str]) -> list[str]:
    """SIPp's -trace_err events, one string each; fills ``final`` for calls it has no code for yet."""
    events = [e.strip() for e in _SIPP_EVENT_SPLIT.split(text) if e.strip()]
    events = [e for e in events if not e.startswith("The following events occurred")]
    for ev in events:
        m = re.search(r"Call-Id '([^']+)'.*?received 'SIP/2\.0 (\d{3})", ev, re.S)
        if m:
            final.setdefault(m.group(1), int(m.group(2)))
            continue
        m = re.search(r"Call-Id[:]? '?([^',\s]+)'?", ev)
        if m and m.group(1) not in final:
            low = ev.lower()
            if "timeout" in low or "retrans" in low:
                final[m.group(1)] = "timeout"
            else:
                final[m.group(1)] = "error:" + " ".join(ev.split())[:160]
    return events[:200]


def parse_final_codes(log_lines: list[str]) -> dict[str, int | str]:
    final: dict[str, int | str] = {}
    for line in log_lines:
        m = re.search(r"FINAL (\S+) (\d{3})", line)
        if m:
            final[m.group(1)] = int(m.group(2))
    return final


def parse_rtts(text: str) -> tuple[list[float], dict[str, list[float]]]:
    """(all response times, response times per rtd number) from a -trace_rtt CSV, in ms."""
    rtts: list[float] = []
    by_rtd: dict[str, list[float]] = {}
    for row in csv.reader(text.splitlines(), delimiter=";"):
        if len(row) >= 2:
            try:
                v = float(row[1])
            except ValueError:
                continue
            rtts.append(v)
            by_rtd.setdefault(row[2].strip() if len(row) > 2 else "1", []).append(v)
    return rtts, by_rtd


def parse_stats(text: str) -> dict[str, str]:
    """The last row of a -trace_stat CSV, by column name."""
    rows = list(csv.reader(text.splitlines(), delimiter=";"))
    if len(rows) < 2:
        return {}
    return {k: v for k, v in zip(rows[0], rows[-1]) if k}


def _stat_int(stats: dict[str, str], name: str) -> int | None:
    if name in stats:
        try:
            return int(float(stats[name]))
        except ValueError:
            return None
    return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


def collect(
    run_dir: Path, scen: Path, pid: int, returncode: int | None, calls: int, target: str, killed: bool, duration: float
) -> SippResult:
    stem = scen.stem
    logs = _read(run_dir / f"{stem}_{pid}_logs.log")
    all_lines = logs.splitlines() if logs is not None else []
    final = parse_final_codes(all_lines)
    err = _read(run_dir / f"{stem}_{pid}_errors.log")
    errors = parse_sipp_errors(err, final) if err is not None else []
    rtt = _read(run_dir / f"{stem}_{pid}_rtt.csv")
    rtts, by_rtd = parse_rtts(rtt) if rtt is not None else ([], {})
    st = run_dir / f"{stem}_{pid}_.csv"
    if not st.exists():
        cands = [c for c in sorted(run_dir.glob(f"{stem}_{pid}*.csv")) if not c.name.endswith("_rtt.csv")]
        st = cands[0] if cands else st
    stats = parse_stats(_read(st) or "")
    ok = _stat_int(stats, "SuccessfulCall(C)")
    bad = _stat_int(stats, "FailedCall(C)")
    if ok is None:
        ok = sum(1 for c in final.values() if isinstance(c, int) and 200 <= c < 300)
    if bad is None:
        bad = max(0, len(final) - ok)
    try:
        out = (run_dir / "stdout.txt").read_bytes()[-4000:].decode(errors="replace")
    except OSError:
        out = ""
    return SippResult(
        returncode=returncode if returncode is not None else -9,
        scenario=stem,
        target=target,
        calls=calls,
        successful=ok,
        failed=bad,
        final_codes=final,
        rtts_ms=rtts,
        timed_out=killed,
        duration_s=duration,
        run_dir=str(run_dir),
        stats=stats,
        errors=errors[:200],
        stdout_tail=out,
        logs=all_lines[:10000],
        rtts_by_rtd=by_rtd,
    )
