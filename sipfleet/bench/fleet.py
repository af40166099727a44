"""Fleet benchmarks through the operator (numbers are printed, never asserted).

``sipfleet bench converge`` apply N accounts (default 200) -> time until all are Registered (and Ready)
``sipfleet bench repair``   see :mod:`sipfleet.bench.repair` (it uses this module's :class:`Env`)
``sipfleet bench steady``   N accounts (default 50) converge, then nothing changes for D seconds (default 300):
                            API writes per account (apiserver's apiserver_request_total and the operator's own
                            counter) and the operator's RSS

Each run uses a local cluster (``--cluster``, default ``bench``, started when not running and stopped afterwards
unless ``--keep``), a SIP lab ``bench-<cluster>`` (a free lab slot, its own network namespaces) and a
``sipfleet-operator`` child process watching only the benchmark's namespace. Every process is stopped by PID.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from sipfleet.api.models import GROUP, PLURAL, VERSION
from sipfleet.kubectl.fmt import percentile

POLL_S = 0.5  # on_poll's period while watching


def register(sub: argparse._SubParsersAction) -> None:
    for name, func, default_n, help_text in (
        ("converge", _converge, 200, "apply N accounts, time until all Registered"),
        ("steady", _steady, 50, "API writes per account and operator RSS while nothing changes"),
    ):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--accounts", "-n", type=int, default=default_n)
        p.add_argument("--cluster", default="bench", help="local cluster name (started if not running)")
        p.add_argument("--timeout", type=float, default=900, help="give up after this many seconds")
        p.add_argument("--keep", action="store_true", help="leave cluster, lab and namespace running")
        if name == "steady":
            p.add_argument("--duration", type=float, default=300, help="observation window in seconds")
        p.set_defaults(func=func)


# ---------------------------------------------------------------------------------------------------- helpers


def _fmt_ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.0f} ms" if v < 10000 else f"{v / 1000:.1f} s"


class Env:
    """Cluster + lab + operator + namespace for one benchmark run."""

    def __init__(self, args: argparse.Namespace, stack: ExitStack):
        from kubernetes import client

        from sipfleet.localenv.cluster import LocalCluster
        from sipfleet.localenv.siplab import SipLab
        from sipfleet.localenv.operator_process import OperatorProcess

        self.args = args
        self.stack = stack
        t = time.monotonic()
        self.cluster = LocalCluster(args.cluster, state_dir=getattr(args, "state_dir", None))
        started_cluster = not self.cluster.running()
        self.cluster.up(fresh=started_cluster, timeout=300)
        if started_cluster and not args.keep:
            stack.callback(self.cluster.down)
        from sipfleet.localenv.imagebuild.build import build_images

        self.cluster.load_images([Path(b.archive) for b in build_images()])  # cached when unchanged
        self.lab = SipLab(f"bench-{args.cluster}", shm_mb=512)
        started_lab = not self.lab.is_up()
        self.lab.up(timeout=120)
        if started_lab and not args.keep:
            stack.callback(self.lab.down)
        self.lab.join(self.cluster.netns, self.cluster.net.slot)  # pods reach P, R and E
        self.api = self.cluster.api_client()
        stack.callback(self.api.close)
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self._apply_crd()
        self.ns = f"bench-{uuid.uuid4().hex[:6]}"
        self.core.create_namespace({"metadata": {"name": self.ns, "labels": {
            "sipfleet.io/bench": "true", "pod-security.kubernetes.io/enforce": "restricted"}}})
        log_dir = Path(tempfile.mkdtemp(prefix="sipfleet-bench-"))
        self.operator = OperatorProcess(self.cluster.kubeconfig, log_dir / "operator.log", namespaces=self.ns,
                                        extra_env=getattr(args, "operator_env", None))
        self.operator.start()
        stack.callback(self.operator.stop)
        if not args.keep:  # runs before the operator stops: it releases the accounts' finalizers
            stack.callback(self._delete_namespace)
        print(f"# cluster {args.cluster}, lab {self.lab.subnet}.x, namespace {self.ns}, operator log "
              f"{self.operator.log_path} (setup {time.monotonic() - t:.1f} s)", flush=True)
        others = [o for o in self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
                  if o["metadata"]["namespace"] != self.ns]
        if others:  # e.g. left by --keep: their agents run (and write: apiserver_request_total has no namespace)
            print(f"# WARNING: {len(others)} SipAccounts in other namespaces: their agents run beside this bench "
                  "and the API write counts include their writes", flush=True)

    def _apply_crd(self) -> None:
        self.cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f",
                             str(Path(__file__).resolve().parents[2] / "crds" / f"{PLURAL}.{GROUP}.yaml"))
        self.cluster.kubectl("wait", "--for=condition=Established", f"crd/{PLURAL}.{GROUP}", "--timeout=60s")

    def _delete_namespace(self) -> None:
        """Delete the namespace while the operator still runs (finalizers), waiting a bounded time."""
        from kubernetes.client.rest import ApiException

        try:
            self.core.delete_namespace(self.ns)
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                try:
                    self.core.read_namespace(self.ns)
                except ApiException as e:
                    if e.status == 404:
                        return
                time.sleep(1)
            print(f"# namespace {self.ns} still terminating after 180 s", flush=True)
        except Exception as e:  # noqa: BLE001 - best effort at exit
            print(f"# could not delete namespace {self.ns}: {e}", flush=True)

    def create_accounts(self, n: int, prefix: str, **spec_extra: Any) -> list[tuple[str, str]]:
        """(account name, lab username) for n new accounts. Lab users and Secrets are created first (untimed);
        ``self.t_apply`` is when the first SipAccount was created, ``self.created_at`` per account."""
        out = []
        creds = [(f"{prefix}{i:03d}x{uuid.uuid4().hex[:4]}", secrets.token_urlsafe(10)) for i in range(n)]
        t = time.monotonic()
        self.lab.add_users(creds)
        # the lab keeps its users across runs and renders them all into R's config: take ours out again
        self.stack.callback(self.lab.remove_users, [u for u, _ in creds])
        for i, (user, password) in enumerate(creds):
            name = f"{prefix}{i:03d}"
            self.core.create_namespaced_secret(
                self.ns, {"metadata": {"name": f"{name}-creds"}, "stringData": {"username": user, "password": password}}
            )
            out.append((name, user))
        print(f"prepared {n} lab users and Secrets in {time.monotonic() - t:.1f} s (not timed)", flush=True)
        self.created_at: dict[str, float] = {}
        self.t_apply = time.time()

        def create(item: tuple[str, str]) -> None:
            name, user = item
            spec = {
                "aor": self.lab.aor(user), "registrar": self.lab.registrar_uri(), "route": [self.lab.proxy_uri()],
                "credentials": {"secretName": f"{name}-creds"}, **spec_extra,
            }
            self.custom.create_namespaced_custom_object(
                GROUP, VERSION, self.ns, PLURAL,
                {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SipAccount", "metadata": {"name": name}, "spec": spec},
            )
            self.created_at[name] = time.time()

        with ThreadPoolExecutor(8) as pool:  # like `kubectl apply` of many objects: latency, not CPU, bound
            list(pool.map(create, out))
        print(f"created {n} SipAccounts in {time.time() - self.t_apply:.1f} s", flush=True)
        return out

    def accounts(self) -> list[dict]:
        """The namespace's SipAccounts from the apiserver's watch cache (``resourceVersion=0``: no etcd read, as
        an informer's relist would do), so that polling a thousand of them does not load what is measured."""
        return self.custom.list_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, resource_version="0",
                                                         _request_timeout=60)["items"]

    @staticmethod
    def cond(obj: dict, type_: str) -> dict | None:
        return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), None)

    def wait_all(self, names: set[str], pred, what: str, timeout: float) -> dict[str, float]:
        """Poll until pred(obj) holds for every name; returns when each was first seen so."""
        return self.first_seen(names, {what: pred}, what, timeout)[what]

    def first_seen(self, names: set[str], preds: dict, until: str, timeout: float,
                   on_poll=lambda: None) -> dict[str, dict[str, float]]:
        """Watch until ``preds[until]`` holds for every name; returns, for each predicate, when each name was first
        seen to satisfy it (``on_poll`` is called at most every ``POLL_S``, e.g. to sample the operator's RSS).

        One list from the watch cache, then a watch from its resourceVersion (listed again when the watch ends or
        its version is gone): the apiserver sends each change once, where polling a list every half second cost it
        ~0.1 s of cpu per 100 accounts per list on this machine, cpu the measured fleet did not get. Times are when
        the change arrived here, not the next poll."""
        seen: dict[str, dict[str, float]] = {p: {} for p in preds}
        deadline = time.monotonic() + timeout
        marks = {"print": time.monotonic(), "poll": 0.0}

        def look(obj: dict) -> bool:
            now = time.time()
            n = obj["metadata"]["name"]
            if n in names:
                for p, pred in preds.items():
                    if n not in seen[p] and pred(obj):
                        seen[p][n] = now
            if time.monotonic() - marks["poll"] >= POLL_S:
                marks["poll"] = time.monotonic()
                on_poll()
            if time.monotonic() - marks["print"] > 10:
                marks["print"] = time.monotonic()
                print("  ... " + ", ".join(f"{len(v)}/{len(names)} {p}" for p, v in seen.items()), flush=True)
            return len(seen[until]) == len(names)

        while time.monotonic() < deadline:
            try:
                listed = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL,
                                                                   resource_version="0", _request_timeout=60)
                for o in listed["items"]:
                    look(o)
                if len(seen[until]) == len(names):
                    return seen
                w = watch.Watch()
                for ev in w.stream(self.custom.list_namespaced_custom_object, GROUP, VERSION, self.ns, PLURAL,
                                   resource_version=listed["metadata"]["resourceVersion"],
                                   timeout_seconds=max(1, min(60, int(deadline - time.monotonic()))),
                                   _request_timeout=90):
                    if ev.get("type") == "ERROR":  # e.g. 410 Gone: list again
                        break
                    if ev.get("type") in ("ADDED", "MODIFIED") and look(ev["object"]):
                        w.stop()
                        return seen
                    if time.monotonic() >= deadline:
                        w.stop()
                        break
            except (ApiException, urllib3.exceptions.HTTPError) as e:  # an overloaded apiserver: say it, go on
                print(f"  ... watching SipAccounts failed ({getattr(e, 'status', None) or type(e).__name__}); "
                      "trying again", flush=True)
                time.sleep(0.5)
        print(f"  TIMEOUT: {len(seen[until])}/{len(names)} {until} after {timeout:.0f} s", flush=True)
        return seen

    def apiserver_writes(self) -> dict[str, float]:
        """apiserver_request_total summed by resource for write verbs (all clients)."""
        text = self.cluster.kubectl("get", "--raw", "/metrics", timeout=60).stdout
        out: dict[str, float] = {}
        for line in text.splitlines():
            if not line.startswith("apiserver_request_total{"):
                continue
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            if labels.get("verb") not in ("POST", "PUT", "PATCH", "DELETE", "APPLY", "CREATE", "UPDATE"):
                continue
            key = f"{labels['verb']} " + labels.get("resource", "") + (
                f"/{labels['subresource']}" if labels.get("subresource") else "")
            out[key] = out.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
        return out


