"""``sipfleet bench faults``: faults injected one after the other under a running fleet, and a printed matrix.

The fleet: N accounts (default 16), half in routeMode account and half in prevent, through the operator, on the
local cluster and SIP lab (bench/fleet.py's Env). Each fault runs in a thread while the fleet's SipAccounts are
looked at every half second, from the fault's start until every account has been Ready and in sync for
``--settle`` seconds after it ended; faultmatrix.py turns what was seen into a row. Numbers are printed, never
asserted (the CI test asserts only that nothing is lost).

Faults (``--faults``, comma-separated; default all): control plane (``apiserver-restart``, ``etcd-restart``,
``kcm-down`` for --outage s), node (``kubelet-restart``, ``containerd-restart``, ``pods-killed``: every agent pod
deleted at once), sipfleet (``operator-kill``: SIGKILL then started again; ``operator-kill-converge``: SIGKILL
halfway through the converge of ``--converge`` new accounts, deleted again after the row; ``operator-ha-kill``:
the active one of two peered replicas SIGKILLed, with the takeover time: faults_operator.py; ``supervisor-kill``,
``worker-kill``: SIGKILL of an agent's supervisor or one of its pjsua2 workers), network (``link-down``: an agent pod's eth0 down
for --outage s, ``partition-p``: the proxy P cut off), registrar (``registrar-down``: R stopped for --outage s,
``registrar-503``: R answers 503, ``registrar-slow``: R answers after 5 s; through the scripted registrar S:
``registrar-403``, ``registrar-503-retry-after``, ``registrar-500``, and the hostile answers ``hostile-registrar``
(10 Service-Route URIs), ``hostile-big-header`` (8 KB, last), ``hostile-cut-grant`` (4 KB before Contact and Expires:
cut at pjsip's UDP buffer), ``hostile-bad-contact``, ``hostile-expires-1``, ``hostile-expires-0``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable

from sipfleet.api import keys
from sipfleet.api.models import GROUP, PLURAL, VERSION

from . import faultmatrix as fm
from .faults_fleet import BENCH_REGISTRATION, agent_pods, agents_ready, fleet_state
from .faults_operator import operator_ha_kill, operator_kill_converge
from .fleet import Env


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("faults", help="faults under a running fleet: a matrix of what each did",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--accounts", "-n", type=int, default=16)
    p.add_argument("--faults", default=",".join(FAULTS), help=f"comma-separated, of: {', '.join(FAULTS)}")
    p.add_argument("--outage", type=float, default=30, help="seconds a lasting fault lasts (default 30)")
    p.add_argument("--settle", type=float, default=5, help="seconds every account must stay healthy after a fault")
    p.add_argument("--cluster", default="bench", help="local cluster name (started if not running)")
    p.add_argument("--state-dir", help="that cluster's state directory (default: sipfleet's state root)")
    p.add_argument("--timeout", type=float, default=300, help="per fault: give up waiting after this long")
    p.add_argument("--keep", action="store_true", help="leave cluster, lab and namespace running")
    p.add_argument("--converge", type=int, default=200,
                   help="operator-kill-converge: new accounts whose converge the SIGKILL interrupts (default 200)")
    p.add_argument("--json", dest="json_out", help="also write the rows to this file as JSON")
    p.set_defaults(func=_run)


# ---------------------------------------------------------------------------------------------- finding pids


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def _ns_pid(host_pid: int) -> int:
    for line in Path(f"/proc/{host_pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    raise RuntimeError(f"no NSpid for {host_pid}")


def agent_worker_pid(cluster: Any, namespace: str, pod: Any, account: str | None = None) -> int:
    """The host PID of the pjsua2 worker hosting ``account`` (any worker when None) in agent pod ``pod``: the
    agent's /status names the worker's PID inside the pod, matched against the supervisor's descendants."""
    with urllib.request.urlopen(f"http://{pod.status.pod_ip}:8080/status", timeout=10) as r:
        snap = json.loads(r.read())
    workers = {w["id"]: w["pid"] for w in snap["workers"]}
    worker = {a["name"]: a["worker"] for a in snap["accounts"]}[account] if account else next(iter(workers))
    sup = cluster.container_pid(namespace, pod.metadata.name)
    todo, seen = [sup], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += _children(p)
    (host,) = [p for p in seen if _ns_pid(p) == workers[worker]]
    return host


# ---------------------------------------------------------------------------------------------- the faults


def _hold(env: Env, start: Callable[[], None], end: Callable[[], None]) -> str:
    start()
    try:
        time.sleep(env.args.outage)
    finally:
        end()
    return f"{env.args.outage:.0f} s"


def _reregister_all(env: Env) -> None:
    """Every account of the fleet asked to re-register (the user's annotation), so that each must send a
    REGISTER while the fault lasts instead of at a refresh that may fall outside it."""
    token = f"bench-{time.time():.3f}"
    for o in env.accounts():
        env.custom.patch_namespaced_custom_object(GROUP, VERSION, env.ns, PLURAL, o["metadata"]["name"], {
            "metadata": {"annotations": {keys.ANNOTATION_REREGISTER: token}}})


