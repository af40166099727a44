"""Start and stop local processes by PID, safely: the one process helper of the local environment, the
benchmarks and the demo (start in a new session, optionally die with the parent, stop by PID with a start-time
check, free ports).

A process is identified by ``(pid, start_time)``: ``start_time`` is field 22 of ``/proc/<pid>/stat`` (clock ticks
since boot), so a PID the kernel has since handed to another process is never signalled. Every process is
started in its own session (``start_new_session=True``), which makes it the leader of its own process group:
stopping it signals that group, so helpers it forked without a new session go with it.

Records are plain dicts (JSON-ready) so any part of sipfleet can write them to a ``pids.json`` and any other
part can stop them later, from another Python process.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

_PR_SET_PDEATHSIG = 1


@dataclass
class ProcRecord:
    name: str
    pid: int
    start_time: int
    cmd: list[str] = field(default_factory=list)
    log: str | None = None

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping) -> "ProcRecord":
        return cls(
            name=str(data.get("name", "?")),
            pid=int(data["pid"]),
            start_time=int(data.get("start_time") or data.get("startTime") or 0),
            cmd=list(data.get("cmd") or []),
            log=data.get("log"),
        )


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError, OSError):
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    rest = raw[raw.rindex(")") + 2 :].split()
    return rest  # rest[0] is field 3 (state)


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if there is no such process."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return int(fields[19])  # field 22


def _state(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return None if fields is None else fields[0]


def is_alive(rec: ProcRecord) -> bool:
    """True when the recorded process (same PID and same start time) is running and not a zombie.

    Never reaps: a zombie child keeps its exit status for its ``Popen`` owner."""
    st = start_time(rec.pid)
    if st is None or (rec.start_time and st != rec.start_time):
        return False
    return _state(rec.pid) not in (None, "Z", "X")


def rss_kib(pid: int) -> int | None:
    """Resident set size (VmRSS) in KiB, or None."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [p.decode(errors="replace") for p in raw.split(b"\0") if p]


def all_pids() -> Iterable[int]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except Exception:  # noqa: BLE001 - best effort only
        pass


def spawn(
    name: str,
    cmd: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    die_with_parent: bool = False,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.STDOUT,
    text: bool = False,
) -> tuple[ProcRecord, subprocess.Popen]:
    """Start ``cmd`` in a new session (so stopping it signals its whole process group) with the given stdout and
    stderr (``subprocess.PIPE`` to read them); see :func:`start` for ``die_with_parent``."""
    proc = subprocess.Popen(
        list(cmd),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        env=dict(env) if env is not None else None,
        cwd=str(cwd) if cwd else None,
        start_new_session=True,
        close_fds=True,
        text=text,
        preexec_fn=_die_with_parent if die_with_parent else None,
    )
    return ProcRecord(name=name, pid=proc.pid, start_time=start_time(proc.pid) or 0, cmd=list(cmd)), proc


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on at ``host`` right now (the kernel's choice)."""
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def start(
    name: str,
    cmd: Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    die_with_parent: bool = False,
) -> tuple[ProcRecord, subprocess.Popen]:
    """Start ``cmd`` in a new session with stdout and stderr appended to ``log_path``.

    ``die_with_parent``: the kernel sends SIGTERM to the process when the thread that started it exits
    (used by the test fixture so a killed pytest leaves nothing behind); leave False for processes that must
    outlive the command that started them (``sipfleet cluster up``).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab", buffering=0) as log:
        log.write(f"\n==== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(cmd)}\n".encode())
        rec, proc = spawn(name, cmd, env=env, cwd=cwd, die_with_parent=die_with_parent, stdout=log)
    rec.log = str(log_path)
    return rec, proc


def _signal(rec: ProcRecord, sig: int) -> None:
    if not is_alive(rec):
        return
    try:
        # Our processes lead their own process group (start_new_session): signal the whole group.
        if os.getpgid(rec.pid) == rec.pid:
            os.killpg(rec.pid, sig)
        else:
            os.kill(rec.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop(records: Sequence[ProcRecord], grace: float = 10.0) -> list[str]:
    """SIGTERM every live record (in the order given), wait up to ``grace`` seconds, then SIGKILL survivors.

    Returns the names of processes that had to be killed.
    """
    live = [r for r in records if is_alive(r)]
    for rec in live:
        _signal(rec, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(is_alive(r) for r in live):
        time.sleep(0.05)
    killed = []
    for rec in live:
        if is_alive(rec):
            killed.append(rec.name)
            _signal(rec, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(is_alive(r) for r in live):
        time.sleep(0.05)
    return killed


def kill_group(rec: ProcRecord) -> None:
    """SIGKILL the recorded process and its process group at once (a crash), if it is still that process."""
    _signal(rec, signal.SIGKILL)


def stop_one(rec: ProcRecord, grace: float = 10.0) -> bool:
    """Stop one process; True if it had to be SIGKILLed."""
    return bool(stop([rec], grace))


def read_records(path: Path) -> list[ProcRecord]:
    """Read a pids.json: a list of records, or an object with a ``processes``/``components``/``pods`` list,
    or a mapping name -> record. Unknown shapes give an empty list."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return records_from(data)


def records_from(data: object) -> list[ProcRecord]:
    out: list[ProcRecord] = []
    if isinstance(data, list):
        for item in data:
            out.extend(records_from(item))
    elif isinstance(data, dict):
        if "pid" in data and isinstance(data.get("pid"), int):
            try:
                out.append(ProcRecord.from_json(data))
            except (KeyError, TypeError, ValueError):
                pass
        else:
            for key, value in data.items():
                if isinstance(value, (dict, list)):
                    sub = records_from(value)
                    for rec in sub:
                        if rec.name == "?":
                            rec.name = str(key)
                    out.extend(sub)
    return out


def write_json_atomic(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
