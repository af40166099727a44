"""Step 3: ``kubectl apply -f examples/`` (rewritten to the lab's slot), every SipAccount ``Registered``
(``kubectl wait``), and ``kubectl get sipacc -o wide``. Agent pods of an earlier run are restarted when the agent
image was re-imported."""

from __future__ import annotations

import time

from .context import Demo, DemoError
from .examples import EXAMPLE_SUBNET, fmt_route

AGENT_SELECTOR = "app.kubernetes.io/managed-by=sipfleet-operator"


def agent_logs(d: Demo, lines: int = 15) -> str:
    from kubernetes import client

    try:
        with d.api() as api:
            return "\n" + d.pod_logs(client.CoreV1Api(api), d.namespace, AGENT_SELECTOR, lines=lines)
    except Exception:  # noqa: BLE001 - diagnostics only
        return ""


def step_accounts(d: Demo, manifest: str, accounts: list[dict]) -> None:
    out = d.out
    names = [a["metadata"]["name"] for a in accounts]
    out.step(3, f"kubectl apply -f examples/  ({len(names)} SipAccounts in namespace {d.namespace!r})")
    for a in accounts:
        spec = a["spec"]
        how = ("dedicated agent" if (spec.get("agent") or {}).get("dedicated") else
               f"routeMode {spec.get('routeMode', 'prevent')}")
        out.line(f"{a['metadata']['name']:<6} {spec['aor']:<28} route {fmt_route(spec['route'])}  {how}")
    if d.lab.subnet != EXAMPLE_SUBNET:
        out.line(f"(the examples' {EXAMPLE_SUBNET}.x addresses rewritten to the lab's {d.lab.subnet}.x)")
    res = d.kubectl("apply", "-n", d.namespace, "-f", "-", input=manifest, timeout=d.remaining(120))
    out.block(res.stdout)
    if d.images_changed:
        res = d.kubectl("-n", d.namespace, "delete", "pod", "-l", AGENT_SELECTOR, "--wait=false", check=False)
        if res.stdout.strip():
            out.line("the agent image was re-imported: agent pods of an earlier run restarted")

    t = time.monotonic()
    wait_s = int(d.remaining(240))
    res = d.kubectl("-n", d.namespace, "wait", "--for=condition=Registered", *[f"sipaccount/{n}" for n in names],
                    f"--timeout={wait_s}s", check=False, timeout=wait_s + 30)
    if res.returncode != 0:
        table = d.kubectl("-n", d.namespace, "get", "sipacc", "-o", "wide", check=False).stdout
        raise DemoError(f"not every SipAccount became Registered within {wait_s} s: {res.stderr.strip()}\n"
                        f"{table}{agent_logs(d)}")
    out.line(f"kubectl wait --for=condition=Registered: all {len(names)} Registered ({time.monotonic() - t:.1f} s)")
    res = d.kubectl("-n", d.namespace, "get", "sipacc", "-o", "wide")
    out.line(f"kubectl{d.ns_flag} get sipacc -o wide")
    out.block(res.stdout)