def _op_writes(env: "Env", since: dict[str, float] | None = None) -> dict[str, float]:
    """The operator's own write counter by verb/kind (minus ``since``); {} when its metrics are not reachable."""
    try:
        m = env.operator.metrics()
    except Exception:  # noqa: BLE001 - numbers are informative only
        return {}
    out = {}
    for k, v in m.items():
        if k.startswith("sipfleet_operator_api_writes_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', k))
            d = v - (since or {}).get(k, 0.0)
            if d > 0:
                out[f"{labels.get('verb')} {labels.get('kind')}"] = d
    return out if since is not None else m


def _registered(obj: dict) -> bool:
    c = Env.cond(obj, "Registered")
    return bool(c and c["status"] == "True")


def _ready(obj: dict) -> bool:
    c = Env.cond(obj, "Ready")
    return bool(c and c["status"] == "True")


# ---------------------------------------------------------------------------------------------------- converge


#: where the time of a converge goes, per account: the first moment each holds (in this order, mostly)
PHASES = {
    "placed": lambda o: Env.cond(o, "AgentReady") is not None,  # the operator's first status write
    "agent_reported": lambda o: bool(((o.get("status") or {}).get("agent") or {}).get("pod")),  # agent's first
    "register_answered": lambda o: ((o.get("status") or {}).get("registration") or {}).get("code") is not None,
    "agent_pod_ready": lambda o: (Env.cond(o, "AgentReady") or {}).get("status") == "True",
    "registered": _registered,
    "ready": _ready,
}


def _converge(args: argparse.Namespace) -> int:
    with ExitStack() as stack:
        env = Env(args, stack)
        a0 = env.apiserver_writes()
        accs = env.create_accounts(args.accounts, "cv")
        t0 = env.t_apply
        names = {n for n, _ in accs}
        peak = [0]
        seen = env.first_seen(names, PHASES, "ready", args.timeout,
                              on_poll=lambda: peak.append(max(peak.pop(), env.operator.rss_bytes() or 0)))
        peak_rss = peak[0]
        time.sleep(5)  # the tail: the last status writes, kopf's bookkeeping
        a1 = env.apiserver_writes()
        api = {k: a1[k] - a0.get(k, 0.0) for k in a1 if a1[k] - a0.get(k, 0.0) > 0 and not k.startswith("DELETE")
               and k.split(" ")[1] not in ("events", "leases")}
        status_writes = sum(v for k, v in api.items() if k.endswith("sipaccounts/status") and not k.startswith("DELETE"))
        try:
            op_status = env.operator.metrics().get("sipfleet_status_patches_total", 0.0)
        except Exception:  # noqa: BLE001 - numbers are informative only
            op_status = float("nan")
        agents = len(env.core.list_namespaced_config_map(
            env.ns, label_selector="app.kubernetes.io/managed-by=sipfleet-operator").items)
        reg = seen["registered"]
        lat = [(reg[n] - env.created_at[n]) * 1000 for n in reg]

        def phase(p: str) -> dict:  # seconds after the first create: when half of the accounts / all of them
            ts = sorted(v - t0 for v in seen[p].values())
            return {"n": len(ts), "p50_s": round(percentile(ts, 50), 2) if ts else None,
                    "all_s": round(ts[-1], 2) if len(ts) == len(names) else None}

        print(json.dumps({
            "benchmark": "converge", "accounts": len(names), "registered": len(reg), "ready": len(seen["ready"]),
            "agents": agents,
            "all_registered_after_first_create_s": round(max(reg.values()) - t0, 2) if reg else None,
            "per_account_to_registered_p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99),
            "phases_after_first_create": {p: phase(p) for p in PHASES},
            "sipaccount_status_writes_all_clients": status_writes,
            "sipaccount_status_writes_per_account": round(status_writes / len(names), 2),
            "operator_sipaccount_status_writes_per_account": round(op_status / len(names), 2),
            "apiserver_writes_by_verb_resource_all_clients": api,  # pods: agent pods created (rolled ones too)
            "operator_rss_mib": round((env.operator.rss_bytes() or 0) / 2**20, 1),
            "operator_rss_mib_peak": round(peak_rss / 2**20, 1),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "operator_writes": _op_writes(env, {}),
        }), flush=True)
        return 0 if len(reg) == len(names) else 1


# ---------------------------------------------------------------------------------------------------- steady


def _steady(args: argparse.Namespace) -> int:
    with ExitStack() as stack:
        env = Env(args, stack)
        accs = env.create_accounts(args.accounts, "st")
        names = {n for n, _ in accs}
        seen = env.wait_all(names, _ready, "Ready", args.timeout)
        if len(seen) != len(names):
            return 1
        # let the tail of the start-up settle (agents' first status writes, kopf's bookkeeping)
        time.sleep(15)
        m0 = env.operator.metrics()
        a0 = env.apiserver_writes()
        rss0 = env.operator.rss_bytes() or 0
        t0 = time.monotonic()
        print(f"observing {len(names)} accounts for {args.duration:.0f} s with nothing changing ...", flush=True)
        while time.monotonic() - t0 < args.duration:
            time.sleep(min(30, args.duration - (time.monotonic() - t0)))
            print(f"  ... {time.monotonic() - t0:.0f} s", flush=True)
        m1 = env.operator.metrics()
        a1 = env.apiserver_writes()
        op_writes = {
            k: m1[k] - m0.get(k, 0.0) for k in m1
            if k.startswith("sipfleet_operator_api_writes_total") and m1[k] - m0.get(k, 0.0) > 0
        }
        api_delta = {k: a1[k] - a0.get(k, 0.0) for k in a1 if a1[k] - a0.get(k, 0.0) > 0}
        minutes = args.duration / 60.0
        op_total = sum(op_writes.values())
        # DELETE includes the namespace controller's deletecollection sweeps (other namespaces going away)
        sa_writes = sum(v for k, v in api_delta.items() if k.split(" ")[1].startswith("sipaccounts")
                        and not k.startswith("DELETE"))
        print(json.dumps({
            "benchmark": "steady", "accounts": len(names), "window_s": args.duration,
            "operator_writes_total": op_total,
            "operator_writes_per_account_per_10min": round(op_total / len(names) / minutes * 10, 4),
            "operator_writes": op_writes,
            "apiserver_writes_by_verb_resource_all_clients": {k: v for k, v in api_delta.items()
                                                               if not k.startswith("DELETE")},
            "sipaccount_create_update_patch_per_account_per_10min_all_clients": round(sa_writes / len(names) / minutes * 10, 4),
            "operator_rss_mib_start": round(rss0 / 2**20, 1),
            "operator_rss_mib_end": round((env.operator.rss_bytes() or 0) / 2**20, 1),
        }), flush=True)
        return 0


if __name__ == "__main__":  # pragma: no cover
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="cmd", required=True))
    ns = parser.parse_args()
    sys.exit(ns.func(ns))
