"""Agent benchmarks (numbers are printed, never asserted).

``sipfleet bench agent-repair``      N repairs (default 50) of one account (re-create: shutdown, wait for the
                                     un-REGISTER's answer, create) -> time from repair start to the first
                                     REGISTER via the configured route, p50/p99; every repaired REGISTER is
                                     checked on the wire (it reached P)
``sipfleet bench agent-rss``         (sipfleet.bench.agentrss) memory of one agent, supervisor + workers
``sipfleet bench agent-throughput``  REGISTER/s of one agent process (8 accounts refreshing in a closed loop,
                                     message logging and route measurement on, as in production) vs. SIPp
                                     (8 users, 8 concurrent) against the same Kamailio proxy

Each run starts its own SIP lab (name ``bench-agent``, on a free lab slot, in its own network namespaces) and
stops it afterwards unless ``--keep``. The agents run on the host from client addresses of the lab (/32s on the
lab bridge, released at the end); processes are stopped by PID.
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import sys
import time
from contextlib import ExitStack

from sipfleet.kubectl.fmt import percentile

LAB_NAME = "bench-agent"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("agent-repair", help="repair latency of one agent (p50/p99 over N repairs)",
                       description="repair latency of one agent (p50/p99 over N repairs)")
    p.add_argument("--repairs", "-n", type=int, default=50)
    p.add_argument("--mode", choices=["account", "prevent"], default="account")
    _common(p)
    p.set_defaults(func=_repair)

    p = sub.add_parser("agent-throughput", help="REGISTER/s of one agent vs SIPp through the same proxy",
                       description="REGISTER/s of one agent vs SIPp through the same proxy")
    p.add_argument("--seconds", type=float, default=10.0, help="measurement window per contender")
    p.add_argument("--accounts", type=int, default=8, choices=range(1, 9), metavar="1..8")
    _common(p)
    p.set_defaults(func=_throughput)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keep", action="store_true", help="leave the lab running")


# ---------------------------------------------------------------------------------------------------- helpers


def _lab(args: argparse.Namespace, stack: ExitStack, shm_mb: int | None = None):
    from sipfleet.localenv.siplab import SipLab

    lab = SipLab(LAB_NAME, shm_mb=shm_mb)
    lab.down()
    lab.up(timeout=120)
    if not args.keep:
        stack.callback(lab.down)
    return lab


def _client(lab, stack: ExitStack) -> str:
    """A client address of the lab for one agent on the host, released when ``stack`` closes."""
    address = lab.client_address()
    stack.callback(lab.release_client_address, address)
    return address


def _users(lab, n: int, prefix: str) -> list[tuple[str, str]]:
    users = [(f"{prefix}{i}x{secrets.token_hex(3)}", secrets.token_urlsafe(12)) for i in range(n)]
    lab.add_users(users)
    return users


def _resolved(lab, users, mode: str, expires: int = 60):
    from sipfleet.api.models import AgentAccount
    from sipfleet_agent.config import ResolvedAccount, Secretish

    out = []
    for u, pw in users:
        acc = AgentAccount.model_validate({
            "name": u, "aor": lab.aor(u), "registrar": lab.registrar_uri(), "route": [lab.proxy_uri()],
            "routeMode": mode, "credentials": {"username": u, "passwordFile": "/nonexistent"},
            "registration": {"expiresSeconds": max(60, expires), "retryIntervalSeconds": 5,
                             "firstRetryIntervalSeconds": 1, "jitterSeconds": 0},
        })
        out.append(ResolvedAccount(acc, Secretish(u, pw), expires_override=expires))
    return out


def _in_process_agent(lab, users, mode: str, address: str, expires: int = 60):
    from sipfleet.api.models import AgentSettings
    from sipfleet_agent.worker.engine import Agent

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    settings = AgentSettings(sip_address=address, http_port=0, status_debounce_ms=0)
    agent = Agent(settings, lambda k, n, d: None, name="bench")
    agent.start(_resolved(lab, users, mode, expires))
    return agent


def _wait(pred, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(interval)


def _all_registered(agent) -> bool:
    snap = agent.snapshot()
    return all(a["status"]["registration"]["state"] == "Registered" and a["status"]["route"].get("inSync")
               for a in snap["accounts"])


# ---------------------------------------------------------------------------------------------------- repair


def _repair(args: argparse.Namespace) -> int:
    with ExitStack() as stack:
        lab = _lab(args, stack)
        users = _users(lab, 1, "rep")
        agent = _in_process_agent(lab, users, args.mode, _client(lab, stack))
        stack.callback(lambda: (agent.request_stop(0), agent.wait(30)))
        _wait(lambda: _all_registered(agent), 60, "registration")
        name = users[0][0]
        durations: list[float] = []
        wire_ok = 0
        for i in range(args.repairs):
            before = agent.snapshot()["accounts"][0]["status"]["route"].get("lastRepair") or {}
            t_wall = time.time()
            agent.request_repair(name, trigger="user").result(10)

            def done():
                rep = agent.snapshot()["accounts"][0]["status"]["route"].get("lastRepair") or {}
                if rep.get("startedAt") != before.get("startedAt") and rep.get("result") != "in-progress":
                    return rep
                return None

            rep = _wait(done, 30, f"repair {i + 1}", interval=0.005)
            if rep["result"] != "repaired":
                print(f"repair {i + 1}: {rep['result']}", file=sys.stderr)
                continue
            durations.append(float(rep["durationMs"]))
            try:
                lab.wait_wire(lambda r: f":{name}@" in r.from_uri and r.expires != "0", node="P",
                              method="REGISTER", since=t_wall, timeout=10)
                wire_ok += 1
            except TimeoutError:
                pass
            _wait(lambda: _all_registered(agent), 30, "registered again", interval=0.01)
        p50, p99 = percentile(durations, 50), percentile(durations, 99)
        print(json.dumps({
            "benchmark": "agent-repair", "mode": args.mode, "repairs": len(durations),
            "repaired_register_seen_at_P": wire_ok,
            "latency_ms": {"p50": round(p50, 2) if p50 else None, "p99": round(p99, 2) if p99 else None,
                           "min": round(min(durations), 2) if durations else None,
                           "max": round(max(durations), 2) if durations else None},
        }))
        print(f"agent-repair ({args.mode}): {len(durations)} repairs, start -> first REGISTER via the route: "
              f"p50 {p50:.1f} ms, p99 {p99:.1f} ms (REGISTER seen at P for {wire_ok})")
    return 0


# ---------------------------------------------------------------------------------------------------- throughput


def _throughput(args: argparse.Namespace) -> int:
    with ExitStack() as stack:
        lab = _lab(args, stack, shm_mb=1024)
        lab.set_wire_log(False)
        users = _users(lab, args.accounts, "thr")
        agent = _in_process_agent(lab, users, "prevent", _client(lab, stack), expires=60)
        stack.callback(lambda: (agent.request_stop(0), agent.wait(30)))
        _wait(lambda: _all_registered(agent), 60, "registration")

        counts = {"ok": 0, "fail": 0}
        running = {"on": True}

        def hook(rt, code, expires):
            if 200 <= code < 300 and expires > 0:
                counts["ok"] += 1
            else:
                counts["fail"] += 1
            if running["on"] and rt.acc is not None:
                # refresh again from the loop, not from inside pjsua's callback
                agent.call_later(0, lambda: rt.acc is not None and running["on"] and rt.acc.setRegistration(True))

        def start():
            agent.reg_hook = hook
            for rt in agent.accounts.values():
                rt.acc.setRegistration(True)

        sent0 = agent.metrics.registers_sent._value.get()
        agent.submit(start).result(10)
        t0 = time.monotonic()
        time.sleep(args.seconds)
        ok, fail = counts["ok"], counts["fail"]
        elapsed = time.monotonic() - t0
        sent = agent.metrics.registers_sent._value.get() - sent0
        running["on"] = False
        agent_rate = ok / elapsed
        agent_req_rate = sent / elapsed

        # enough calls for about --seconds at the agent's own rate (SIPp's rate is computed from its duration)
        n_calls = int(max(1000, args.seconds * max(agent_rate, 100)))
        res = lab.sipp("register", "P", users=users, calls=n_calls, concurrency=args.accounts, rate=200000,
                       route=f"<{lab.proxy_uri()}>", expires=60, timeout=args.seconds * 3 + 30)
        sipp_rate = res.successful / res.duration_s if res.duration_s else 0.0
        print(json.dumps({
            "benchmark": "agent-throughput", "accounts": args.accounts,
            "agent": {"registrations_per_s": round(agent_rate, 1), "register_requests_per_s": round(agent_req_rate, 1),
                      "ok": ok, "failed": fail, "seconds": round(elapsed, 2)},
            "sipp": {"registrations_per_s": round(sipp_rate, 1),
                     "register_requests_per_s": round(2 * sipp_rate, 1),
                     "successful": res.successful, "failed": res.failed, "seconds": round(res.duration_s, 2)},
        }))
        print(f"agent-throughput: agent {agent_rate:.0f} registrations/s ({agent_req_rate:.0f} REGISTER/s sent, "
              f"{fail} failed) vs SIPp {sipp_rate:.0f} registrations/s ({2 * sipp_rate:.0f} REGISTER/s incl. 401 "
              f"round trips), {args.accounts} accounts/users through P")
    return 0
