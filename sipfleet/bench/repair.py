"""``sipfleet bench repair``: N accounts (default 100) in routeMode account drift at once; how fast they are back.

The drift is real pjsua behaviour on the wire, induced with the agents' debug hook ``POST /debug/drift`` (the
operator runs with ``SIPFLEET_AGENT_DEBUG_HOOKS=true`` for this benchmark; off by default): setRegistration(False)
then (True) on the same account, after which pjsua 2.15.1 sends REGISTER to the Service-Route's edge E (PJSIP issue
4066). ``--self-heal`` (the default, ``spec.drift.selfHeal: true``): the agents repair on their own;
``--operator`` (``selfHeal: false``): the operator's ladder repairs with a token.

Printed (never asserted): per account the wire time from its first drifted REGISTER at E to its next REGISTER via
P (p50/p99), the status time (the agent's ``lastRepair.durationMs`` with self-heal, the ladder's
``lastDurationMs`` with the operator), when the last account showed repaired in status, and the API writes
during the repair (the operator's own counter, and the apiserver's by verb and resource for all clients).
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

from sipfleet.kubectl.fmt import percentile

from .fleet import Env, _fmt_ms, _op_writes, _ready

AGENT_HTTP_PORT = 8080


def register(sub: argparse._SubParsersAction) -> None:
    help_text = "drift N accounts at once (agent debug hook), time to repaired (p50/p99), checked on the wire"
    p = sub.add_parser("repair", help=help_text, description=help_text)
    p.add_argument("--accounts", "-n", type=int, default=100)
    p.add_argument("--cluster", default="bench", help="local cluster name (started if not running)")
    p.add_argument("--timeout", type=float, default=900, help="give up after this many seconds")
    p.add_argument("--keep", action="store_true", help="leave cluster, lab and namespace running")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--self-heal", dest="mode", action="store_const", const="self-heal",
                      help="spec.drift.selfHeal true (the default): the agents repair on their own")
    mode.add_argument("--operator", dest="mode", action="store_const", const="operator",
                      help="spec.drift.selfHeal false: the operator's ladder repairs (a repair token)")
    p.set_defaults(func=_repair, mode="self-heal")


def _post_drift(pod_ip: str, account: str) -> None:
    req = urllib.request.Request(f"http://{pod_ip}:{AGENT_HTTP_PORT}/debug/drift?account={account}", data=b"",
                                 method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        r.read()


def _repaired(self_heal: bool, t0_iso: str):
    def pred(obj: dict) -> bool:
        st = obj.get("status") or {}
        route = st.get("route") or {}
        if route.get("inSync") is not True or not _ready(obj):
            return False
        if self_heal:
            last = route.get("lastRepair") or {}
            return last.get("trigger") == "self-heal" and last.get("result") == "repaired" \
                and (last.get("startedAt") or "") >= t0_iso
        lad = st.get("ladder") or {}
        return lad.get("phase") == "Idle" and lad.get("lastDurationMs") is not None and bool(lad.get("token"))
    return pred


def _repair(args: argparse.Namespace) -> int:
    self_heal = args.mode == "self-heal"
    args.operator_env = {"SIPFLEET_AGENT_DEBUG_HOOKS": "true"}
    with ExitStack() as stack:
        env = Env(args, stack)
        accs = env.create_accounts(args.accounts, "rp", routeMode="account",
                                   drift={"selfHeal": self_heal, "repairTimeoutSeconds": 30, "maxPodRestarts": 1})
        names = {n for n, _ in accs}
        user_of = dict(accs)
        seen = env.wait_all(names, _ready, "Ready", args.timeout)
        if len(seen) != len(names):
            return 1
        pods = {p.metadata.name: p.status.pod_ip for p in env.core.list_namespaced_pod(
            env.ns, label_selector="app.kubernetes.io/managed-by=sipfleet-operator").items}
        host = {o["metadata"]["name"]: pods.get(((o.get("status") or {}).get("agent") or {}).get("pod"))
                for o in env.accounts() if o["metadata"]["name"] in names}
        missing = sorted(n for n, ip in host.items() if not ip)
        if missing:
            print(f"no agent pod IP for {len(missing)} accounts (e.g. {missing[:3]})", flush=True)
            return 1
        w0 = _op_writes(env)
        a0 = env.apiserver_writes()
        t0 = time.time()
        t0_iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t0)) + f".{int(t0 * 1000) % 1000:03d}Z"
        with ThreadPoolExecutor(8) as pool:  # everyone drifts at (nearly) once
            list(pool.map(lambda n: _post_drift(host[n], n), sorted(names)))
        print(f"drift hook called for {len(names)} accounts in {time.time() - t0:.1f} s ({args.mode})", flush=True)

        done = env.wait_all(names, _repaired(self_heal, t0_iso), "repaired", args.timeout)
        time.sleep(2.0)  # the lab's wire logs catch up
        regs = env.lab.wire(since=t0, method="REGISTER")
        drifted = repaired_ok = 0
        wall: list[float] = []
        durations: list[float] = []
        for obj in env.accounts():
            n = obj["metadata"]["name"]
            if n not in names:
                continue
            mine = [r for r in regs if f":{user_of[n]}@" in r.from_uri and r.expires != "0"]
            at_e = [r for r in mine if r.node == "E"]
            if not at_e:
                continue
            drifted += 1
            first = min(r.at for r in at_e)
            drifted_ids = {r.call_id for r in at_e}
            via_p = [r.at for r in mine if r.node == "P" and r.at > first and r.call_id not in drifted_ids]
            if via_p:
                repaired_ok += 1
                wall.append((min(via_p) - first) * 1000)
            st = obj.get("status") or {}
            ms = ((st.get("route") or {}).get("lastRepair") or {}).get("durationMs") if self_heal \
                else (st.get("ladder") or {}).get("lastDurationMs")
            if ms is not None and n in done:
                durations.append(float(ms))
        methods: dict[str, int] = {}
        for obj in env.accounts():
            st = obj.get("status") or {}
            m = ((st.get("route") or {}).get("lastRepair") or {}).get("trigger") if self_heal \
                else (st.get("ladder") or {}).get("lastMethod")
            methods[str(m)] = methods.get(str(m), 0) + 1
        a1 = env.apiserver_writes()
        api = {k: a1[k] - a0.get(k, 0.0) for k in a1 if a1[k] - a0.get(k, 0.0) > 0 and not k.startswith("DELETE")}
        result = {
            "benchmark": "repair", "mode": args.mode, "accounts": len(names), "drifted_on_wire": drifted,
            "repaired_on_wire": repaired_ok, "repaired_status": len(done), "methods": methods,
            "wire_first_drift_to_via_P_p50_ms": percentile(wall, 50), "wire_p99_ms": percentile(wall, 99),
            "wire_max_ms": max(wall) if wall else None,
            "status_duration_p50_ms": percentile(durations, 50), "status_duration_p99_ms": percentile(durations, 99),
            "all_repaired_in_status_after_s": round(max(done.values()) - t0, 2) if done else None,
            "operator_writes_during_repair": _op_writes(env, w0),
            "apiserver_writes_during_repair_all_clients": api,
        }
        print(json.dumps(result), flush=True)
        print(f"repair ({args.mode}): {repaired_ok}/{drifted} drifted accounts back via P; wire p50 "
              f"{_fmt_ms(result['wire_first_drift_to_via_P_p50_ms'])}, p99 {_fmt_ms(result['wire_p99_ms'])}; "
              f"all repaired in status after {result['all_repaired_in_status_after_s']} s", flush=True)
        return 0 if repaired_ok == drifted == len(names) else 1