def _with_reregister(start: Callable[[Env], None]) -> Callable[[Env], None]:
    def run(env: Env) -> None:
        start(env)
        _reregister_all(env)
    return run


def _restart(name: str, kill: bool = False, down: bool = False):
    def run(env: Env, *_: Any) -> str:
        took = env.cluster.restart_component(name, kill=kill, down_s=env.args.outage if down else 0.0)
        return f"{name} serving again {took:.1f} s after the stop"
    return run


def _operator_kill(env: Env, *_: Any) -> str:
    env.operator.kill()
    time.sleep(2)
    env.operator.start()
    return "SIGKILL, started again 2 s later"


def _supervisor_kill(env: Env, *_: Any) -> str:
    pod = agent_pods(env)[0]
    os.kill(env.cluster.container_pid(env.ns, pod.metadata.name), signal.SIGKILL)
    return f"pod {pod.metadata.name}"


def _worker_kill(env: Env, *_: Any) -> str:
    pod = agent_pods(env)[0]
    os.kill(agent_worker_pid(env.cluster, env.ns, pod), signal.SIGKILL)
    return f"a worker of {pod.metadata.name}"


def _pods_killed(env: Env, *_: Any) -> str:
    pods = agent_pods(env)
    for p in pods:
        env.core.delete_namespaced_pod(p.metadata.name, env.ns, grace_period_seconds=0)
    return f"{len(pods)} agent pods deleted (grace 0)"


def _link_down(env: Env, *_: Any) -> str:
    pod = agent_pods(env)[0]
    netns = env.cluster.pod_netns(env.ns, pod.metadata.name)
    return _hold(env, lambda: env.lab.link_down(netns=netns), lambda: env.lab.link_up(netns=netns)) + \
        f", pod {pod.metadata.name}"


def _inject(node: str, mode: str):
    def run(env: Env, *_: Any) -> str:
        start = _with_reregister(lambda e: e.lab.inject(node, mode))
        return _hold(env, lambda: start(env), lambda: env.lab.inject(node, "heal" if mode == "partition" else "normal")) \
            + f", {node} {mode}, every account asked to re-register at its start"
    return run


def _registrar_down(env: Env, *_: Any) -> str:
    start = _with_reregister(lambda e: e.lab.stop_node("R"))
    return _hold(env, lambda: start(env), lambda: env.lab.start_node("R")) + \
        ", every account asked to re-register at its start"


def _scripted(answer: str, what: str):
    """P and E send REGISTERs to the scripted registrar S, which gives every one ``answer``; then R again."""
    def run(env: Env, *_: Any) -> str:
        def start(e: Env) -> None:
            e.lab.scripted.script(answer)
            e.lab.set_registrar("S")
        return _hold(env, lambda: _with_reregister(start)(env), lambda: env.lab.set_registrar("R")) + \
            f", S answered every REGISTER {what} ({answer!r}), every account asked to re-register at its start"
    return run


#: name -> fault(env, run): carries the fault out and says how in a note; ``run`` (fm.FaultRun) takes the accounts it
#: adds and the checks to make after the row
FAULTS: dict[str, Callable[[Env, fm.FaultRun], str]] = {
    "apiserver-restart": _restart("kube-apiserver"),
    "etcd-restart": _restart("etcd"),
    "kcm-down": _restart("kube-controller-manager", down=True),
    "operator-kill": _operator_kill,
    "operator-kill-converge": operator_kill_converge,
    "operator-ha-kill": operator_ha_kill,
    "supervisor-kill": _supervisor_kill,
    "worker-kill": _worker_kill,
    "kubelet-restart": _restart("kubelet", kill=True),
    "containerd-restart": _restart("containerd", kill=True),
    "pods-killed": _pods_killed,
    "link-down": _link_down,
    "partition-p": _inject("P", "partition"),
    "registrar-down": _registrar_down,
    "registrar-503": _inject("R", "503"),
    "registrar-slow": _inject("R", "delay:5000"),
    "registrar-403": _scripted("403", "with 403"),
    "registrar-503-retry-after": _scripted("503 retry-after=20", "with 503 and Retry-After: 20"),
    "registrar-500": _scripted("500", "with 500"),
    # hostile answers (docs/hostile-registrars.md); pjsua 2.15.1 holds 8 Service-Route URIs and writes past them
    "hostile-registrar": _scripted("200 sr=10", "with a 200 carrying 10 Service-Route URIs"),
    "hostile-big-header": _scripted("200 big-header=8192", "with a 200 carrying an 8 KB header"),
    "hostile-cut-grant": _scripted("200 big-header=4100 big-header-at=start",
                                   "with a 200 whose Contact and Expires lie past a 4 KB header"),
    "hostile-bad-contact": _scripted("200 bad-contact", "with a 200 whose Contact does not parse"),
    "hostile-expires-1": _scripted("200 expires=1", "with a 200 granting 1 s"),
    "hostile-expires-0": _scripted("200 expires=0", "with a 200 granting 0 s"),
}


# ---------------------------------------------------------------------------------------------- one fault

FAILED = "the fault itself failed"  # how a row's note starts when the fault could not be carried out


