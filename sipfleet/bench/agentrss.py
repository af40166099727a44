"""``sipfleet bench agent-rss``: the memory of one standalone agent (supervisor + zygote + pjsua2 workers) hosting
1, 8, 16 and 64 registered accounts (``--accounts``), printed, never asserted.

Per count: RSS and PSS summed over the agent's process tree (PSS from ``/proc/<pid>/smaps_rollup``: shared pages
split between the processes sharing them, so the sum counts each page once), and, when a memory cgroup can be
made for it, that cgroup's working set (usage minus inactive file pages, as the kubelet computes a pod's): what a
pod would be charged. Each run starts its own lab (``bench-agent``) and stops it afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

from ..localenv import procs
from .agent import _client, _lab, _users, _wait

MiB = 1024 * 1024


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("agent-rss", help="memory of one agent (supervisor + workers) with 1, 8, 16, 64 accounts",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--accounts", "-n", default="1,8,16,64", help="comma-separated account counts")
    p.add_argument("--settle", type=float, default=8.0, help="seconds after all Registered before reading")
    p.add_argument("--worker-start", choices=["zygote", "exec"], default="zygote",
                   help="fork workers from the zygote (default) or exec each one")
    p.add_argument("--keep", action="store_true", help="leave the lab running")
    p.set_defaults(func=_run)


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _rollup(pid: int) -> dict[str, int]:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[-1] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1]) * 1024
    except OSError:
        pass
    return out


def _memory_cgroup() -> Path | None:
    """A fresh memory cgroup (v1 or v2) below this process's own, or None when none can be made."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        if "memory" in ctrls.split(","):
            base = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            break
        if ctrls == "" and Path("/sys/fs/cgroup/cgroup.controllers").exists():
            base = Path("/sys/fs/cgroup") / path.lstrip("/")
    else:
        return None
    cg = base / f"sipfleet-agent-rss-{os.getpid()}-{time.monotonic_ns()}"
    try:
        cg.mkdir()
        return cg
    except OSError:
        return None


def _working_set(cg: Path | None) -> int | None:
    if cg is None:
        return None
    try:
        stat = dict(line.split() for line in (cg / "memory.stat").read_text().splitlines())
        if (cg / "memory.usage_in_bytes").exists():  # v1
            usage = int((cg / "memory.usage_in_bytes").read_text())
            inactive = int(stat.get("total_inactive_file", 0))
        else:
            usage = int((cg / "memory.current").read_text())
            inactive = int(stat.get("inactive_file", 0))
        return max(0, usage - inactive)
    except (OSError, ValueError):
        return None


def _measure(lab, n: int, tmp: Path, address: str, settle: float, worker_start: str) -> dict:
    import yaml

    users = _users(lab, n, f"rss{n}")
    accounts = []
    for u, pw in users:
        pwf = tmp / f"{u}.pw"
        pwf.write_text(pw)
        accounts.append({"name": u, "aor": lab.aor(u), "registrar": lab.registrar_uri(), "route": [lab.proxy_uri()],
                         "credentials": {"username": u, "passwordFile": str(pwf)}})
    cfg = tmp / f"agent-{n}.yaml"
    cfg.write_text(yaml.safe_dump({"agent": "bench", "settings": {"sipAddress": address, "httpAddress": address,
                                                                    "httpPort": 18082}, "accounts": accounts}))
    cg = _memory_cgroup()
    agent = [sys.executable, "-m", "sipfleet_agent.main", "run", "--config", str(cfg)]
    # enter the cgroup before exec: the zygote and the workers are born in it
    cmd = ["sh", "-c", f'echo $$ > "{cg}/cgroup.procs" && exec "$@"', "sh", *agent] if cg else agent
    env = {**os.environ, "SIPFLEET_AGENT_WORKER_START": worker_start}
    rec, proc = procs.spawn("bench-agent-rss", cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, die_with_parent=True)
    registered: set[str] = set()
    lock = threading.Lock()

    def read() -> None:
        for line in proc.stdout:
            doc = json.loads(line)
            if doc["status"].get("registration", {}).get("state") == "Registered":
                with lock:
                    registered.add(doc["account"])

    try:
        threading.Thread(target=read, daemon=True).start()
        _wait(lambda: len(registered) == n or proc.poll() is not None, 120, "registration")
        if proc.poll() is not None:
            raise RuntimeError("agent exited")
        time.sleep(settle)
        pids = _tree(proc.pid)
        roll = {pid: _rollup(pid) for pid in pids}
        rss = sum(r.get("Rss", 0) for r in roll.values())
        pss = sum(r.get("Pss", 0) for r in roll.values())
        sup = roll.get(proc.pid, {})
        return {"accounts": n, "processes": len(pids), "rss_sum_mib": round(rss / MiB, 1),
                "pss_sum_mib": round(pss / MiB, 1), "supervisor_pss_mib": round(sup.get("Pss", 0) / MiB, 1),
                "pss_per_account_mib": round(pss / MiB / n, 2),
                "cgroup_working_set_mib": None if (ws := _working_set(cg)) is None else round(ws / MiB, 1),
                "cgroup_working_set_per_account_mib": None if ws is None else round(ws / MiB / n, 2)}
    finally:
        procs.stop([rec], grace=30)
        proc.wait(10)
        if cg is not None:
            for _ in range(50):
                try:
                    cg.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)


def _run(args: argparse.Namespace) -> int:
    counts = [int(x) for x in args.accounts.split(",") if x.strip()]
    with ExitStack() as stack:
        lab = _lab(args, stack)
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sipfleet-bench-")))
        results = [_measure(lab, n, tmp, _client(lab, stack), args.settle, args.worker_start) for n in counts]
    print(json.dumps({"benchmark": "agent-rss", "workerStart": args.worker_start, "results": results}))
    for r in results:
        ws = r["cgroup_working_set_mib"]
        print(f"agent-rss ({args.worker_start}): {r['accounts']:3d} accounts, {r['processes']} processes: "
              f"RSS sum {r['rss_sum_mib']} MiB, PSS sum {r['pss_sum_mib']} MiB ({r['pss_per_account_mib']} MiB/account)"
              + (f", cgroup working set {ws} MiB ({r['cgroup_working_set_per_account_mib']} MiB/account)"
                 if ws is not None else ", no memory cgroup"))
    return 0
