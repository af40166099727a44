"""``sipfleet demo`` (``make demo``): sipfleet end to end on this machine, with nothing but our own parts.

1. start (or reuse) the local control plane ``LocalCluster(name)`` and the SIP lab ``SipLab(name)``
   (Kamailio P, R, E) and add the lab users of ``examples/secrets.yaml`` at the registrar R;
2. install ``charts/sipfleet`` with the real helm binary; the node runner runs the operator pod;
3. ``kubectl apply`` the examples (their addresses follow the lab's slot), wait until every SipAccount is
   Registered and print ``kubectl get sipacc -o wide``;
4. inject a network fault into the path of the ``routeMode: account`` example: the registrar R holds its
   answers to REGISTER for a few seconds while the agent pod's address flaps (a /32 entry for the pod IP appears
   on ``lo`` and goes away again, which the agent notices and answers with pjsua's ``handleIpChange()``, while
   a REGISTER is in flight: PJSIP issue 4066's drift path in pjproject 2.15.1);
5. print a timeline: the drifted REGISTER on the wire (at E, bypassing P), the status going out of sync
   (RouteInSync False, RouteDrift), the repair (ladder step, method, duration), the first REGISTER through P
   again, and the SipAccount's Kubernetes events;
6. leave cluster and lab running (``--keep``, the default) and print how to use and stop them
   (``sipfleet demo --down``).

Exit code 0 only when the drift was seen (on the wire and in the status) and repaired (in the status and on
the wire); 1 with a message saying what did not happen otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "sipfleet"
EXAMPLES = REPO / "examples"
#: the lab addresses the example manifests are written for (lab slot 1); rewritten to the lab's at apply time
EXAMPLE_SUBNET = "10.213.201"
DEFAULT_NAME = "demo"
DEFAULT_NAMESPACE = "default"
RELEASE = "sipfleet"
RELEASE_NAMESPACE = "sipfleet-system"
#: how long R holds each answer to REGISTER while the agent's address flaps
HOLD_MS = 4000
FAULT_ATTEMPTS = 3


class DemoError(RuntimeError):
    """The demo could not go on; the message says what did not happen."""


# ------------------------------------------------------------------------------------------------ CLI


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--down", action="store_true",
                        help="stop the demo's SIP lab and control plane (by PID) and exit")
    parser.add_argument("--keep", action=argparse.BooleanOptionalAction, default=True,
                        help="leave cluster and lab running at the end (default); --no-keep stops them")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds for the whole demo once the binaries are built (default 600)")
    parser.add_argument("--name", default=DEFAULT_NAME, help="cluster and lab name (default demo)")
    parser.add_argument("--lab-slot", type=int, default=None,
                        help="SIP lab slot 1..49: P=10.213.(200+slot).1, R=.2, E=.3 (default: the first free one; "
                             "examples/ are written for slot 1)")
    parser.add_argument("--namespace", default=DEFAULT_NAMESPACE,
                        help="namespace of the example SipAccounts (default: default)")
    parser.add_argument("--state-dir", default=None,
                        help="state root (default $SIPFLEET_STATE or ~/.local/state/sipfleet): "
                             "clusters/<name>/ and labs/<name>/ under it")
    parser.add_argument("--accounts", default="all",
                        help="comma-separated example SipAccounts to apply (default all); the routeMode "
                             "account example is always included")
    parser.set_defaults(func=main)


def _terminated(signum, frame) -> None:  # noqa: ARG001
    raise KeyboardInterrupt(f"signal {signum}")


def main(args: argparse.Namespace) -> int:
    # SIGTERM like Ctrl-C: the fault is undone (address, R's injection) and --no-keep still tears down
    with contextlib.suppress(ValueError):  # not in the main thread
        signal.signal(signal.SIGTERM, _terminated)
    out = Output()
    demo = Demo(args, out)
    if args.down:
        return demo.down()
    try:
        return demo.run()
    except DemoError as e:
        out.fail(str(e))
        if args.keep and demo.cluster.records():
            out.line(f"cluster and lab are left running for a look (export KUBECONFIG={demo.cluster.kubeconfig}); "
                     f"stop them with: {demo.down_command()}")
        return 1
    except KeyboardInterrupt:
        out.fail("interrupted (an injected fault is undone: the /32 address removed, R answering normally)")
        return 130
    finally:
        demo.cleanup()
        if not args.keep:
            demo.teardown()


# ------------------------------------------------------------------------------------------------ output


def _utc(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).strftime("%H:%M:%S.%f")[:-3]


def _parse_time(s: str | None) -> float | None:
    if not s:
        return None
    try:
        return _dt.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class Output:
    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.steps = 6

    def _print(self, text: str = "") -> None:
        print(text, flush=True)

    def step(self, n: int, title: str) -> None:
        self._print()
        self._print(f"[{n}/{self.steps}] {title}   (+{time.monotonic() - self.t0:.1f} s)")

    def line(self, text: str = "") -> None:
        self._print(f"  {text}" if text else "")

    def block(self, text: str, indent: str = "    ") -> None:
        for ln in text.rstrip("\n").splitlines():
            self._print(indent + ln)

    def fail(self, text: str) -> None:
        self._print()
        self._print(f"DEMO FAILED after {time.monotonic() - self.t0:.1f} s: {text}")

    def elapsed(self) -> float:
        return time.monotonic() - self.t0


@dataclass
class Row:
    at: float
    where: str
    what: str


@dataclass
class Timeline:
    rows: list[Row] = field(default_factory=list)

    def add(self, at: float | None, where: str, what: str) -> None:
        if at is not None:
            self.rows.append(Row(at, where, what))

    def render(self, origin: float) -> str:
        rows = sorted(self.rows, key=lambda r: r.at)
        width = max([len(r.where) for r in rows] + [5])
        lines = [f"{'time (UTC)':<12}  {'+s':>7}  {'where':<{width}}  what"]
        for r in rows:
            lines.append(f"{_utc(r.at):<12}  {r.at - origin:>7.3f}  {r.where:<{width}}  {r.what}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ helpers


def _render_examples(subnet: str, wanted: set[str] | None, namespace: str) -> tuple[str, list[dict], list[dict]]:
    """The example manifests with their addresses moved to ``subnet``: (yaml, SipAccounts, Secrets)."""
    docs: list[dict] = []
    for f in sorted(EXAMPLES.glob("*.yaml")):
        text = f.read_text()
        if subnet != EXAMPLE_SUBNET:
            text = re.sub(re.escape(EXAMPLE_SUBNET) + r"\.(\d{1,3})\b", lambda m_: f"{subnet}.{m_.group(1)}", text)
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    accounts = [d for d in docs if d.get("kind") == "SipAccount"]
    if wanted is not None:
        drift = {a["metadata"]["name"] for a in accounts if a["spec"].get("routeMode") == "account"}
        unknown = wanted - {a["metadata"]["name"] for a in accounts}
        if unknown:
            raise DemoError(f"--accounts: no example SipAccount named {', '.join(sorted(unknown))}")
        accounts = [a for a in accounts if a["metadata"]["name"] in wanted | drift]
    needed = {a["spec"]["credentials"]["secretName"] for a in accounts}
    secrets = [d for d in docs if d.get("kind") == "Secret" and d["metadata"]["name"] in needed]
    for d in accounts + secrets:
        d["metadata"]["namespace"] = namespace
    return yaml.safe_dump_all(secrets + accounts, sort_keys=False), accounts, secrets


def _cond(obj: dict, typ: str) -> dict:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == typ:
            return c
    return {}


def _user_of(aor: str) -> str:
    m_ = re.match(r"^sips?:([^@;]+)@", aor)
    if not m_:
        raise DemoError(f"cannot take the user part of {aor!r}")
    return m_.group(1)


def _norm(uri: str) -> str:
    from sipfleet_agent.siplog import normalize_uri

    return normalize_uri(uri, "udp")


def _fmt_route(route: list[str]) -> str:
    return ", ".join(f"<{u}>" for u in route) if route else "(none)"


class StatusWatcher(threading.Thread):
    """Watches one SipAccount (a real API watch) and records when each field the timeline shows changed."""

    def __init__(self, cluster, namespace: str, name: str):
        super().__init__(name="demo-status-watcher", daemon=True)
        self.cluster = cluster
        self.namespace = namespace
        self.account = name
        self.changes: list[tuple[float, str, Any]] = []  # (time received, key, new value)
        self.last: dict[str, Any] = {}
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self.started_watching = threading.Event()

    @staticmethod
    def _view(obj: dict) -> dict[str, Any]:
        st = obj.get("status") or {}
        route = st.get("route") or {}
        ladder = st.get("ladder") or {}
        ris = _cond(obj, "RouteInSync")
        return {
            "inSync": route.get("inSync"),
            "firstHop": route.get("firstHop"),
            "effective": tuple(route.get("effective") or ()),
            "RouteInSync": (ris.get("status"), ris.get("reason")),
            "ladder": (ladder.get("phase"), ladder.get("token")),
            "registration": (st.get("registration") or {}).get("state"),
        }

    def _observe(self, obj: dict) -> None:
        now = time.time()
        view = self._view(obj)
        with self._lock:
            for k, v in view.items():
                if self.last.get(k, object()) != v:
                    self.changes.append((now, k, v))
            self.last = view

    def run(self) -> None:
        from kubernetes import client, watch

        from .api.models import GROUP, PLURAL, VERSION

        api = self.cluster.api_client()
        try:
            custom = client.CustomObjectsApi(api)
            sel = f"metadata.name={self.account}"
            while not self._halt.is_set():
                try:
                    lst = custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL,
                                                               field_selector=sel)
                    for obj in lst.get("items", []):
                        self._observe(obj)
                    rv = lst["metadata"]["resourceVersion"]
                    self.started_watching.set()
                    while not self._halt.is_set():
                        w = watch.Watch()
                        for ev in w.stream(custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace,
                                           PLURAL, field_selector=sel, resource_version=rv, timeout_seconds=2,
                                           _request_timeout=10):
                            obj = ev["object"]
                            if ev["type"] == "ERROR":
                                raise RuntimeError(str(obj))
                            rv = obj["metadata"]["resourceVersion"]
                            if ev["type"] in ("ADDED", "MODIFIED"):
                                self._observe(obj)
                            if self._halt.is_set():
                                w.stop()
                except Exception:  # noqa: BLE001 - expired resourceVersion, a dropped stream: list again
                    self._halt.wait(0.2)
        finally:
            api.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(15)

    def value_at(self, key: str, t: float) -> Any:
        """The value ``key`` had at time ``t`` (as recorded)."""
        with self._lock:
            value = None
            for tt, k, v in self.changes:
                if tt > t:
                    break
                if k == key:
                    value = v
            return value

    def seen(self, key: str, pred: Callable[[Any], bool], since: float = 0.0) -> float | None:
        """When ``key`` first took a value matching ``pred`` at or after ``since``."""
        with self._lock:
            for t, k, v in self.changes:
                if k == key and t >= since and pred(v):
                    return t
        return None


# ------------------------------------------------------------------------------------------------ the demo


class Demo:
    def __init__(self, args: argparse.Namespace, out: Output):
        from .localenv.cluster import LocalCluster
        from .localenv.siplab import SipLab

        self.args = args
        self.out = out
        root = Path(args.state_dir).expanduser().resolve() if args.state_dir else None
        self.state_root = root
        # Kept, the processes must outlive this command; with --no-keep they die with it even if it is killed.
        dwp = not args.keep and not args.down
        self.cluster = LocalCluster(args.name, state_dir=root / "clusters" / args.name if root else None,
                                    die_with_parent=dwp)
        lab_dir = root / "labs" / args.name if root else None
        self.lab = SipLab(args.name, state_dir=lab_dir, slot=args.lab_slot, die_with_parent=dwp)
        self.namespace = args.namespace
        self.deadline = time.monotonic() + float(args.timeout)
        self._added_addresses: list[str] = []
        self._faulted = False
        self._signal_only = bool(os.environ.get("SIPFLEET_DEMO_SIGNAL_FAULT"))
        self.timeline = Timeline()

    # ------------------------------------------------------------------ small tools
    @property
    def _ns(self) -> str:
        """`` -n <namespace>`` for printed kubectl commands, empty for the default namespace."""
        return "" if self.namespace == "default" else f" -n {self.namespace}"

    def remaining(self, cap: float) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise DemoError(f"--timeout {self.args.timeout:.0f} s reached")
        return min(cap, left)

    @property
    def demo_state(self) -> Path:
        return self.cluster.dir / "demo.json"

    def _record(self, **kw: Any) -> None:
        data: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(self.demo_state.read_text())
        data.update(kw)
        self.demo_state.parent.mkdir(parents=True, exist_ok=True)
        self.demo_state.write_text(json.dumps(data, indent=2) + "\n")

    def kubectl(self, *args: str, check: bool = True, timeout: float = 120, input: str | None = None):
        from .localenv.cluster import ClusterError

        try:
            return self.cluster.kubectl(*args, check=check, timeout=timeout, input=input)
        except ClusterError as e:
            raise DemoError(str(e)) from None
        except subprocess.TimeoutExpired:
            raise DemoError(f"kubectl {' '.join(args)} did not finish within {timeout:.0f} s") from None

    def helm(self, helm_bin: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        env = dict(os.environ)
        for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
            env[var] = str(self.cluster.dir / "helm" / var.lower().removeprefix("helm_").removesuffix("_home"))
        cmd = [str(helm_bin), "--kubeconfig", str(self.cluster.kubeconfig), *args]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DemoError(f"helm {' '.join(args[:2])} did not finish within {timeout:.0f} s") from None
        if res.returncode != 0:
            raise DemoError(f"helm {' '.join(args[:2])} failed ({res.returncode}):\n{res.stdout}{res.stderr}")
        return res

    def _ip(self, *args: str) -> None:
        ip = shutil.which("ip") or "/usr/sbin/ip"
        try:
            res = subprocess.run([ip, *args], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise DemoError(f"ip {' '.join(args)}: {e}") from None
        if res.returncode != 0:
            raise DemoError(f"ip {' '.join(args)} failed ({res.returncode}): {res.stderr.strip()} "
                            "(the demo needs root, or CAP_NET_ADMIN, for its network fault)")

    def _address_add(self, addr: str) -> None:
        self._ip("addr", "add", f"{addr}/32", "dev", "lo")
        self._added_addresses.append(addr)
        self._record(addedAddresses=sorted(set(self._added_addresses)))

    def _address_del(self, addr: str) -> None:
        if addr in self._added_addresses:
            self._ip("addr", "del", f"{addr}/32", "dev", "lo")
            self._added_addresses.remove(addr)
            self._record(addedAddresses=sorted(set(self._added_addresses)))

    def cleanup(self) -> None:
        """Undo what a fault left in place (an interrupted run): the /32 address, R holding its answers."""
        for addr in list(self._added_addresses):
            with contextlib.suppress(Exception):
                self._address_del(addr)
        if self._faulted:
            with contextlib.suppress(Exception):
                if self.lab.node("R").running:
                    self.lab.inject("R", "normal")

    def _remove_leftover_addresses(self) -> list[str]:
        """Addresses an earlier run added and could not remove (it was killed): recorded in demo.json."""
        leftovers: list[str] = []
        with contextlib.suppress(OSError, ValueError):
            leftovers = list(json.loads(self.demo_state.read_text()).get("addedAddresses") or [])
        for addr in leftovers:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                subprocess.run([shutil.which("ip") or "/usr/sbin/ip", "addr", "del", f"{addr}/32", "dev", "lo"],
                               capture_output=True, timeout=20)
        if leftovers:
            self._record(addedAddresses=[])
        return leftovers

    # ------------------------------------------------------------------ --down
    def down(self) -> int:
        out = self.out
        for addr in self._remove_leftover_addresses():
            out.line(f"removed {addr}/32 from lo (left by an interrupted run)")
        lab_was = any(n.running for n in self.lab.nodes())
        where = f"{self.lab.subnet}.1-3" if self.lab.slot else "no network"
        self.lab.down()
        out.line(f"SIP lab {self.lab.name!r} ({where}): " + ("stopped, its network removed" if lab_was else "was not running"))
        cl_was = bool(self.cluster.records())
        killed = self.cluster.down()
        out.line(f"cluster {self.cluster.name!r}: " + ("stopped" if cl_was else "was not running")
                 + (f" (SIGKILL needed for {', '.join(killed)})" if killed else ""))
        out.line(f"logs kept in {self.cluster.logs_dir} and {self.lab.logs_dir} (the next `sipfleet demo` "
                 "starts the cluster with fresh etcd data)")
        return 0

    # ------------------------------------------------------------------ run
    def run(self) -> int:
        wanted = None if self.args.accounts in ("all", "") else {
            a.strip() for a in self.args.accounts.split(",") if a.strip()}
        _, accounts, secrets = _render_examples(EXAMPLE_SUBNET, wanted, self.namespace)
        if not any(a["spec"].get("routeMode") == "account" for a in accounts):
            raise DemoError("examples/ has no SipAccount with routeMode: account")

        print(f"sipfleet demo: control plane {self.cluster.name!r}, SIP lab {self.lab.name!r}, "
              f"SipAccounts in namespace {self.namespace!r}", flush=True)
        self.step_environment(secrets)
        manifest, accounts, secrets = _render_examples(self.lab.subnet, wanted, self.namespace)
        drift = next(a for a in accounts if a["spec"].get("routeMode") == "account")
        self.step_helm()
        self.step_accounts(manifest, accounts)
        ok = self.step_fault_and_repair(drift)
        self.step_finish(ok)
        return 0 if ok else 1

    # 1 ---------------------------------------------------------------
    def step_environment(self, secrets: list[dict]) -> None:
        from .localenv import kubebin
        from .localenv.cluster import ClusterError
        from .localenv.siplab import LabError

        out = self.out
        out.step(1, "local control plane and SIP lab")
        try:
            missing = [n for n in (*kubebin.CONTROL_PLANE, "kubectl", "helm") if kubebin.resolve(n) is None]
        except Exception:  # noqa: BLE001 - resolve only checks the cache; ensure() reports properly below
            missing = []
        if missing:
            out.line(f"building {', '.join(missing)} from pinned Go modules (once; cached in "
                     f"{kubebin.cache_root()}): this takes minutes")
        try:
            kubebin.ensure([*kubebin.CONTROL_PLANE, "kubectl", "helm"])
        except Exception as e:  # noqa: BLE001
            raise DemoError(f"control-plane binaries: {e}") from None
        if missing:  # the build does not count against --timeout
            self.deadline = time.monotonic() + float(self.args.timeout)

        for addr in self._remove_leftover_addresses():
            out.line(f"removed {addr}/32 from lo (left by an interrupted run)")
        t = time.monotonic()
        reused = self.cluster.running()
        try:
            # a stopped demo cluster starts from scratch (no objects of an earlier run are adopted)
            self.cluster.up(fresh=not reused, timeout=self.remaining(300))
        except ClusterError as e:
            raise DemoError(f"cluster: {e}") from None
        out.line(f"cluster {self.cluster.name!r}: {'reused, already running' if reused else 'started with fresh etcd data'} "
                 f"({time.monotonic() - t:.1f} s); API {self.cluster.server}, pod addresses "
                 f"{self.cluster.pod_subnet}.x.y, node {'Ready' if self.cluster.node_ready() else 'NOT ready'}")

        t = time.monotonic()
        lab_reused = self.lab.is_up()
        try:
            self.lab.up(timeout=self.remaining(120))
            users = [(s["stringData"]["username"], s["stringData"]["password"]) for s in secrets]
            self.lab.add_users(users)
        except LabError as e:
            raise DemoError(f"SIP lab: {e}") from None
        out.line(f"SIP lab {self.lab.name!r}: {'reused' if lab_reused else 'started'} "
                 f"({time.monotonic() - t:.1f} s); P proxy {self.lab.hostport('P')}, R registrar "
                 f"{self.lab.hostport('R')} (Service-Route <{self.lab.edge_uri()}>), E edge {self.lab.hostport('E')}")
        out.line(f"lab users at R (examples/secrets.yaml): {', '.join(u for u, _ in users)}")
        self._record(name=self.cluster.name, subnet=self.lab.subnet, labStateDir=str(self.lab.state_dir))

    # 2 ---------------------------------------------------------------
    def step_helm(self) -> None:
        from kubernetes import client

        from .localenv import kubebin

        out = self.out
        out.step(2, f"helm install charts/sipfleet (release {RELEASE!r}, namespace {RELEASE_NAMESPACE!r})")
        helm_bin = kubebin.ensure(["helm"])["helm"]
        res = self.helm(helm_bin, "upgrade", "--install", RELEASE, str(CHART), "--namespace", RELEASE_NAMESPACE,
                        "--create-namespace", timeout=self.remaining(300))
        info = dict(re.findall(r"^(STATUS|REVISION|LAST DEPLOYED): (.*)$", res.stdout, re.M))
        version = subprocess.run([str(helm_bin), "version", "--short"], capture_output=True, text=True,
                                 timeout=30).stdout.strip()
        out.line(f"helm {version}: release {RELEASE} revision {info.get('REVISION', '?')}, "
                 f"{info.get('STATUS', '?')}")
        # helm installs crds/ on first install only and never upgrades them: keep a reused cluster current
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))

        api = self.cluster.api_client()
        try:
            core = client.CoreV1Api(api)
            selector = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=operator"

            def ready_pod():
                for p in core.list_namespaced_pod(RELEASE_NAMESPACE, label_selector=selector).items:
                    if p.metadata.deletion_timestamp:
                        continue
                    if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or []):
                        return p
                return None

            t = time.monotonic()
            pod = self._wait(ready_pod, 180, "the operator pod Running and Ready",
                             on_timeout=lambda: self._pod_logs(core, RELEASE_NAMESPACE, selector))
        finally:
            api.close()
        out.line(f"operator pod {pod.metadata.name} Running and Ready ({time.monotonic() - t:.1f} s; the node "
                 f"runner runs image {pod.spec.containers[0].image} as this checkout's sipfleet_operator, "
                 f"pod IP {pod.status.pod_ip})")

    def _pod_logs(self, core, namespace: str, selector: str, lines: int = 30) -> str:
        text = []
        for p in core.list_namespaced_pod(namespace, label_selector=selector).items:
            try:
                path = self.cluster.container_log(p.metadata.name, namespace)
                tail = "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
            except Exception as e:  # noqa: BLE001 - diagnostics only
                tail = f"(no log: {e})"
            text.append(f"pod {p.metadata.name} ({p.status.phase}):\n{tail}")
        return "\n".join(text) or f"(no pods match {selector} in {namespace})"

    def _wait(self, pred: Callable[[], Any], cap: float, what: str, on_timeout: Callable[[], str] | None = None):
        from .localenv.waiting import WaitTimeout, wait_for

        try:
            return wait_for(pred, timeout=self.remaining(cap), interval=0.25, message=what)
        except WaitTimeout as e:
            detail = ""
            if on_timeout is not None:
                with contextlib.suppress(Exception):
                    detail = "\n" + on_timeout()
            raise DemoError(f"{e}{detail}") from None

    # 3 ---------------------------------------------------------------
    def step_accounts(self, manifest: str, accounts: list[dict]) -> None:
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        out = self.out
        names = [a["metadata"]["name"] for a in accounts]
        out.step(3, f"kubectl apply -f examples/  ({len(names)} SipAccounts in namespace {self.namespace!r})")
        for a in accounts:
            spec = a["spec"]
            how = ("dedicated agent" if (spec.get("agent") or {}).get("dedicated") else
                   f"routeMode {spec.get('routeMode', 'prevent')}")
            out.line(f"{a['metadata']['name']:<6} {spec['aor']:<28} route {_fmt_route(spec['route'])}  {how}")
        if self.lab.subnet != EXAMPLE_SUBNET:
            out.line(f"(the examples' {EXAMPLE_SUBNET}.x addresses rewritten to {self.lab.subnet}.x)")
        api = self.cluster.api_client()
        try:
            core = client.CoreV1Api(api)
            try:
                core.create_namespace({"metadata": {"name": self.namespace}})
            except ApiException as e:
                if e.status != 409:
                    raise DemoError(f"cannot create namespace {self.namespace}: {e.reason}") from None
        finally:
            api.close()
        res = self.kubectl("apply", "-n", self.namespace, "-f", "-", input=manifest, timeout=self.remaining(120))
        out.block(res.stdout)

        t = time.monotonic()
        wait_s = int(self.remaining(240))
        res = self.kubectl("-n", self.namespace, "wait", "--for=condition=Registered",
                           *[f"sipaccount/{n}" for n in names], f"--timeout={wait_s}s", check=False,
                           timeout=wait_s + 30)
        if res.returncode != 0:
            table = self.kubectl("-n", self.namespace, "get", "sipacc", "-o", "wide", check=False).stdout
            raise DemoError(f"not every SipAccount became Registered within {wait_s} s: {res.stderr.strip()}\n"
                            f"{table}{self._agent_logs()}")
        out.line(f"kubectl wait --for=condition=Registered: all {len(names)} Registered "
                 f"({time.monotonic() - t:.1f} s)")
        res = self.kubectl("-n", self.namespace, "get", "sipacc", "-o", "wide")
        out.line(f"kubectl{self._ns} get sipacc -o wide")
        out.block(res.stdout)

    def _agent_logs(self) -> str:
        from kubernetes import client

        api = self.cluster.api_client()
        try:
            return "\n" + self._pod_logs(client.CoreV1Api(api), self.namespace,
                                         "app.kubernetes.io/managed-by=sipfleet-operator", lines=15)
        except Exception:  # noqa: BLE001 - diagnostics only
            return ""
        finally:
            api.close()

    # 4 + 5 -----------------------------------------------------------
    def step_fault_and_repair(self, drift: dict) -> bool:
        from kubernetes import client

        from .api.models import GROUP, PLURAL, VERSION

        out = self.out
        name = drift["metadata"]["name"]
        user = _user_of(drift["spec"]["aor"])
        p_route = [_norm(u) for u in drift["spec"]["route"]]
        self._drift_name = name
        out.step(4, f"network fault on the path of {name!r} (routeMode account)")

        api = self.cluster.api_client()
        custom = client.CustomObjectsApi(api)
        core = client.CoreV1Api(api)

        def get() -> dict:
            return custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

        def mine(r) -> bool:
            return r.method == "REGISTER" and f":{user}@" in r.from_uri

        try:
            # a calm start: registered through the route, nothing being repaired
            def calm():
                obj = get()
                st = obj.get("status") or {}
                return (obj if _cond(obj, "RouteInSync").get("status") == "True"
                        and _cond(obj, "Registered").get("status") == "True"
                        and (st.get("ladder") or {}).get("phase", "Idle") == "Idle" else None)

            obj = self._wait(calm, 120, f"{name} Registered, RouteInSync and ladder Idle")
            pod_name = obj["status"]["agent"]["pod"]
            pod = core.read_namespaced_pod(pod_name, self.namespace)
            pod_ip = pod.status.pod_ip
            if not pod_ip:
                raise DemoError(f"agent pod {pod_name} has no IP")
            out.line(f"{name} is hosted by agent pod {pod_name} (pod IP {pod_ip}); it registers through P "
                     f"({self.lab.hostport('P')}) with Route {_fmt_route(drift['spec']['route'])}")
            out.line(f"fault: the registrar R holds its answers to REGISTER ({HOLD_MS / 1000:.0f} s each, lab "
                     f"inject R delay:{HOLD_MS}) while the agent pod's address flaps: `ip addr add {pod_ip}/32 dev "
                     f"lo`, then `ip addr del` while a REGISTER is held in flight. The agent notices each interface "
                     f"change and calls pjsua's handleIpChange(); the second one meets the REGISTER in flight.")

            watcher = StatusWatcher(self.cluster, self.namespace, name)
            watcher.start()
            self._wait(watcher.started_watching.is_set, 30, f"a watch on sipaccount/{name}")
            try:
                result = self._inject(pod_name, pod_ip, mine, watcher)
                if result is None:
                    raise DemoError(f"no drift after {FAULT_ATTEMPTS} fault attempts: every REGISTER of {name} "
                                    "stayed on the route (the in-flight window was missed)")
                t_fault, drifted = result
                ok = self._follow_repair(name, get, mine, p_route, t_fault, drifted, watcher)
            finally:
                watcher.stop()
            self._events(core, name, t_fault)
            return ok
        finally:
            api.close()

    def _quiet(self, mine, seconds: float = 1.0) -> bool:
        """No REGISTER of the account reached any lab node in the last ``seconds``."""
        now = time.time()
        return not [r for r in self.lab.wire(since=now - seconds) if mine(r)]

    def _agent_pid(self, pod_name: str) -> int:
        """The PID of the agent container's process, from the node runner's pids.json."""
        from .localenv.noderunner.process import proc_alive

        try:
            data = json.loads((self.cluster.pods_dir / "pids.json").read_text())
        except (OSError, ValueError) as e:
            raise DemoError(f"cannot read the node runner's pids.json: {e}") from None
        for rec in data.get("processes") or []:
            if (rec.get("namespace") == self.namespace and rec.get("pod") == pod_name
                    and proc_alive(int(rec["pid"]), rec.get("start_time"))):
                return int(rec["pid"])
        raise DemoError(f"no running process of pod {pod_name} in the node runner's pids.json")

    def _flap(self, pod_name: str, pod_ip: str, up: bool) -> tuple[float, str]:
        """One half of the interface flap; returns (when, what happened). Without the right to change addresses,
        SIGUSR2 to the agent process instead: what the agent's address watcher does on a change."""
        t = time.time()
        if not self._signal_only:
            try:
                if up:
                    self._address_add(pod_ip)
                    return t, f"address {pod_ip}/32 added on lo (the agent pod's interface changes)"
                self._address_del(pod_ip)
                return t, f"address {pod_ip}/32 removed from lo (the interface changes back)"
            except DemoError as e:
                if not up:
                    raise
                self._signal_only = True
                self.out.line(f"cannot change addresses ({e}); falling back to SIGUSR2 to the agent process, "
                              "which calls handleIpChange() as its address watcher does on a change")
        pid = self._agent_pid(pod_name)
        os.kill(pid, signal.SIGUSR2)
        return time.time(), f"SIGUSR2 to the agent (pid {pid}): handleIpChange(), as on an interface change"

    def _inject(self, pod_name: str, pod_ip: str, mine, watcher: StatusWatcher):
        """Provoke the drift; returns (fault start, the drifted REGISTER at E) or None."""
        tl = self.timeline
        for attempt in range(1, FAULT_ATTEMPTS + 1):
            self._wait(lambda: self._quiet(mine), 60, "no REGISTER of the account on the wire for 1 s")
            self._faulted = True
            t_fault = time.time()
            self.lab.inject("R", f"delay:{HOLD_MS}")
            tl.add(t_fault, "lab R", f"holds its answers to REGISTER {HOLD_MS} ms (inject delay:{HOLD_MS})")
            drifted = None
            try:
                t_add, what = self._flap(pod_name, pod_ip, True)
                tl.add(t_add, "network", what)
                try:
                    held = self.lab.wait_wire(mine, node="P", since=t_add, timeout=self.remaining(20))
                except TimeoutError:
                    held = None
                if held is not None:
                    tl.add(held.at, "wire P", f"REGISTER in flight via P (Route {_fmt_route(held.route)}, "
                                              f"Call-ID {held.call_id[:10]}), held at R")
                # New REGISTERs get answers at once again; the one R already holds stays held to its end.
                t_normal = time.time()
                self.lab.inject("R", "normal")
                self._faulted = False
                tl.add(t_normal, "lab R", "answers new REGISTERs at once again (inject normal; the one it holds "
                                          "stays held)")
                t_del, what = self._flap(pod_name, pod_ip, False)
                tl.add(t_del, "network", what)
                try:
                    drifted = self.lab.wait_wire(mine, node="E", since=t_fault, timeout=self.remaining(20))
                except TimeoutError:
                    drifted = None
            finally:
                for addr in list(self._added_addresses):
                    self._address_del(addr)
                if self._faulted:
                    self.lab.inject("R", "normal")
                    self._faulted = False
            if drifted is not None:
                tl.add(drifted.at, "wire E", f"REGISTER sent straight to the edge E, bypassing P: Route "
                                             f"{_fmt_route(drifted.route)}, from {drifted.src} "
                                             f"(Call-ID {drifted.call_id[:10]})")
                self.out.line(f"attempt {attempt}: drifted REGISTER seen at E {drifted.at - t_fault:.2f} s after "
                              f"the fault started")
                return t_fault, drifted
            self.out.line(f"attempt {attempt}: no REGISTER reached E (the window was missed); trying again")
            self.timeline = tl = Timeline()
        return None

    def _follow_repair(self, name: str, get, mine, p_route: list[str], t_fault: float, drifted, watcher) -> bool:
        out = self.out
        tl = self.timeline
        out.step(5, f"detection and repair of {name!r}")
        problems: list[str] = []

        # the status leaves the route: measured by the agent, reported by the operator
        def out_of_sync():
            return (watcher.seen("inSync", lambda v: v is False, t_fault)
                    or watcher.seen("RouteInSync", lambda v: v[0] == "False", t_fault))

        try:
            self._wait(out_of_sync, 60, f"{name} status out of sync (route.inSync false or RouteInSync False)")
        except DemoError as e:
            problems.append(str(e))

        # ... and back: the repair recorded and RouteInSync True after the drift
        def fresh_repair(st: dict) -> dict:
            """The agent's lastRepair if it completed after the drift, else {}."""
            rep = (st.get("route") or {}).get("lastRepair") or {}
            done = _parse_time(rep.get("completedAt"))
            return rep if done is not None and done >= drifted.at and rep.get("result") == "repaired" else {}

        def repaired():
            obj = get()
            st = obj.get("status") or {}
            if _cond(obj, "RouteInSync").get("status") != "True":
                return None
            if fresh_repair(st):
                return obj
            # a pod restart (the ladder's next step) starts a fresh agent, which records no repair of its own
            ladder = st.get("ladder") or {}
            restarted = watcher.seen("ladder", lambda v: v[0] == "PodRestarted", t_fault)
            if restarted and ladder.get("phase") == "Idle" and ladder.get("lastMethod") == "restart-pod":
                return obj
            return None

        final = None
        try:
            final = self._wait(repaired, 120, f"{name} repaired (lastRepair completed, RouteInSync True)")
        except DemoError as e:
            problems.append(str(e))

        # the first REGISTER of a new registration client through P after the drift, on the wire
        # registration clients that existed up to the drift (the held one, the drifted one): not the repair's
        old_ids = {r.call_id for r in self.lab.wire(since=t_fault - 600) if mine(r) and r.at <= drifted.at}
        bad_ids = old_ids | {drifted.call_id}

        def back_via_p():
            for r in self.lab.wire(since=drifted.at, node="P"):
                if mine(r) and r.call_id not in bad_ids and r.expires != "0" and r.at >= drifted.at:
                    return r
            return None

        back = None
        try:
            back = self._wait(back_via_p, 60, "a REGISTER of a new registration client through P after the drift")
        except DemoError as e:
            problems.append(str(e))
        if back is not None and [_norm(u) for u in back.route] != p_route:
            problems.append(f"the REGISTER through P carried Route {back.route}, not the configured {p_route}")

        # ladder back to Idle (the operator records the method and the duration)
        ladder: dict = {}
        with contextlib.suppress(DemoError):
            obj = self._wait(lambda: (lambda o: o if ((o.get("status") or {}).get("ladder") or {}).get("phase")
                                      == "Idle" else None)(get()), 60, f"{name} ladder Idle")
            final = obj
            ladder = obj["status"].get("ladder") or {}

        # after the repair: the new registration client stays on the route; the deleted client may still finish
        # the REGISTER it had in flight (pjsip completes pending transactions, 401 challenge included)
        after_note = ""
        if back is not None:
            with contextlib.suppress(DemoError):
                # the REGISTER R held ends HOLD_MS after it arrived: wait past that, then for a quiet wire
                settled = t_fault + HOLD_MS / 1000.0 + 2.0
                self._wait(lambda: time.time() > settled and self._quiet(mine, 1.5), 30,
                           "the account's REGISTERs settled after the repair")
            rest = [r for r in self.lab.wire(since=drifted.at) if mine(r) and r.node in ("P", "E")
                    and r.at > drifted.at and not (r.call_id == drifted.call_id and r.cseq == drifted.cseq)]
            fresh = [r for r in rest if r.call_id not in old_ids]
            unreg = [r for r in rest if r.call_id in old_ids and r.expires == "0"]
            late = [r for r in rest if r.call_id in old_ids and r.expires != "0" and r.at > back.at]
            off_route = [r for r in fresh if r.node == "E"]
            if off_route:
                problems.append(f"after the repair the new registration client sent {len(off_route)} REGISTER(s) "
                                f"to E")
            after_note = (f"wire after the repair: the new registration client sent {len(fresh)} REGISTER(s), "
                          f"{len(fresh) - len(off_route)} via P and {len(off_route)} via E")
            if unreg:
                after_note += (f"; the re-created account's old client un-REGISTERed (Expires: 0) via "
                               f"{'/'.join(sorted({r.node for r in unreg}))}")
            if late:
                after_note += (f"; {len(late)} late REGISTER(s) of the old account's clients (a transaction held at "
                               f"R during the repair, completed by pjsip) via {'/'.join(sorted({r.node for r in late}))}")

        # ---- the timeline
        st = (final or get()).get("status") or {}
        route = st.get("route") or {}
        rep = fresh_repair(st)
        t = watcher.seen("inSync", lambda v: v is False, t_fault)
        drift_at = _parse_time(route.get("lastDriftAt"))
        if drift_at is not None and drift_at >= t_fault - 1:
            tl.add(drift_at, "agent", "measured the drift from its own transmit log: status.route.inSync=false, "
                                      f"effective {_fmt_route([drifted.route[0]] if drifted.route else [])}, "
                                      f"firstHop udp:{self.lab.hostport('E')}")
        t = watcher.seen("inSync", lambda v: v is False, t_fault)
        if t is not None:
            tl.add(t, "agent", "status patch: route.inSync=false, firstHop "
                               f"{watcher.value_at('firstHop', t) or '?'} (observed)")
        t = watcher.seen("RouteInSync", lambda v: v[0] == "False", t_fault)
        if t is not None:
            reason = next((v[1] for tt, k, v in watcher.changes if k == "RouteInSync" and tt == t), "")
            tl.add(t, "operator", f"condition RouteInSync=False ({reason}) (observed)")
        t = watcher.seen("ladder", lambda v: v[0] == "RepairRequested", t_fault)
        if t is not None:
            tl.add(t, "operator", "ladder RepairRequested: a new repairToken in the agent's assignment ConfigMap "
                                  "(observed)")
        t = watcher.seen("ladder", lambda v: v[0] == "PodRestarted", t_fault)
        if t is not None:
            tl.add(t, "operator", "ladder PodRestarted: the operator deleted the agent pod (observed)")
        if rep:
            tl.add(_parse_time(rep.get("startedAt")), "agent",
                   f"repair started: {rep.get('method')} (trigger {rep.get('trigger')})")
            tl.add(_parse_time(rep.get("completedAt")), "agent",
                   f"repair done: {rep.get('method')}, {rep.get('durationMs', 0):.0f} ms from drift seen to "
                   f"the first REGISTER via the route ({rep.get('result')})")
        if back is not None:
            tl.add(back.at, "wire P", f"first REGISTER through P again: Route {_fmt_route(back.route)}, from "
                                      f"{back.src}, new Call-ID {back.call_id[:10]}")
        t = watcher.seen("RouteInSync", lambda v: v[0] == "True", drifted.at)
        if t is not None:
            tl.add(t, "operator", "condition RouteInSync=True (observed)")
        t = watcher.seen("ladder", lambda v: v[0] == "Idle", drifted.at)
        if t is not None and ladder:
            tl.add(t, "operator", f"ladder Idle: lastMethod {ladder.get('lastMethod')}, "
                                  f"lastDurationMs {ladder.get('lastDurationMs') or 0:.0f} (observed)")

        out.line("timeline (wire = the lab nodes' own logs; observed = when a watch on the SipAccount delivered the change)")
        out.block(tl.render(t_fault))
        if after_note:
            out.line(after_note)

        drift_seen = out_of_sync() is not None
        fresh = fresh_repair(st)
        restart_ok = bool(watcher.seen("ladder", lambda v: v[0] == "PodRestarted", t_fault)) and \
            ladder.get("lastMethod") == "restart-pod"
        repaired_ok = final is not None and back is not None and bool(fresh or restart_ok)
        self.summary = {
            "drift": drift_seen,
            "repaired": repaired_ok and not problems,
            "method": fresh.get("method") or ladder.get("lastMethod"),
            "durationMs": fresh.get("durationMs") or ladder.get("lastDurationMs"),
            "trigger": fresh.get("trigger") or "operator",
            "problems": problems,
        }
        return drift_seen and repaired_ok and not problems

    def _events(self, core, name: str, since: float) -> None:
        out = self.out
        evs = core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={name},involvedObject.kind=SipAccount").items

        def when(e) -> float:
            for ts in (e.last_timestamp, e.event_time, e.first_timestamp):
                if ts is not None:
                    return ts.timestamp()
            return 0.0

        evs.sort(key=lambda e: (int(when(e)), int(e.metadata.resource_version or 0)))
        recent = [e for e in evs if when(e) >= since - 2]
        out.line()
        out.line(f"Kubernetes events of sipaccount/{name} (this run; kubectl{self._ns} get events "
                 f"--field-selector involvedObject.name={name})")
        if not recent:
            out.line("  (none)")
        for e in recent:
            out.line(f"  {_utc(when(e))[:8]}  {e.type:<7}  {e.reason:<16}  {e.message}")
        older = len(evs) - len(recent)
        if older:
            out.line(f"  ({older} older events from earlier runs not shown)")

    # 6 ---------------------------------------------------------------
    def step_finish(self, ok: bool) -> None:
        out = self.out
        s = getattr(self, "summary", {})
        out.step(6, "result")
        res = self.kubectl("-n", self.namespace, "get", "sipacc", "-o", "wide", check=False)
        out.line(f"kubectl{self._ns} get sipacc -o wide")
        out.block(res.stdout or res.stderr)
        if ok:
            out.line(f"RESULT: drift detected and repaired: {s.get('method')} (trigger {s.get('trigger')}), "
                     f"{s.get('durationMs') or 0:.0f} ms from drift seen to the first REGISTER through P again; "
                     f"both verified on the wire")
        else:
            out.line("RESULT: NOT OK: " + ("drift detected" if s.get("drift") else "drift NOT detected") + ", "
                     + ("repaired" if s.get("repaired") else "NOT repaired"))
            for p in s.get("problems", []):
                out.line(f"  - {p}")
        out.line(f"wall time {out.elapsed():.1f} s")
        out.line()
        down = self.down_command()
        if self.args.keep:
            kubectl = self.cluster.kubectl_path()
            on_path = shutil.which("kubectl")
            out.line("cluster and lab keep running. To use them:")
            out.line(f"  export KUBECONFIG={self.cluster.kubeconfig}")
            if not on_path or Path(on_path).resolve() != Path(kubectl).resolve():
                out.line(f"  export PATH={Path(kubectl).parent}:$PATH    # the kubectl built for this cluster")
            out.line(f"  kubectl{self._ns} get sipacc -o wide")
            out.line(f"  kubectl{self._ns} describe sipacc {getattr(self, '_drift_name', 'dave')}")
            out.line(f"  kubectl{self._ns} get events --field-selector involvedObject.kind=SipAccount")
            out.line(f"  kubectl -n {RELEASE_NAMESPACE} logs deploy/{RELEASE}")
            lab = f"sipfleet lab --name {self.lab.name}" + (f" --state-dir {self.lab.state_dir}" if self.state_root else "")
            out.line(f"  {lab} wire --method REGISTER --last 10   # requests as P, R and E received them")
            out.line(f"  {lab} status")
            out.line(f"To stop them (by PID; logs are kept): {down}")

    def down_command(self) -> str:
        return "sipfleet demo --down" + (f" --name {self.cluster.name}" if self.cluster.name != DEFAULT_NAME else "") \
            + (f" --state-dir {self.state_root}" if self.state_root else "")

    def teardown(self) -> None:
        """--no-keep: stop the lab and the cluster (by PID), whatever happened before."""
        self.out.line("--no-keep: stopping the SIP lab and the cluster")
        try:
            self.lab.down()
        except Exception as e:  # noqa: BLE001 - go on with the cluster
            self.out.line(f"stopping the lab failed: {e}")
        killed = self.cluster.down()
        self.out.line("stopped" + (f" (SIGKILL needed for {', '.join(killed)})" if killed else ""))