def _watch(env: Env, run: fm.FaultRun, result: dict[str, Any], seen: dict[str, Any]) -> None:
    """Look at the fleet every half second until it has been healthy for ``--settle`` s after the fault ended
    (``result["end"]``), or the deadline; ``seen``: affected names, the last time anything was bad, timed out."""
    healthy_since: float | None = None
    deadline = time.monotonic() + env.args.outage + env.args.timeout + 120
    while time.monotonic() < deadline:
        now = time.time()
        specs = run.watched()  # with the accounts the fault added
        try:
            objs = [o for o in env.accounts() if o["metadata"]["name"] in specs]
        except Exception:  # noqa: BLE001 - the apiserver may be the fault: look again
            objs = None
        if objs is not None:
            bad = {o["metadata"]["name"] for o in objs if not fm.healthy(o)} | (set(specs) - {
                o["metadata"]["name"] for o in objs})
            seen["affected"] |= bad
            if bad or not agents_ready(env):  # an agent restarting may not have shown in status yet
                seen["last_bad"], healthy_since = now, None
            elif "end" in result:
                healthy_since = healthy_since or now
                if now - healthy_since >= env.args.settle:
                    return
        time.sleep(0.5)
    seen["timed_out"] = True


def run_fault(env: Env, name: str, users: dict[str, str], specs: dict[str, str]) -> fm.Row:
    """One fault, carried out on this (the main) thread: processes it starts again (the operator) get the
    parent-death signal of the thread that started them, so a fault thread ending would SIGTERM them."""
    writes0 = sum(env.apiserver_writes().values())
    t0 = time.time()
    result: dict[str, Any] = {}
    seen: dict[str, Any] = {"affected": set(), "last_bad": None, "timed_out": False}
    run = fm.FaultRun(dict(specs), dict(users))
    watcher = threading.Thread(target=_watch, args=(env, run, result, seen), name=f"watch-{name}", daemon=True)
    watcher.start()
    try:
        result["note"] = FAULTS[name](env, run)
    except Exception as e:  # noqa: BLE001 - reported in the row
        result["note"] = f"{FAILED}: {type(e).__name__}: {e}"
    end = result["end"] = time.time()
    watcher.join()
    row = fm.Row(fault=name, accounts=len(run.specs))
    row.recovery_s = None if seen["timed_out"] else max(0.0, (seen["last_bad"] or end) - end)
    row.affected = len(seen["affected"])
    wanted = set(run.users.values())
    fleet_regs = [r for r in env.lab.wire(since=t0, method="REGISTER") if r.node in ("P", "E")
                  and any(f":{u}@" in r.from_uri for u in wanted)]
    row.registers = len([r for r in fleet_regs if r.at <= end])
    row.registers_total = len(fleet_regs)
    writes1 = sum(env.apiserver_writes().values())
    row.writes = int(writes1 - writes0) if writes1 >= writes0 else None  # an apiserver restart resets its counters
    accounts, assignments, deps = fleet_state(env)
    row.lost = fm.losses(run.specs, accounts, assignments, deps)
    row.note = str(result.get("note", ""))
    for check in run.after:  # e.g. the accounts the fault added deleted again: what that left behind
        try:
            lost, note = check()
        except Exception as e:  # noqa: BLE001 - reported in the row
            lost, note = [f"the check after the fault failed: {type(e).__name__}: {e}"], ""
        row.lost += [x for x in lost if x not in row.lost]
        row.note += f"; {note}" if note else ""
    return row


def _run(args: argparse.Namespace) -> int:
    unknown = [f for f in args.faults.split(",") if f and f not in FAULTS]
    if unknown:
        print(f"sipfleet bench faults: unknown faults {unknown}; known: {', '.join(FAULTS)}")
        return 2
    with ExitStack() as stack:
        env = Env(args, stack)
        half = args.accounts // 2
        reg = {"registration": dict(BENCH_REGISTRATION)}
        accs = env.create_accounts(half, "fa", routeMode="account", **reg)
        accs += env.create_accounts(args.accounts - half, "fp", routeMode="prevent", **reg)
        users = dict(accs)
        env.wait_all(set(users), fm.healthy, "Ready and in sync", args.timeout)
        specs = {o["metadata"]["name"]: fm.spec_digest(o) for o in env.accounts() if o["metadata"]["name"] in users}
        rows = []
        for name in [f for f in args.faults.split(",") if f]:
            print(f"fault {name} ...", flush=True)
            rows.append(run_fault(env, name, users, specs))
            r = rows[-1]
            print(f"  affected {r.affected}/{r.accounts}, recovered "
                  f"{'-' if r.recovery_s is None else f'{r.recovery_s:.1f} s'} after its end, lost: "
                  f"{'; '.join(r.lost) or 'nothing'} ({r.note})", flush=True)
        print()
        print(fm.render(rows))
        if args.json_out:
            Path(args.json_out).write_text(json.dumps([r.__dict__ for r in rows], indent=1) + "\n")
        return 1 if any(r.lost or r.recovery_s is None or r.note.startswith(FAILED) for r in rows) else 0
