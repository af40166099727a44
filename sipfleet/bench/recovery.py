"""``sipfleet bench recovery``: a fleet re-registering through a registrar outage, and what the registrar sees when
it comes back (numbers are printed, never asserted).

N accounts (default 1000, the users' default registration policy) converge through the operator on the local
cluster and SIP lab (bench/fleet.py's Env). Then the registrar R is blackholed (``partition``: every packet in and
out of R dropped, so the proxy P gets no answer and says 408 after its transaction timer) for ``--outage`` seconds,
and every account is asked to re-register at its start, so each must send a REGISTER while R is gone: through the
agents' debug hook (``POST /debug/reregister``, one call per agent pod, all at once), since the user's way (an
annotation per account) takes ~60 s for 1,000 accounts on 2 cores, longer than the outage. ``--ask reregister``
(the default) is the user's re-register: an un-REGISTER, then a REGISTER from a new registration client;
``--ask refresh`` is a refresh of the current client (what a registrar going away shortly before every account's
refresh would see; ``POST /debug/refresh``). R is healed, and the bench watches until every account holds a grant given after the heal.

Printed: the time from the heal until every account was Registered again by a grant of R after the heal (from
status: ``expiresAt - expiresSeconds``, the grant's time on the agent's clock, which is this machine's), its p50;
the REGISTERs R received per second after the heal (from R's wire log: the peak and the seconds around it); the
REGISTERs the fleet sent during the outage (P's wire log: retransmissions included; the un-REGISTERs of the
re-registrations, ``Expires: 0``, and the registration attempts, distinct Call-IDs, also on their own). ``--limit`` is the operator's
registrar-wide REGISTER budget (``SIPFLEET_REGISTER_RATE_LIMIT``; 0: none).
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

from sipfleet.kubectl.fmt import parse_time, percentile

from .faults_fleet import agent_pods
from .fleet import Env, _ready
from .repair import AGENT_HTTP_PORT


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recovery", help="registrar blackholed while every account re-registers: time to all "
                       "Registered, peak REGISTER/s at R, REGISTERs during the outage",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--accounts", "-n", type=int, default=1000)
    p.add_argument("--outage", type=float, default=30, help="seconds R is blackholed (default 30)")
    p.add_argument("--limit", type=float, default=0,
                   help="the operator's registrar-wide REGISTER budget per second (0: none)")
    p.add_argument("--ask", choices=("reregister", "refresh"), default="reregister",
                   help="what every account is asked to do at the outage's start (default reregister)")
    p.add_argument("--cluster", default="bench", help="local cluster name (started if not running)")
    p.add_argument("--state-dir", help="that cluster's state directory (default: sipfleet's state root)")
    p.add_argument("--timeout", type=float, default=1200, help="give up waiting for a phase after this long")
    p.add_argument("--keep", action="store_true", help="leave cluster, lab and namespace running")
    p.set_defaults(func=_run)


def grant_time(obj: dict) -> float | None:
    """When the account's current grant was given (epoch s), from ``expiresAt - expiresSeconds``; None unless
    Registered with both."""
    reg = (obj.get("status") or {}).get("registration") or {}
    at, secs = parse_time(reg.get("expiresAt")), reg.get("expiresSeconds")
    if reg.get("state") != "Registered" or at is None or not isinstance(secs, int):
        return None
    return at.timestamp() - secs


def per_second(times: list[float], origin: float) -> Counter:
    """REGISTERs per whole second after ``origin`` (second 0: the first second)."""
    return Counter(int(t - origin) for t in times if t >= origin)


def user_of(uri: str) -> str:
    """The user part of a From URI (``sip:alice@lab;tag`` -> ``alice``)."""
    rest = uri.split(":", 1)[-1]
    return rest.split("@", 1)[0] if "@" in rest else ""


def _ask_all(env: Env, what: str) -> tuple[int, float]:
    """Every agent pod's accounts asked to re-register or refresh at once (debug hook); (pods, seconds it took)."""
    ips = [p.status.pod_ip for p in agent_pods(env) if p.status.pod_ip]

    def one(ip: str) -> None:
        req = urllib.request.Request(f"http://{ip}:{AGENT_HTTP_PORT}/debug/{what}", data=b"", method="POST")
        with urllib.request.urlopen(req, timeout=30) as r:
            r.read()

    t = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, ips))
    return len(ips), time.monotonic() - t


