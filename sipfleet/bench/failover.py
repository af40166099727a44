"""``sipfleet bench failover``: how fast one standalone agent's accounts fail over from the primary route P to their
fallback route E when P goes dark, and how fast they return once P answers again (numbers printed, never asserted).

N accounts (``-n``, default 32, at most 64) of one agent process (supervisor + pjsua2 workers, ``--mode`` prevent
or account) register through P with ``fallbackRoutes: [[E]]`` and ``failover: {probeIntervalSeconds,
returnAfterProbes}``; the workers probe their flow every third of ``--dead-flow`` seconds (``udpDeadFlowSeconds``).
Each of ``--rounds`` rounds, with every account Registered, in sync and on the primary (``route.active.index`` 0):
P is partitioned (every packet in and out of its netns dropped) and the bench measures, from the cut, the first
REGISTER of any account at E (``first_register_at_E_s``), each account's first REGISTER at E (p50/max), and the time
until every account's latest status is Registered, in sync, on index 1 (``all_on_fallback_s``). After ~3 s more P is
healed; from the heal: the return decision (the earliest ``route.active.since`` of index 0, ``return_decision_s``),
the first REGISTER at P after that decision (``first_register_at_P_s``), the time until every account is Registered,
in sync, on index 0 again (``all_on_primary_s``), and how many primary probes (distinct ``sipfleet-probe-`` Call-IDs
of OPTIONS at P) arrived between the heal and the decision. A phase that times out is reported in its round.

The run starts its own SIP lab (``bench-failover``) and stops it afterwards unless ``--keep``; the agent runs on the
host from a client address of the lab and is stopped by PID.
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

from sipfleet.kubectl.fmt import parse_time, percentile

from ..localenv import procs
from .agent import _client, _users

LAB_NAME = "bench-failover"
HTTP_PORT = 18084
ROOT = Path(__file__).resolve().parents[2]
MEASURES = ("first_register_at_E_s", "first_register_at_E_per_account_p50_s", "first_register_at_E_per_account_max_s",
            "all_on_fallback_s", "return_decision_s", "first_register_at_P_s", "all_on_primary_s",
            "probes_at_P_before_return")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("failover", help="accounts failing over from P to their fallback route E and back: "
                       "time to the first REGISTER at E, to all on E, to the return decision, to all on P",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--accounts", "-n", type=int, default=32, choices=range(1, 65), metavar="1..64")
    p.add_argument("--mode", choices=["prevent", "account"], default="prevent")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--dead-flow", type=int, default=3, help="udpDeadFlowSeconds (default 3)")
    p.add_argument("--probe-interval", type=int, default=1, help="failover.probeIntervalSeconds (default 1)")
    p.add_argument("--return-after", type=int, default=3, help="failover.returnAfterProbes (default 3)")
    p.add_argument("--timeout", type=float, default=90, help="give up waiting for a phase after this long")
    p.add_argument("--keep", action="store_true", help="leave the lab running")
    p.set_defaults(func=_run)


class _Agent:
    """The agent process and the status lines it printed: (arrival time, account, status)."""

    def __init__(self, cfg: Path, stderr_path: Path, stack: ExitStack):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(ROOT / "agent"), str(ROOT / "operator"), str(ROOT)] + ([os.environ["PYTHONPATH"]]
                                                                        if os.environ.get("PYTHONPATH") else []))}
        cmd = [sys.executable, "-m", "sipfleet_agent.main", "run", "--config", str(cfg), "--debug-hooks"]
        self.stderr_path = stderr_path
        err = stack.enter_context(open(stderr_path, "wb"))
        self.rec, self.proc = procs.spawn("bench-failover-agent", cmd, env=env, stdout=subprocess.PIPE, stderr=err,
                                          text=True, die_with_parent=True)
        stack.callback(lambda: (procs.stop([self.rec], grace=30), self.proc.wait(10)))
        self.updates: list[tuple[float, str, dict]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.strip():
                doc = json.loads(line)
                with self.lock:
                    self.updates.append((time.time(), doc["account"], doc["status"]))

    def since(self, t: float) -> list[tuple[float, str, dict]]:
        with self.lock:
            return [u for u in self.updates if u[0] >= t]

    def latest(self) -> dict[str, dict]:
        with self.lock:
            return {a: s for _, a, s in self.updates}

    def stderr_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def _on(index: int):
    return lambda s: (s["registration"]["state"] == "Registered" and s["route"].get("inSync") is True
                      and (s["route"].get("active") or {}).get("index") == index)


def _wait_all(agent: _Agent, names: list[str], pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        latest = agent.latest()
        if all(n in latest and pred(latest[n]) for n in names):
            return
        if agent.proc.poll() is not None:
            raise RuntimeError(f"agent exited ({agent.proc.returncode}) waiting for {what}:\n{agent.stderr_tail()}")
        if time.monotonic() > deadline:
            behind = [n for n in names if not (n in latest and pred(latest[n]))]
            raise TimeoutError(f"{what}: {len(behind)} of {len(names)} accounts not there after {timeout:g} s")
        time.sleep(0.05)


def _settled_at(agent: _Agent, names: list[str], pred, t0: float) -> float:
    """When the last account reached the state its latest status is in (the start of its final run of statuses
    matching ``pred`` since ``t0``), minus ``t0``."""
    start: dict[str, float] = {}
    for at, a, s in agent.since(t0):
        if pred(s):
            start.setdefault(a, at)
        else:
            start.pop(a, None)
    return max(start.get(n, time.time()) for n in names) - t0


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def _round(lab, agent: _Agent, users: list[str], args: argparse.Namespace) -> dict:
    out: dict = {}
    _wait_all(agent, users, _on(0), args.timeout, "registered on the primary before the cut")
    mine = set(users)

    def user(r) -> str:
        rest = r.from_uri.split(":", 1)[-1]
        return rest.split("@", 1)[0] if "@" in rest else ""

    t_cut = time.time()
    lab.partition("P")
    try:
        try:
            _wait_all(agent, users, _on(1), args.timeout, "on the fallback route")
            out["all_on_fallback_s"] = _r(_settled_at(agent, users, _on(1), t_cut))
            latest = agent.latest()
            out["reasons"] = sorted({latest[u]["route"]["active"].get("reason") for u in users})
        except TimeoutError as e:
            out["timed_out"] = str(e)
        time.sleep(3)
        out["returned_while_cut"] = sum(1 for u in users if (agent.latest()[u]["route"].get("active") or {})
                                        .get("index") == 0)
        first_e: dict[str, float] = {}
        for r in lab.wire(since=t_cut, node="E", method="REGISTER"):
            if user(r) in mine:
                first_e.setdefault(user(r), r.at - t_cut)
        per = sorted(first_e.values())
        out["accounts_seen_at_E"] = len(per)
        out["first_register_at_E_s"] = _r(per[0]) if per else None
        out["first_register_at_E_per_account_p50_s"] = _r(percentile(per, 50))
        out["first_register_at_E_per_account_max_s"] = _r(per[-1]) if per else None
    finally:
        t_heal = time.time()
        lab.heal("P")
    try:
        _wait_all(agent, users, _on(0), args.timeout, "back on the primary")
        out["all_on_primary_s"] = _r(_settled_at(agent, users, _on(0), t_heal))
    except TimeoutError as e:
        out["timed_out"] = (out.get("timed_out", "") + "; " if "timed_out" in out else "") + str(e)
    sinces = [parse_time(s["route"]["active"].get("since")) for _, a, s in agent.since(t_heal)
              if a in mine and (s["route"].get("active") or {}).get("index") == 0]
    sinces = sorted({t.timestamp() for t in sinces if t is not None and t.timestamp() >= t_heal - 1})
    decided = sinces[0] if sinces else None
    out["return_decision_s"] = _r(decided - t_heal) if decided else None
    out["return_decisions"] = len(sinces)  # distinct decision times (one per failover group)
    time.sleep(1)  # the wire log's last lines
    if decided:
        regs_p = [r.at for r in lab.wire(since=decided, node="P", method="REGISTER") if user(r) in mine]
        out["first_register_at_P_s"] = _r(min(regs_p) - t_heal) if regs_p else None
        probes = {r.call_id for r in lab.wire(since=t_heal, node="P", method="OPTIONS")
                  if r.call_id.startswith("sipfleet-probe-") and r.at < decided}
        out["probes_at_P_before_return"] = len(probes)
    latest = agent.latest()
    out["failovers"] = sorted({(latest[u]["route"].get("active") or {}).get("failovers") for u in users},
                              key=lambda v: (v is None, v))
    order = [m for m in MEASURES if m in out]  # the measures first, in the order they happen
    return {**{m: out[m] for m in order}, **{k: v for k, v in out.items() if k not in order}}


def _run(args: argparse.Namespace) -> int:
    import yaml

    from sipfleet.localenv.siplab import SipLab

    rounds: list[dict] = []
    with ExitStack() as stack:
        lab = SipLab(LAB_NAME)
        lab.down()
        lab.up(timeout=120)
        if not args.keep:
            stack.callback(lab.down)
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sipfleet-bench-failover-")))
        address = _client(lab, stack)
        creds = _users(lab, args.accounts, "fo")
        accounts = []
        for u, pw in creds:
            pwf = tmp / f"{u}.pw"
            pwf.write_text(pw)
            pwf.chmod(0o600)
            accounts.append({
                "name": u, "aor": lab.aor(u), "registrar": lab.registrar_uri(), "route": [lab.proxy_uri()],
                "fallbackRoutes": [[lab.edge_uri()]], "routeMode": args.mode, "transport": "udp",
                "failover": {"probeIntervalSeconds": args.probe_interval, "returnAfterProbes": args.return_after},
                "credentials": {"username": u, "passwordFile": str(pwf)},
                "registration": {"retryIntervalSeconds": 5, "firstRetryIntervalSeconds": 1, "jitterSeconds": 0},
            })
        cfg = tmp / "agent.yaml"
        cfg.write_text(yaml.safe_dump({"agent": "bench-failover", "accounts": accounts, "settings": {
            "sipAddress": address, "httpAddress": address, "httpPort": HTTP_PORT, "statusDebounceMs": 50,
            "udpDeadFlowSeconds": args.dead_flow}}))
        agent = _Agent(cfg, tmp / "agent.stderr", stack)
        users = [u for u, _ in creds]
        t0 = time.time()
        _wait_all(agent, users, _on(0), max(args.timeout, 120), "first registration")
        print(f"{len(users)} accounts registered through P in {time.time() - t0:.1f} s", file=sys.stderr, flush=True)
        for i in range(args.rounds):
            if i:
                time.sleep(5)
            try:
                res = _round(lab, agent, users, args)
            except TimeoutError as e:  # not even back on the primary before the cut
                res = {"timed_out": str(e)}
            rounds.append({"round": i + 1, **res})
            print(f"round {i + 1}: {json.dumps(res)}", file=sys.stderr, flush=True)
            if "timed_out" in res:
                print(f"agent stderr (tail):\n{agent.stderr_tail()}", file=sys.stderr, flush=True)
                if "before the cut" in res["timed_out"]:
                    break

    summary = {}
    for m in MEASURES:
        vals = [r[m] for r in rounds if r.get(m) is not None]
        summary[m] = {"p50": percentile(vals, 50), "max": max(vals) if vals else None}
    ok = len(rounds) == args.rounds and not any("timed_out" in r for r in rounds)
    print(json.dumps({"benchmark": "failover", "accounts": args.accounts, "mode": args.mode,
                      "dead_flow_s": args.dead_flow, "probe_interval_s": args.probe_interval,
                      "return_after_probes": args.return_after, "rounds": rounds, "summary": summary}), flush=True)

    def s(m: str) -> str:
        v = summary[m]["p50"]
        return "-" if v is None else f"{v:g}"

    print(f"failover ({args.mode}, {args.accounts} accounts, dead flow {args.dead_flow} s, {len(rounds)} rounds, "
          f"p50): P cut -> first REGISTER at E {s('first_register_at_E_s')} s, all on E {s('all_on_fallback_s')} s; "
          f"P healed -> return decided {s('return_decision_s')} s ({s('probes_at_P_before_return')} probes), "
          f"first REGISTER at P {s('first_register_at_P_s')} s, all on P {s('all_on_primary_s')} s"
          + ("" if ok else " (some phases timed out)"))
    return 0 if ok else 1
