"""The operator's own faults of ``sipfleet bench faults`` that need more than a kill: SIGKILL in the middle of a
converge of ``--converge`` new accounts (``operator-kill-converge``), and the active one of two peered replicas
SIGKILLed (``operator-ha-kill``, with a takeover time).

``operator-kill-converge``: ``--converge`` new accounts (half in each route mode) are created while the fleet
runs; the operator is SIGKILLed once half of them are in assignment ConfigMaps and started again 2 s later. The
new accounts are watched and judged with the fleet (nothing lost, each hosted once, all Ready); after the row
they are deleted again, and whatever that leaves behind (a SipAccount, an assignment, a contact at R) is lost.

``operator-ha-kill``: the bench's standalone operator is replaced by two replicas with kopf peering (kopf's
peering CRDs applied, identities ``bench-op-a``/``-b``, priorities from them as the chart's ``auto`` does, the
chart's default peering lifetime); once exactly one has its engine running it is SIGKILLed, and while no
replica acts one agent's Deployment is deleted (drift the new active replica must repair). The takeover time is
from the SIGKILL to the standby's ``engine started`` log line; then the survivor stops (SIGTERM) and the
standalone operator starts again.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from kubernetes import client

from sipfleet.api import keys
from sipfleet.api.models import GROUP, PLURAL, VERSION

from . import faultmatrix as fm
from .faults_fleet import BENCH_REGISTRATION, assignments, fleet_state
from .fleet import Env

CONVERGE_KILL_TIMEOUT = 180.0  # kill anyway when half the new accounts are not placed by then
PEERING_LIFETIME_S = 15  # the chart's default peering.lifetimeSeconds
REGISTRATION = BENCH_REGISTRATION


# ---------------------------------------------------------------------------------------- kill during converge


def operator_kill_converge(env: Env, run: fm.FaultRun) -> str:
    n = env.args.converge
    created: dict[str, Any] = {}

    def create() -> None:
        try:
            created["accs"] = env.create_accounts(n // 2, "ca", routeMode="account", registration=REGISTRATION) + \
                env.create_accounts(n - n // 2, "cp", routeMode="prevent", registration=REGISTRATION)
        except Exception as e:  # noqa: BLE001 - reported by the fault
            created["error"] = e

    maker = threading.Thread(target=create, name="converge-create", daemon=True)
    maker.start()
    t0 = time.monotonic()
    placed = 0
    while time.monotonic() - t0 < CONVERGE_KILL_TIMEOUT and "error" not in created:
        try:
            placed = sum(1 for names in assignments(env).values() for a in names if a[:2] in ("ca", "cp"))
        except Exception:  # noqa: BLE001 - look again
            pass
        if placed >= n / 2:
            break
        time.sleep(0.2)
    env.operator.kill()
    killed_after = time.monotonic() - t0
    time.sleep(2)
    env.operator.start()
    maker.join()
    if "error" in created:
        raise created["error"]
    users = dict(created["accs"])
    now = {o["metadata"]["name"]: o for o in env.accounts()}
    run.add_accounts({name: fm.spec_digest(now[name]) for name in users if name in now}, users)
    run.after.append(lambda: _delete_again(env, run, users))
    return (f"{n} new accounts ({n // 2} account, {n - n // 2} prevent): SIGKILL {killed_after:.1f} s after their "
            f"creation began, with {placed}/{n} placed; started again 2 s later")


def _delete_again(env: Env, run: fm.FaultRun, users: dict[str, str], timeout: float = 90) -> tuple[list[str], str]:
    """Delete the converge's accounts; what is left of them (and what the fleet lost meanwhile) after a while.

    An agent that hosted some of them now needs a smaller size class; the operator must not replace it for that
    (its untouched accounts would register again). The fleet is still watched (up to ``timeout`` more), and the
    note says which agents changed class and how long their accounts were not Ready, if any did."""
    t0 = time.monotonic()
    sizes_before = _size_classes(env)
    for name in users:
        try:
            env.custom.delete_namespaced_custom_object(GROUP, VERSION, env.ns, PLURAL, name)
        except client.ApiException as e:
            if e.status != 404:
                raise
    before = {k: v for k, v in run.watched().items() if k not in users}
    disrupted: set[str] = set()

    def look() -> tuple[list[dict], dict[str, list[str]], list[str]]:
        state = fleet_state(env)
        disrupted.update(o["metadata"]["name"] for o in state[0]
                         if o["metadata"]["name"] in before and not fm.healthy(o))
        return state

    while time.monotonic() - t0 < timeout:
        accounts, assigned, deps = look()
        names = {o["metadata"]["name"] for o in accounts}
        if not (names & set(users)) and not any(a in users for ns in assigned.values() for a in ns) \
                and set(assigned) == set(deps):  # an agent left without accounts goes with both its children
            if not any(env.lab.contacts(u) for u in users.values()):  # unREGISTERs may still be under way
                break
        time.sleep(2)
    gone = time.monotonic() - t0
    t1 = time.monotonic()
    while time.monotonic() - t1 < timeout:  # an untouched account disturbed by the deletion is waited for
        accounts, assigned, deps = look()
        now = {o["metadata"]["name"]: o for o in accounts}
        if all(n in now and fm.healthy(now[n]) for n in before):
            break
        time.sleep(1)
    settled = time.monotonic() - t0
    accounts, assigned, deps = fleet_state(env)
    contacts = {u: env.lab.contacts(u) for u in users.values()}
    left = fm.deletion_leftovers(users, accounts, assigned, contacts) + fm.losses(before, accounts, assigned, deps)
    sizes_after = _size_classes(env)
    shrunk = ", ".join(f"-{a.rsplit('-', 1)[-1]} {sizes_before[a]}->{c}" for a, c in sorted(sizes_after.items())
                       if a in sizes_before and c != sizes_before[a])
    note = f"deleted again: all gone after {gone:.1f} s" if not left else f"deleted again: {gone:.0f} s"
    if disrupted:
        note += (f"; {len(disrupted)} untouched accounts not Ready meanwhile (agents shrunk: {shrunk or 'none'}), "
                 f"all Ready {settled:.1f} s after the deletion began")
    return left, note


def _size_classes(env: Env) -> dict[str, str]:
    """Agent Deployment -> the size class (workers) its pod template was built for."""
    deps = client.AppsV1Api(env.api).list_namespaced_deployment(env.ns, label_selector=keys.AGENT_SELECTOR).items
    return {d.metadata.name: (d.metadata.annotations or {}).get(keys.ANNOTATION_SIZE, "?") for d in deps}


# ---------------------------------------------------------------------------------------- HA: active replica killed


def _apply_peering_crds(env: Env) -> None:
    out = subprocess.run([sys.executable, "-m", "sipfleet_operator.main", "peering-crds", "-n", env.ns],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    env.cluster.kubectl("apply", "-f", "-", input=out, check=False)  # the KopfPeering fails while its CRD is new
    for _ in range(30):  # kubectl wait fails at once while a new CRD has no status.conditions yet ("accessor error")
        if env.cluster.kubectl("wait", "--for=condition=Established", "crd/kopfpeerings.kopf.dev", "--timeout=60s",
                               check=False).returncode == 0:
            break
        time.sleep(1)
    env.cluster.kubectl("apply", "-f", "-", input=out)


def _replicas(env: Env) -> dict[str, Any]:
    from sipfleet.localenv.operator_process import OperatorProcess

    log_dir = Path(tempfile.mkdtemp(prefix="sipfleet-bench-ha-"))
    out = {}
    for ident in ("bench-op-a", "bench-op-b"):
        op = OperatorProcess(env.cluster.kubeconfig, log_dir / f"{ident}.log", namespaces=env.ns, extra_env={
            **(getattr(env.args, "operator_env", None) or {}), "SIPFLEET_STANDALONE": "false",
            "SIPFLEET_PRIORITY": "auto", "POD_ID": ident, "SIPFLEET_PEERING_LIFETIME_SECONDS": str(PEERING_LIFETIME_S)})
        env.stack.callback(op.stop)  # stopped by the fault; this is for a fault that failed halfway
        out[ident] = op
    return out


def _log(op: Any) -> str:
    try:
        return op.log_path.read_text(errors="replace")
    except OSError:
        return ""


def _wait(cond: Callable[[], Any], timeout: float, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(interval)
    return None


def operator_ha_kill(env: Env, run: fm.FaultRun) -> str:
    _apply_peering_crds(env)
    env.operator.stop()
    reps = _replicas(env)
    try:
        for op in reps.values():
            op.start()
        stable: dict[str, float] = {}

        def one_active() -> str | None:  # exactly one engine running, for 3 s (both may start alone a moment)
            act = [i for i, op in reps.items() if fm.engine_running(_log(op))]
            key = act[0] if len(act) == 1 else ""
            if key not in stable:
                stable.clear()
                stable[key] = time.monotonic()
            return key if key and time.monotonic() - stable[key] >= 3 else None

        active = _wait(one_active, 120)
        if not active:
            raise RuntimeError("two peered replicas did not settle on one active one within 120 s")
        (standby,) = [i for i in reps if i != active]
        apps = client.AppsV1Api(env.api)
        dep = apps.list_namespaced_deployment(env.ns, label_selector=keys.AGENT_SELECTOR).items[0]
        t_kill = datetime.now(timezone.utc)
        m_kill = time.monotonic()
        reps[active].kill()
        apps.delete_namespaced_deployment(dep.metadata.name, env.ns)  # drift while no replica acts
        took = _wait(lambda: fm.first_log_at(_log(reps[standby]), "engine started", t_kill), PEERING_LIFETIME_S + 90)

        def recreated() -> bool:
            try:
                return apps.read_namespaced_deployment(dep.metadata.name, env.ns).metadata.uid != dep.metadata.uid
            except client.ApiException:
                return False

        repaired = _wait(recreated, 120, 0.5)
        m_repaired = time.monotonic()
    finally:
        for op in reps.values():
            op.stop()
        env.operator.start()
    takeover = "no takeover within the timeout" if took is None else \
        f"takeover {(took - t_kill).total_seconds():.1f} s"
    print(f"  HA: {takeover} (SIGKILL of the active replica {active} -> engine started on {standby}; peering "
          f"lifetime {PEERING_LIFETIME_S} s)", flush=True)
    return (f"{takeover} (SIGKILL of the active of 2 peered replicas -> the standby's engine started; lifetime "
            f"{PEERING_LIFETIME_S} s); Deployment {dep.metadata.name} deleted while none acted: "
            + (f"re-created {m_repaired - m_kill:.1f} s after the kill" if repaired else "NOT re-created in 120 s"))