def _run(args: argparse.Namespace) -> int:
    args.operator_env = {"SIPFLEET_AGENT_DEBUG_HOOKS": "true"}
    if args.limit:
        args.operator_env["SIPFLEET_REGISTER_RATE_LIMIT"] = f"{args.limit:g}"
    with ExitStack() as stack:
        env = Env(args, stack)
        accs = env.create_accounts(args.accounts, "rc")
        names = {n for n, _ in accs}
        users = {u for _, u in accs}
        ready = env.wait_all(names, _ready, "Ready", args.timeout)
        if len(ready) != len(names):
            return 1
        print(f"{len(names)} accounts Ready {max(ready.values()) - env.t_apply:.1f} s after the first create", flush=True)
        time.sleep(10)  # the start-up's tail: nothing in flight when the outage begins

        def mine(r) -> bool:
            return user_of(r.from_uri) in users

        t_out = time.time()
        env.lab.inject("R", "partition")
        try:
            pods, took = _ask_all(env, args.ask)
            print(f"R blackholed; the {len(names)} accounts of {pods} agent pods asked to {args.ask} ({took:.1f} s)",
                  flush=True)
            time.sleep(max(0.0, args.outage - (time.time() - t_out)))
        finally:
            # the heal's start: R may answer before the call returns (its nft table is gone at once), and a grant
            # then is one after the outage; the times below are counted from here (longer by the call's own time)
            t_heal = time.time()
            env.lab.inject("R", "heal")
        print(f"R healed after {t_heal - t_out:.1f} s (the heal took {time.time() - t_heal:.2f} s); waiting for "
              "every account to hold a grant given after it", flush=True)
        seen = env.wait_all(names, lambda o: (grant_time(o) or 0) >= t_heal - 0.2, "re-registered", args.timeout)
        time.sleep(5)  # R's wire log of the last seconds
        recs_p = [r for r in env.lab.wire(since=t_out, node="P", method="REGISTER") if mine(r)]
        at_p = [r.at for r in recs_p]
        unreg_p = [r for r in recs_p if r.at < t_heal and r.expires.strip() == "0"]
        at_r = [r.at for r in env.lab.wire(since=t_heal, node="R", method="REGISTER") if mine(r)]
        grants = {}
        for o in env.accounts():
            g = grant_time(o)
            if o["metadata"]["name"] in names and g is not None and g >= t_heal - 0.2:
                grants[o["metadata"]["name"]] = g - t_heal
        secs = per_second(at_r, t_heal)
        peak_s, peak = max(secs.items(), key=lambda kv: kv[1]) if secs else (None, 0)
        done = sorted(grants.values())
        print(json.dumps({
            "benchmark": "recovery", "accounts": len(names), "outage_s": round(t_heal - t_out, 1),
            "limit_per_s": args.limit or None, "asked": args.ask,
            "all_registered_after_heal_s": round(done[-1], 2) if len(done) == len(names) else None,
            "registered_after_heal_p50_s": round(percentile(done, 50), 2) if done else None,
            "re_registered": len(done), "seen_by_watch": len(seen),
            "peak_registers_per_s_at_R": peak, "peak_second_after_heal": peak_s,
            "registers_at_R_first_20_s": [secs.get(i, 0) for i in range(20)],
            "registers_at_R_until_settled": len(at_r),
            "registers_at_P_during_outage": len([t for t in at_p if t < t_heal]),
            "of_which_unregisters": len(unreg_p),
            "registration_attempts_at_P_during_outage": len({r.call_id for r in recs_p if r.at < t_heal
                                                            and r.expires.strip() != "0"}),
            "registers_at_P_outage_start_to_settled": len(at_p),
        }), flush=True)
        return 0 if len(done) == len(names) else 1
