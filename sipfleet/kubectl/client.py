"""The plugin's only API I/O: a thin wrapper over the ``kubernetes`` client that returns plain dicts (the JSON the
apiserver serves), honouring ``--kubeconfig`` / ``--context`` (else ``$KUBECONFIG``, ``~/.kube/config``, in-cluster).
"""

from __future__ import annotations

import json
import os

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from sipfleet.api import keys
from sipfleet.api import models as m

CRD_NAME = f"{m.PLURAL}.{m.GROUP}"


class Client:
    def __init__(self, kubeconfig: str | None = None, context: str | None = None):
        self.context_namespace = "default"
        path = kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
        if kubeconfig is None and not any(os.path.exists(p) for p in path.split(os.pathsep)) \
                and os.environ.get("KUBERNETES_SERVICE_HOST"):
            cfg = client.Configuration()
            config.load_incluster_config(client_configuration=cfg)
            self.api = client.ApiClient(cfg)
            try:
                with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
                    self.context_namespace = f.read().strip() or "default"
            except OSError:
                pass
        else:
            self.api = config.new_client_from_config(config_file=kubeconfig, context=context)
            contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
            ctx = next((c for c in contexts if c["name"] == context), None) if context else active
            self.context_namespace = ((ctx or {}).get("context") or {}).get("namespace") or "default"
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.ext = client.ApiextensionsV1Api(self.api)
        self.authz = client.AuthorizationV1Api(self.api)

    def close(self) -> None:
        self.api.close()

    def _d(self, obj) -> dict:
        return self.api.sanitize_for_serialization(obj)

    def _items(self, resp) -> list[dict]:
        d = self._d(resp)
        kind = (d.get("kind") or "").removesuffix("List")
        items = d.get("items") or []
        for i in items:  # list items carry no kind/apiVersion
            i.setdefault("kind", kind)
        return items

    # ---------------------------------------------------------------------------------------------- SipAccounts
    def accounts(self, namespace: str | None, selector: str | None = None) -> list[dict]:
        kw = {"label_selector": selector} if selector else {}
        if namespace is None:
            resp = self.custom.list_cluster_custom_object(m.GROUP, m.VERSION, m.PLURAL, **kw)
        else:
            resp = self.custom.list_namespaced_custom_object(m.GROUP, m.VERSION, namespace, m.PLURAL, **kw)
        return sorted(resp.get("items") or [], key=lambda a: (a["metadata"].get("namespace"), a["metadata"]["name"]))

    def account(self, namespace: str, name: str) -> dict:
        return self.custom.get_namespaced_custom_object(m.GROUP, m.VERSION, namespace, m.PLURAL, name)

    def annotate(self, namespace: str, name: str, patch: dict) -> dict:
        return self.custom.patch_namespaced_custom_object(m.GROUP, m.VERSION, namespace, m.PLURAL, name, patch)

    def events(self, namespace: str | None, name: str | None = None) -> list[dict]:
        sel = f"involvedObject.kind={m.KIND}" + (f",involvedObject.name={name}" if name else "")
        if namespace is None:
            return self._items(self.core.list_event_for_all_namespaces(field_selector=sel))
        return self._items(self.core.list_namespaced_event(namespace, field_selector=sel))

    # ---------------------------------------------------------------------------------------------- agents
    def agent_deployments(self, namespace: str | None) -> list[dict]:
        if namespace is None:
            return self._items(self.apps.list_deployment_for_all_namespaces(label_selector=keys.AGENT_SELECTOR))
        return self._items(self.apps.list_namespaced_deployment(namespace, label_selector=keys.AGENT_SELECTOR))

    def agent_pods(self, namespace: str | None, agent: str | None = None) -> list[dict]:
        sel = keys.AGENT_SELECTOR + (f",{keys.LABEL_AGENT}={agent}" if agent else "")
        if namespace is None:
            return self._items(self.core.list_pod_for_all_namespaces(label_selector=sel))
        return self._items(self.core.list_namespaced_pod(namespace, label_selector=sel))

    def node_summary(self, node: str) -> dict:
        """The kubelet's /stats/summary through the apiserver's node proxy (needs ``nodes/proxy`` get)."""
        resp = self.core.connect_get_node_proxy_with_path(node, "stats/summary", _preload_content=False,
                                                          _request_timeout=10)
        return json.loads(resp.data)

    def memory(self, pods: list[dict]) -> tuple[dict[tuple[str, str], int] | None, str | None]:
        """Working-set bytes per (namespace, pod) from every node that runs one of ``pods``; (None, why) when the
        summary is not readable."""
        nodes = sorted({(p.get("spec") or {}).get("nodeName") for p in pods} - {None})
        out: dict[tuple[str, str], int] = {}
        for node in nodes:
            try:
                summary = self.node_summary(node)
            except ApiException as e:
                return None, f"{e.status} {e.reason} reading nodes/{node}/proxy/stats/summary"
            except Exception as e:  # noqa: BLE001 - the kubelet may be unreachable; memory is optional
                return None, f"{type(e).__name__} reading nodes/{node}/proxy/stats/summary"
            for p in summary.get("pods") or []:
                ref, mem = p.get("podRef") or {}, (p.get("memory") or {}).get("workingSetBytes")
                if mem:  # a pod the kubelet has not measured yet reports 0: not known, rather than 0 bytes
                    out[(ref.get("namespace"), ref.get("name"))] = int(mem)
        return out, None

    def pod_log(self, namespace: str, pod: str, container: str | None = None, tail: int | None = None,
                since_seconds: int | None = None, previous: bool = False) -> str:
        kw = {"_preload_content": False, "previous": previous}
        if container:
            kw["container"] = container
        if tail is not None:
            kw["tail_lines"] = tail
        if since_seconds is not None:
            kw["since_seconds"] = since_seconds
        resp = self.core.read_namespaced_pod_log(pod, namespace, **kw)
        return resp.data.decode("utf-8", errors="replace")

    def follow_log(self, namespace: str, pod: str, tail: int | None = None, since_seconds: int | None = None):
        """The pod's log lines as they come (``kubectl logs -f``), until the stream ends."""
        kw = {"_preload_content": False, "follow": True}
        if tail is not None:
            kw["tail_lines"] = tail
        if since_seconds is not None:
            kw["since_seconds"] = since_seconds
        resp = self.core.read_namespaced_pod_log(pod, namespace, **kw)
        buf = b""
        try:
            for chunk in resp.stream(4096):
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    yield line.decode("utf-8", errors="replace")
            if buf:
                yield buf.decode("utf-8", errors="replace")
        finally:
            resp.release_conn()

    # ---------------------------------------------------------------------------------------------- doctor
    def crd(self) -> dict | None:
        try:
            return self._d(self.ext.read_custom_resource_definition(CRD_NAME))
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def operators(self, namespace: str | None = None) -> list[dict]:
        if namespace is None:
            return self._items(self.apps.list_deployment_for_all_namespaces(label_selector=keys.OPERATOR_SELECTOR))
        return self._items(self.apps.list_namespaced_deployment(namespace, label_selector=keys.OPERATOR_SELECTOR))

    def pods_matching(self, namespace: str, match_labels: dict[str, str]) -> list[dict]:
        sel = ",".join(f"{k}={v}" for k, v in sorted(match_labels.items()))
        return self._items(self.core.list_namespaced_pod(namespace, label_selector=sel))

    def can(self, user: str, groups: list[str], namespace: str | None, group: str, resource: str, verb: str) -> bool:
        """A SubjectAccessReview: may ``user`` (with ``groups``) do this?"""
        res, _, sub = resource.partition("/")
        attrs = {"group": group, "resource": res, "verb": verb}
        if sub:
            attrs["subresource"] = sub
        if namespace:
            attrs["namespace"] = namespace
        body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                "spec": {"user": user, "groups": groups, "resourceAttributes": attrs}}
        return bool(self.authz.create_subject_access_review(body).status.allowed)
