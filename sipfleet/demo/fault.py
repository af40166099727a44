"""Step 4: the fault, a real link flap in the agent pod of the ``routeMode: account`` example, timed against a
REGISTER that the registrar holds (the procedure itself: :mod:`sipfleet.localenv.siplab.linkfault`, shared with
the tests).

PJSIP issue 4066's drift path in pjproject 2.15.1: ``handleIpChange()`` while a REGISTER of the account is in
flight rebuilds the registration client from the stored route set, whose last entry is R's Service-Route (E), so
the next REGISTER goes straight to E. The agent calls ``handleIpChange()`` when it sees its link come back
(its netlink poll, :mod:`sipfleet_agent.netaddr`). So:

1. R holds its answers to REGISTER (``inject R delay:8000``);
2. the pod's ``eth0`` goes down and up inside the pod's own netns (``ip link set eth0 down``/``up``; the routes
   the kernel flushes with it, the CNI's route to the Services, are re-added): the agent's ``handleIpChange()``
   sends a REGISTER through P, which R holds; R then answers new REGISTERs at once again;
3. ``eth0`` goes down and up again between two retransmissions of that held REGISTER (UDP: sent again 0.5, 1.5,
   3.5 and 7.5 s after the first; a retransmission while the link is down would end the transaction with 503
   and pjsua would forget the Service-Route). The second flap starts when P has logged the held REGISTER's
   fourth copy and lasts 2 s, longer than the agent's 1 s poll, so the agent sees the link go and come back;
   its ``handleIpChange()`` then meets the REGISTER in flight, and the rebuilt client registers via E.

The attempt is repeated (up to 3 times) when no REGISTER reaches E. What the demo did is recorded as timeline
rows in the :class:`~sipfleet.demo.verdict.FaultRecord`; an interrupted fault is undone (link up, R normal).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..localenv.siplab.linkfault import flap_during_held_register
from .context import Demo, DemoError
from .examples import fmt_route, norm, user_of
from .timeline import Row
from .verdict import FaultRecord
from .watcher import condition

HOLD_MS = 8000
FLAP_DOWN_S = 2.0  # > the agent's address/link poll (ipChangePollMs, 1 s by default)
ATTEMPTS = 3


@dataclass(frozen=True)
class Target:
    name: str  # the SipAccount
    user: str
    pod: str
    pod_ip: str
    netns: str  # the pod's network namespace (a path made by containerd: entered, never changed otherwise)
    route: tuple[str, ...]  # configured, normalised
    edge: tuple[str, ...]  # the Service-Route (E), normalised

    def mine(self, r) -> bool:
        return r.method == "REGISTER" and f":{self.user}@" in r.from_uri


def _get(d: Demo, name: str) -> dict:
    from kubernetes import client

    from ..api.models import GROUP, PLURAL, VERSION

    with d.api() as api:
        return client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, d.namespace, PLURAL, name)


def calm(d: Demo, name: str) -> dict:
    """Wait until the account is Registered, in sync and its ladder Idle; the SipAccount."""
    def ok():
        obj = _get(d, name)
        return obj if (condition(obj, "RouteInSync").get("status") == "True"
                       and condition(obj, "Registered").get("status") == "True"
                       and ((obj.get("status") or {}).get("ladder") or {}).get("phase", "Idle") == "Idle") else None

    return d.wait(ok, 120, f"{name} Registered, RouteInSync and ladder Idle")


def locate(d: Demo, drift: dict) -> Target:
    name = drift["metadata"]["name"]
    obj = calm(d, name)
    pod = obj["status"]["agent"]["pod"]
    try:
        netns = d.cluster.pod_netns(d.namespace, pod)
    except Exception as e:  # noqa: BLE001 - the CRI could not say
        raise DemoError(f"the network namespace of agent pod {pod}: {e}") from None
    from kubernetes import client

    with d.api() as api:
        pod_ip = client.CoreV1Api(api).read_namespaced_pod(pod, d.namespace).status.pod_ip
    return Target(name=name, user=user_of(drift["spec"]["aor"]), pod=pod, pod_ip=pod_ip or "?", netns=netns,
                  route=tuple(norm(u) for u in drift["spec"]["route"]), edge=(norm(d.lab.edge_uri()),))


def _quiet(d: Demo, t: Target, seconds: float) -> bool:
    return not [r for r in d.lab.wire(since=time.time() - seconds) if t.mine(r)]


def _attempt(d: Demo, t: Target) -> tuple[FaultRecord, object] | None:
    calm(d, t.name)
    calm_at = time.time()
    d.wait(lambda: _quiet(d, t, 1.5), 60, f"no REGISTER of {t.name} on the wire for 1.5 s")
    d.record(linkDown={"netns": t.netns, "dev": "eth0", "pod": t.pod})  # `--down` undoes a crashed run's fault
    try:
        run = flap_during_held_register(d.lab, t.netns, t.mine, hold_ms=HOLD_MS, down_s=FLAP_DOWN_S,
                                        wait_held_s=d.remaining(10), who=f"pod {t.pod}")
    finally:
        d.record(linkDown=None)
    rows = [Row(at, where, what) for at, where, what in run.notes]
    if run.held is None:
        d.out.line("no REGISTER went out through P after the first flap")
        return None
    try:
        drifted = d.lab.wait_wire(t.mine, node="E", since=run.started, timeout=d.remaining(6))
    except TimeoutError:
        return None
    return FaultRecord(user=t.user, configured_route=t.route, edge_route=t.edge, calm_at=calm_at,
                       started=run.started, held=run.held, actions=tuple(rows)), drifted


def step_fault(d: Demo, drift: dict) -> tuple[Target, FaultRecord]:
    out = d.out
    name = drift["metadata"]["name"]
    d.drift_name = name
    out.step(4, f"a real link flap in the agent pod of {name!r} (routeMode account)")
    t = locate(d, drift)
    out.line(f"{name} is hosted by agent pod {t.pod} (pod IP {t.pod_ip}, netns {t.netns}); it registers through P "
             f"({d.lab.hostport('P')}) with Route {fmt_route(drift['spec']['route'])}")
    out.line(f"fault: R holds its answers to REGISTER ({HOLD_MS / 1000:.0f} s, lab inject R delay:{HOLD_MS}); the "
             f"pod's eth0 goes down and up ({FLAP_DOWN_S:.0f} s) so the agent's handleIpChange() sends a REGISTER "
             "that R holds; then it flaps again while that REGISTER is in flight (between two of its "
             "retransmissions): PJSIP issue 4066's drift path")
    for attempt in range(1, ATTEMPTS + 1):
        result = _attempt(d, t)
        if result is not None:
            fault, drifted = result
            out.line(f"attempt {attempt}: drifted REGISTER seen at E {drifted.at - fault.started:.2f} s after the "
                     "fault started")
            return t, fault
        out.line(f"attempt {attempt}: no REGISTER reached E (the window was missed); trying again")
    raise DemoError(f"no drift after {ATTEMPTS} fault attempts: every REGISTER of {name} stayed on the route")
