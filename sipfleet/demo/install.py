"""Step 2: ``helm upgrade --install`` of charts/sipfleet with the real helm (release ``sipfleet``, namespace
``sipfleet-system``), the restricted Pod Security Standard enforced on the operator's namespace and on the
accounts' namespace, the CRD kept current on a reused cluster, and the operator pod Running and Ready (restarted
when its image was re-imported)."""

from __future__ import annotations

import re
import subprocess
import time

from .context import RELEASE, RELEASE_NAMESPACE, Demo, DemoError
from .examples import REPO

CHART = REPO / "charts" / "sipfleet"
PSA_LABELS = ("pod-security.kubernetes.io/enforce=restricted", "pod-security.kubernetes.io/warn=restricted")
OPERATOR_SELECTOR = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=operator"


def restricted_namespace(d: Demo, namespace: str) -> None:
    """Create ``namespace`` if needed and enforce (and warn about) the restricted Pod Security Standard."""
    manifest = f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {namespace}\n"
    d.kubectl("apply", "-f", "-", input=manifest)
    d.kubectl("label", "namespace", namespace, "--overwrite", *PSA_LABELS)


def _ready_pod(core):
    for p in core.list_namespaced_pod(RELEASE_NAMESPACE, label_selector=OPERATOR_SELECTOR).items:
        if p.metadata.deletion_timestamp:
            continue
        if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or []):
            return p
    return None


def step_helm(d: Demo) -> None:
    from kubernetes import client

    from ..localenv import kubebin

    out = d.out
    out.step(2, f"helm install charts/sipfleet (release {RELEASE!r}, namespace {RELEASE_NAMESPACE!r})")
    for ns in dict.fromkeys([RELEASE_NAMESPACE, d.namespace]):
        restricted_namespace(d, ns)
    out.line(f"Pod Security Admission: {PSA_LABELS[0]} on namespaces "
             f"{', '.join(dict.fromkeys([RELEASE_NAMESPACE, d.namespace]))}")
    helm_bin = kubebin.ensure(["helm"], allow_path=False)["helm"]
    existed = _has_release(d, helm_bin)
    res = d.helm(helm_bin, "upgrade", "--install", RELEASE, str(CHART), "--namespace", RELEASE_NAMESPACE,
                 timeout=d.remaining(300))
    info = dict(re.findall(r"^(STATUS|REVISION|LAST DEPLOYED): (.*)$", res.stdout, re.M))
    version = subprocess.run([str(helm_bin), "version", "--short"], capture_output=True, text=True,
                             timeout=30).stdout.strip()
    out.line(f"helm {version}: release {RELEASE} revision {info.get('REVISION', '?')}, {info.get('STATUS', '?')}")
    # helm installs crds/ on first install only and never upgrades them: keep a reused cluster current
    d.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
    if existed and d.images_changed:
        d.kubectl("-n", RELEASE_NAMESPACE, "rollout", "restart", f"deployment/{RELEASE}")
        out.line("the operator image was re-imported: its Deployment restarted")

    t = time.monotonic()
    with d.api() as api:
        core = client.CoreV1Api(api)
        if existed and d.images_changed:
            time.sleep(1.0)  # the old pod stays Ready until the new one is: let the rollout begin
            d.kubectl("-n", RELEASE_NAMESPACE, "rollout", "status", f"deployment/{RELEASE}",
                      f"--timeout={int(d.remaining(180))}s", timeout=d.remaining(200))
        pod = d.wait(lambda: _ready_pod(core), 180, "the operator pod Running and Ready",
                     on_timeout=lambda: d.pod_logs(core, RELEASE_NAMESPACE, OPERATOR_SELECTOR))
    sc = pod.spec.containers[0].security_context
    out.line(f"operator pod {pod.metadata.name} Running and Ready ({time.monotonic() - t:.1f} s): image "
             f"{pod.spec.containers[0].image}, pod IP {pod.status.pod_ip}, runAsNonRoot "
             f"{getattr(sc, 'run_as_non_root', None) or pod.spec.security_context.run_as_non_root}, "
             f"readOnlyRootFilesystem {getattr(sc, 'read_only_root_filesystem', None)}")


def _has_release(d: Demo, helm_bin) -> bool:
    try:
        d.helm(helm_bin, "status", RELEASE, "--namespace", RELEASE_NAMESPACE, timeout=60)
        return True
    except DemoError:
        return False
