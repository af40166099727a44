"""The Helm chart against the real local cluster (control plane, a real kubelet, containerd and kube-proxy).

* what ``helm template`` renders (default, namespaced and non-default values) and the examples are accepted by
  the apiserver (``kubectl apply --dry-run=server``), and the operator's ServiceAccount may create the agent
  RBAC it builds (the apiserver's escalation check, no ``escalate``/``bind`` granted);
* ``helm install``: the operator pod runs (its image, built from images/Dockerfile.operator), serves /healthz and /metrics, and a
  SipAccount against the real SIP lab becomes Registered;
* ``helm uninstall`` leaves none of the release's objects behind; the CRD stays.

The release is installed in namespaced mode (``watchNamespaces`` = the test's namespace), so it never competes
with another operator a different test may run cluster-wide.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from sipfleet.api import models as m
from sipfleet.localenv.waiting import wait_for
from tests.fixtures.chart import CHART, KUBE_VERSION, ensure_crd, pods, ready, restricted

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
RELEASE = "sf"


def server_dry_run(cluster, namespace: str, manifest: str) -> list[str]:
    res = cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=manifest)
    lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
    assert lines and all("(server dry run)" in ln for ln in lines), res.stdout
    assert "PodSecurity" not in res.stderr, res.stderr  # "would violate PodSecurity restricted:..."
    return lines


# ---------------------------------------------------------------------------------------------------------------


def test_rendered_chart_and_examples_pass_server_side_validation(cluster, helm, namespace):
    ensure_crd(cluster)
    restricted(cluster, namespace)
    variants = {
        "default": [],
        "namespaced": ["--set", f"watchNamespaces={{{namespace}}}"],
        "non-default": ["--set", "metrics.enabled=false", "--set", "replicaCount=0", "--set", "logLevel=DEBUG",
                        "--set", "image.digest=sha256:" + "b" * 64, "--set", "agent.image.tag=0.1.0-rc1"],
    }
    for name, extra in variants.items():
        rendered = helm("template", RELEASE, str(CHART), "--namespace", namespace, "--kube-version", KUBE_VERSION,
                        *extra).stdout
        kinds = {d["kind"] for d in yaml.safe_load_all(rendered) if d}
        lines = server_dry_run(cluster, namespace, rendered)
        assert len(lines) == len([d for d in yaml.safe_load_all(rendered) if d]), (name, lines)
        assert "Deployment" in kinds, name

    for f in sorted(EXAMPLES.glob("*.yaml")):
        server_dry_run(cluster, namespace, f.read_text())


def test_operator_service_account_may_create_agent_rbac(cluster, helm, namespace):
    """The apiserver's RBAC escalation check, for real: impersonate the operator's ServiceAccount and create (dry
    run) the Role and RoleBinding the operator builds for an agent."""
    from sipfleet_operator import builders as b
    from sipfleet_operator import placement as p

    ensure_crd(cluster)
    for extra in ([], ["--set", f"watchNamespaces={{{namespace}}}"]):
        rendered = helm("template", RELEASE, str(CHART), "--namespace", namespace, "--kube-version", KUBE_VERSION,
                        *extra).stdout
        rbac = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] in
                ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")]
        suffix = "-ns" if extra else "-cw"
        for d in rbac:  # distinct names so the two variants do not overlap
            d["metadata"]["name"] += suffix
            if "roleRef" in d:
                d["roleRef"]["name"] += suffix
                d["subjects"][0]["name"] += suffix
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(rbac))
        sa = f"system:serviceaccount:{namespace}:{RELEASE}-sipfleet{suffix}"
        try:
            spec = m.SipAccountSpec(aor="sip:x@lab.sipfleet.test", registrar="sip:127.0.10.2:5060",
                                    route=["sip:127.0.10.1:5060;lr"], credentials={"secretName": "x-sip"})
            acc = b.HostedAccount(name="x", namespace=namespace, uid="00000000-0000-0000-0000-000000000001",
                                  generation=1, spec=spec)
            key = p.GroupKey.for_spec(namespace, "x", spec)
            (agent,) = p.place({}, key, "x", p.worker_key(spec)).fleet.values()
            objs = []
            for obj in (b.build_role(agent, [acc]), b.build_role_binding(agent, [acc])):
                obj = json.loads(json.dumps(obj))
                obj["metadata"].pop("ownerReferences", None)  # the owner does not exist in this dry run
                objs.append(obj)
            role, binding = objs
            # the Role for real (a RoleBinding is checked against the Role it references), then the binding
            res = cluster.kubectl("create", f"--as={sa}", "-n", namespace, "-f", "-",
                                  input=yaml.safe_dump(role), check=False)
            assert res.returncode == 0, f"{sa} may not create the agent Role:\n{res.stderr}"
            res = cluster.kubectl("create", "--dry-run=server", f"--as={sa}", "-n", namespace, "-f", "-",
                                  input=yaml.safe_dump(binding), check=False)
            assert res.returncode == 0, f"{sa} may not bind the agent Role:\n{res.stderr}"
            cluster.kubectl("delete", "role", role["metadata"]["name"], "-n", namespace)
            # and nothing beyond: no secrets writes, no cluster-scoped RBAC
            for verb, what in (("create", "secrets"), ("create", "clusterroles"), ("escalate", "roles"),
                               ("bind", "roles"), ("delete", "sipaccounts.sipfleet.io")):
                res = cluster.kubectl("auth", "can-i", verb, what, f"--as={sa}", "-n", namespace, check=False)
                assert res.stdout.strip() == "no", f"{sa} can {verb} {what}"
        finally:
            cluster.kubectl("delete", "-n", namespace, "--ignore-not-found", "-f", "-",
                            input=yaml.safe_dump_all(rbac), check=False)


def _http_get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 (loopback pod IP)
        return resp.status, resp.read().decode(errors="replace")


def _condition(obj: dict, typ: str) -> str | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == typ:
            return c.get("status")
    return None


def _log_tail(cluster, namespace: str, pod: str, lines: int = 60) -> str:
    try:
        path = cluster.container_log(pod, namespace)
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except Exception as e:  # noqa: BLE001 (diagnostics only)
        return f"(no log: {e})"


@pytest.mark.lab
def test_helm_install_registers_an_account_and_uninstall_cleans_up(cluster, k8s, helm, namespace, lab, lab_user):
    core = client.CoreV1Api(k8s)
    custom = client.CustomObjectsApi(k8s)
    selector = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=operator"
    pod = None
    # the operator pod and the agent pods it creates must pass the restricted Pod Security Standard
    restricted(cluster, namespace)

    out = helm("install", RELEASE, str(CHART), "--namespace", namespace,
               "--set", f"watchNamespaces={{{namespace}}}", "--set", "logFormat=text").stdout
    assert "kubectl wait --for=condition=Registered" in out  # NOTES.txt
    crd = client.ApiextensionsV1Api(k8s).read_custom_resource_definition(f"{m.PLURAL}.{m.GROUP}")
    assert crd.metadata.name == f"{m.PLURAL}.{m.GROUP}"

    try:
        # the operator pod runs and is Ready (the kubelet runs the image sipfleet/operator)
        pod = wait_for(lambda: next((p for p in pods(core, namespace, selector) if ready(p)), None),
                       timeout=120, message="operator pod Ready")
        ip = pod.status.pod_ip
        assert ip
        wait_for(lambda: _http_get(f"http://{ip}:8081/healthz")[0] == 200, timeout=60,
                 message="operator /healthz")
        status, body = wait_for(lambda: _http_get(f"http://{ip}:9090/metrics"), timeout=60,
                                message="operator /metrics")
        assert status == 200 and "sipfleet_" in body
        # the metrics Service has the operator pod as its endpoint (the real endpointslice controller)
        def metrics_endpoints():
            slices = client.DiscoveryV1Api(k8s).list_namespaced_endpoint_slice(
                namespace, label_selector=f"kubernetes.io/service-name={RELEASE}-sipfleet-metrics").items
            return [a for s in slices for e in s.endpoints or [] if (e.conditions and e.conditions.ready)
                    for a in e.addresses]

        assert wait_for(metrics_endpoints, timeout=60, message="metrics Service endpoints") == [ip]

        # a SipAccount against the real SIP lab becomes Registered through the proxy
        user, password = lab_user("chart")
        core.create_namespaced_secret(namespace, {
            "metadata": {"name": "chart-sip"}, "stringData": {"username": user, "password": password}})
        custom.create_namespaced_custom_object(m.GROUP, m.VERSION, namespace, m.PLURAL, {
            "apiVersion": m.API_VERSION, "kind": m.KIND, "metadata": {"name": "chart"},
            "spec": {"aor": lab.aor(user), "registrar": lab.registrar_uri(), "route": [lab.proxy_uri()],
                     "credentials": {"secretName": "chart-sip"}},
        })

        def registered():
            obj = custom.get_namespaced_custom_object(m.GROUP, m.VERSION, namespace, m.PLURAL, "chart")
            return obj if _condition(obj, "Registered") == "True" else None

        obj = wait_for(registered, timeout=120, interval=0.5, message="SipAccount chart Registered")
        route = obj["status"]["route"]
        assert route["firstHop"].endswith(lab.hostport("P")), route
        assert route["effective"] and lab.ip("P") in route["effective"][0], route
        assert not any(lab.ip("E") in r for r in route["effective"]), route

        # delete the account while the operator runs, then the agent objects go away
        custom.delete_namespaced_custom_object(m.GROUP, m.VERSION, namespace, m.PLURAL, "chart")

        def account_gone():
            try:
                custom.get_namespaced_custom_object(m.GROUP, m.VERSION, namespace, m.PLURAL, "chart")
                return False
            except ApiException as e:
                return e.status == 404

        wait_for(account_gone, timeout=120, message="SipAccount chart deleted")
        wait_for(lambda: not client.AppsV1Api(k8s).list_namespaced_deployment(
            namespace, label_selector="app.kubernetes.io/component=agent").items,
            timeout=120, message="agent Deployments gone")
    except Exception as e:
        agents = core.list_namespaced_pod(namespace, label_selector="app.kubernetes.io/component=agent").items
        logs = [f"operator {pod.metadata.name}:\n{_log_tail(cluster, namespace, pod.metadata.name)}"] if pod else []
        logs += [f"agent {a.metadata.name}:\n{_log_tail(cluster, namespace, a.metadata.name)}" for a in agents]
        hint = ""
        if any("system:anonymous" in text for text in logs):
            hint = ("\n\nHINT: the operator's own API client sent no credentials in the pod. In-cluster, the "
                    "kubernetes package (>= 31) keeps the ServiceAccount token as api_key['BearerToken']; "
                    "operator/sipfleet_operator/k8s.py must ask for that key (alias 'authorization'), e.g. "
                    "get_api_key_with_prefix('BearerToken', alias='authorization').")
        raise AssertionError(f"{e}\n\n" + "\n\n".join(logs) + hint) from e
    finally:
        helm("uninstall", RELEASE, "--namespace", namespace, "--wait", "--timeout", "120s", check=False)

    # nothing of the release is left: no Deployment, pod, Service, ServiceAccount, Role, RoleBinding, cluster RBAC
    rel = f"app.kubernetes.io/instance={RELEASE}"

    def leftovers() -> list[str]:
        found = []
        apps = client.AppsV1Api(k8s)
        rbac = client.RbacAuthorizationV1Api(k8s)
        for what, items in (
            ("deployment", apps.list_namespaced_deployment(namespace, label_selector=rel).items),
            ("pod", core.list_namespaced_pod(namespace, label_selector=rel).items),
            ("service", core.list_namespaced_service(namespace, label_selector=rel).items),
            ("serviceaccount", core.list_namespaced_service_account(namespace, label_selector=rel).items),
            ("role", rbac.list_namespaced_role(namespace, label_selector=rel).items),
            ("rolebinding", rbac.list_namespaced_role_binding(namespace, label_selector=rel).items),
            ("clusterrole", rbac.list_cluster_role(label_selector=rel).items),
            ("clusterrolebinding", rbac.list_cluster_role_binding(label_selector=rel).items),
            ("release secret", core.list_namespaced_secret(namespace, label_selector=f"owner=helm,name={RELEASE}").items),
        ):
            found += [f"{what}/{o.metadata.name}" for o in items]
        return found

    wait_for(lambda: not leftovers(), timeout=120, message="no release objects left")
    # CRDs in crds/ are never deleted by helm: the users' SipAccounts survive an uninstall
    client.ApiextensionsV1Api(k8s).read_custom_resource_definition(f"{m.PLURAL}.{m.GROUP}")


def test_deleting_a_watched_namespace_is_not_blocked(cluster, k8s, helm, namespace):
    """Namespaced mode with the chart's default RBAC: when a watched namespace is deleted, the namespace controller
    may remove the operator's Role there before anything else, and kopf stops watching it. Nothing of ours may
    hold the namespace: SipAccounts carry no finalizer. (Until 0.1 they did, and this deletion stayed Terminating
    in about 1 of 5 runs: the Role went before the operator released its finalizer.)"""
    core = client.CoreV1Api(k8s)
    custom = client.CustomObjectsApi(k8s)
    release = "sfns"
    watched = f"{namespace[:50]}-w"
    core.create_namespace({"metadata": {"name": watched, "labels": {"sipfleet.io/test": "true"}}})
    finalizer = f"{m.GROUP}/finalizer"

    def namespace_gone() -> bool:
        try:
            core.read_namespace(watched)
            return False
        except ApiException as e:
            return e.status == 404

    try:
        helm("install", release, str(CHART), "--namespace", namespace, "--set", f"watchNamespaces={{{watched}}}",
             "--set", "logFormat=text")
        selector = f"app.kubernetes.io/instance={release},app.kubernetes.io/component=operator"
        wait_for(lambda: next((p for p in pods(core, namespace, selector) if ready(p)), None),
                 timeout=120, message="operator pod Ready")
        core.create_namespaced_secret(watched, {"metadata": {"name": "w-sip"},
                                                "stringData": {"username": "w", "password": "not-used"}})
        nowhere = "sip:127.0.20.250:5060"  # nothing listens there: this account need not register
        custom.create_namespaced_custom_object(m.GROUP, m.VERSION, watched, m.PLURAL, {
            "apiVersion": m.API_VERSION, "kind": m.KIND, "metadata": {"name": "w"},
            "spec": {"aor": "sip:w@lab.sipfleet.test", "registrar": nowhere, "route": [f"{nowhere};lr"],
                     "credentials": {"secretName": "w-sip"}},
        })
        wait_for(lambda: (custom.get_namespaced_custom_object(m.GROUP, m.VERSION, watched, m.PLURAL, "w")
                          .get("status") or {}).get("conditions"),
                 timeout=120, message="the operator took the SipAccount (conditions)")
        wait_for(lambda: [c for c in core.list_namespaced_config_map(watched).items
                          if c.metadata.name.startswith("sipfleet-agent-")],
                 timeout=60, message="the operator placed it (its agent's ConfigMap)")
        assert finalizer not in (custom.get_namespaced_custom_object(
            m.GROUP, m.VERSION, watched, m.PLURAL, "w")["metadata"].get("finalizers") or [])

        core.delete_namespace(watched)
        wait_for(namespace_gone, timeout=120, interval=0.5, message=f"namespace {watched} deleted")
    finally:
        helm("uninstall", release, "--namespace", namespace, "--wait", "--timeout", "120s", check=False)
        if not namespace_gone():  # never leave a namespace stuck on a finalizer (a regression)
            try:
                for acc in custom.list_namespaced_custom_object(m.GROUP, m.VERSION, watched, m.PLURAL)["items"]:
                    custom.patch_namespaced_custom_object(m.GROUP, m.VERSION, watched, m.PLURAL,
                                                          acc["metadata"]["name"], {"metadata": {"finalizers": []}})
                core.delete_namespace(watched)
            except ApiException:
                pass
