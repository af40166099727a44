"""Starting container processes (each in its own mount namespace), signalling them, recording their PIDs."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

PIDS_FILE = "pids.json"


def proc_start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (clock ticks since boot), None if there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = raw[raw.rindex(")") + 2:].split()
    return int(rest[19])


def proc_alive(pid: int, start_time: int | None) -> bool:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    rest = raw[raw.rindex(")") + 2:].split()
    if rest[0] in ("Z", "X"):
        return False
    return not start_time or int(rest[19]) == start_time


def _covers(target: str, path: str) -> bool:
    t, p = Path(target), Path(path)
    return p == t or t in p.parents


def mount_order(mounts: Sequence[tuple[str, str, bool]]) -> list[tuple[str, str, bool]]:
    """The order to bind-mount in: parents before children (/a before /a/b), except that a mount whose target
    would hide another mount's source (an emptyDir at /tmp while the pod's files live under /tmp) goes after
    the mounts that read from there: a bind mount, once made, stays valid when its source is covered."""
    def hides_a_source(m: tuple[str, str, bool]) -> bool:
        return any(other is not m and _covers(m[1], other[0]) for other in mounts)

    return sorted(mounts, key=lambda m: (hides_a_source(m), len(Path(m[1]).parts)))


def mount_script(mounts: Sequence[tuple[str, str, bool]]) -> str:
    """A /bin/sh script that bind-mounts (source, target, read_only) triples, then execs "$@".

    Runs inside ``unshare --mount --propagation private``: the mounts are visible to that process tree only.
    Missing targets are created on the host filesystem (directories, or empty files for file sources).
    """
    lines = []
    for src, tgt, ro in mount_order(mounts):
        s, t = shlex.quote(src), shlex.quote(tgt)
        fail = f'{{ echo "sipfleet-node-runner: cannot mount {src} at {tgt}" >&2; exit 126; }}'
        lines.append(
            f'if [ -d {s} ]; then mkdir -p {t}; else mkdir -p "$(dirname {t})" && {{ [ -e {t} ] || : > {t}; }}; fi'
        )
        lines.append(f"mount --bind {s} {t} || {fail}")
        if ro:
            lines.append(f"mount -o remount,bind,ro {t} || {fail}")
    lines.append('exec "$@"')
    return "\n".join(lines)


def launch_argv(argv: Sequence[str], mounts: Sequence[tuple[str, str, bool]]) -> list[str]:
    """The argv that runs ``argv`` in a private mount namespace with ``mounts`` in place.

    ``unshare`` (without --fork) and ``sh`` both exec, so the final program keeps the PID we started.
    """
    return [
        "unshare", "--mount", "--propagation", "private", "--",
        "/bin/sh", "-c", mount_script(mounts), "sipfleet-container", *argv,
    ]


def spawn(
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: str,
    mounts: Sequence[tuple[str, str, bool]],
    log_file: Path,
) -> subprocess.Popen:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab", buffering=0) as out:
        return subprocess.Popen(
            launch_argv(argv, mounts),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
        )


def signal_group(pid: int, sig: int) -> None:
    """Signal the process group led by pid (our processes lead their own session/group)."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


class PidRegistry:
    """``<state-dir>/pids.json``: every process the runner has running, so ``cluster down`` can stop them
    by PID (and process group) even if the runner died.

    Format: ``{"runner": {"pid": .., "start_time": ..}, "processes": [{"name": "ns/pod/container", "pid": ..,
    "start_time": .., "pgid": .., "namespace": .., "pod": .., "uid": .., "container": .., "cmd": [..],
    "log": ..}]}``. ``start_time`` is field 22 of /proc/<pid>/stat; a PID whose start time differs has been
    reused and must not be signalled.
    """

    def __init__(self, state_dir: Path):
        self.path = state_dir / PIDS_FILE
        self._lock = threading.Lock()
        self._procs: dict[int, dict[str, Any]] = {}

    def previous(self) -> list[dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return []
        procs = data.get("processes") if isinstance(data, dict) else data
        return [p for p in procs or [] if isinstance(p, dict) and isinstance(p.get("pid"), int)]

    def add(self, pid: int, info: Mapping[str, Any]) -> None:
        with self._lock:
            rec = dict(info)
            rec.update({"pid": pid, "pgid": pid, "start_time": proc_start_time(pid) or 0})
            self._procs[pid] = rec
            self._save()

    def remove(self, pid: int) -> None:
        with self._lock:
            if self._procs.pop(pid, None) is not None:
                self._save()

    def save(self) -> None:
        with self._lock:
            self._save()

    def _save(self) -> None:
        me = os.getpid()
        data = {
            "runner": {"name": "node-runner", "pid": me, "start_time": proc_start_time(me) or 0},
            "processes": list(self._procs.values()),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{me}.tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, self.path)


def stop_recorded(records: Sequence[Mapping[str, Any]], grace: float = 5.0) -> int:
    """SIGTERM the process groups of live records, SIGKILL what is left after ``grace``; returns how many
    were alive."""
    live = [r for r in records if proc_alive(int(r["pid"]), r.get("start_time"))]
    for r in live:
        signal_group(int(r["pid"]), signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(proc_alive(int(r["pid"]), r.get("start_time")) for r in live):
        time.sleep(0.1)
    for r in live:
        if proc_alive(int(r["pid"]), r.get("start_time")):
            signal_group(int(r["pid"]), signal.SIGKILL)
    return len(live)


def stop_recorded_processes(state_dir: str | os.PathLike, grace: float = 5.0) -> int:
    """Stop every container process recorded in ``<state_dir>/pids.json`` (for ``cluster down`` after the
    runner is gone). Returns how many were still alive."""
    return stop_recorded(PidRegistry(Path(state_dir)).previous(), grace)
