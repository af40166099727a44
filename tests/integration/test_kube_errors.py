"""sipfleet.api.kerrors on the real apiserver's answers: each class from a request that really fails that way.

404, 409 (AlreadyExists and a stale resourceVersion), 403 (RBAC, via impersonation of a user with no rights), 422,
a namespace being deleted (held by a finalizer of the test's own), and 429 with Retry-After from API priority and
fairness: a priority level with no seats of its own that rejects (it runs one request only while it runs nothing
else), a flow schema sending one impersonated user there, and that user's concurrent LISTs of 2 MB.
"""

from __future__ import annotations

import concurrent.futures as cf
import uuid

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from sipfleet.api import kerrors as ke
from sipfleet.localenv.waiting import wait_for

pytestmark = [pytest.mark.cluster]

FLOWCONTROL = ("flowcontrol.apiserver.k8s.io", "v1")


def fails(fn, *args, **kwargs) -> ke.KubeError:
    try:
        fn(*args, **kwargs)
    except ApiException as e:
        return ke.from_api_exception(e)
    raise AssertionError(f"{fn.__name__} did not fail")


def cm(name: str, **meta) -> dict:
    return {"metadata": {"name": name, **meta}, "data": {"k": "v"}}


def impersonating(k8s, user: str) -> client.ApiClient:
    return client.ApiClient(k8s.configuration, header_name="Impersonate-User", header_value=user)


def test_not_found_already_exists_conflict_invalid(k8s, namespace):
    core = client.CoreV1Api(k8s)
    assert type(fails(core.read_namespaced_config_map, "nope", namespace)) is ke.NotFound
    core.create_namespaced_config_map(namespace, cm("a"))
    assert type(fails(core.create_namespaced_config_map, namespace, cm("a"))) is ke.AlreadyExists
    stale = core.read_namespaced_config_map("a", namespace)
    core.patch_namespaced_config_map("a", namespace, {"data": {"k": "w"}})
    err = fails(core.replace_namespaced_config_map, "a", namespace, stale)
    assert type(err) is ke.Conflict and err.retryable
    err = fails(core.create_namespaced_config_map, namespace, cm("Not_A_Name"))
    assert type(err) is ke.Invalid and err.fields() == ["metadata.name"]


def test_forbidden(k8s, namespace):
    nobody = impersonating(k8s, f"sipfleet-test-nobody-{uuid.uuid4().hex[:6]}")
    try:
        err = fails(client.CoreV1Api(nobody).list_namespaced_config_map, namespace)
    finally:
        nobody.close()
    assert type(err) is ke.Forbidden and not err.retryable


def test_a_namespace_being_deleted(k8s):
    core = client.CoreV1Api(k8s)
    ns = f"kerr-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": ns, "labels": {"sipfleet.io/test": "true"}}})
    core.create_namespaced_config_map(ns, cm("held", finalizers=["sipfleet.io/test-hold"]))
    try:
        core.delete_namespace(ns)
        wait_for(lambda: core.read_namespace(ns).status.phase == "Terminating", timeout=30, message="Terminating")
        err = fails(core.create_namespaced_config_map, ns, cm("new"))
        assert type(err) is ke.NamespaceTerminating and isinstance(err, ke.Forbidden)
    finally:
        core.patch_namespaced_config_map("held", ns, {"metadata": {"finalizers": None}})


def test_too_many_requests_with_retry_after(k8s, namespace):
    objs = client.CustomObjectsApi(k8s)
    tag = uuid.uuid4().hex[:6]
    level, user = f"sipfleet-test-jail-{tag}", f"sipfleet-test-jailed-{tag}"
    objs.create_cluster_custom_object(*FLOWCONTROL, "prioritylevelconfigurations", {
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "PriorityLevelConfiguration",
        "metadata": {"name": level},
        "spec": {"type": "Limited", "limited": {"nominalConcurrencyShares": 0, "lendablePercent": 0,
                                                "borrowingLimitPercent": 0, "limitResponse": {"type": "Reject"}}},
    })
    objs.create_cluster_custom_object(*FLOWCONTROL, "flowschemas", {
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "FlowSchema", "metadata": {"name": level},
        "spec": {"priorityLevelConfiguration": {"name": level}, "matchingPrecedence": 100,
                 "distinguisherMethod": {"type": "ByUser"},
                 "rules": [{"subjects": [{"kind": "User", "user": {"name": user}}],
                            "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"],
                                               "namespaces": ["*"], "clusterScope": True}]}]},
    })
    core = client.CoreV1Api(k8s)
    client.RbacAuthorizationV1Api(k8s).create_namespaced_role_binding(namespace, {
        "metadata": {"name": "jailed-view"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}]})
    for i in range(100):
        core.create_namespaced_config_map(namespace, {"metadata": {"name": f"c{i}"}, "data": {"k": "x" * 20000}})
    jailed = impersonating(k8s, user)

    def one(_) -> ke.KubeError | None:
        try:
            client.CoreV1Api(jailed).list_namespaced_config_map(namespace, _preload_content=False).read()
        except ApiException as e:
            return ke.from_api_exception(e)
        return None

    try:
        def rejected():
            with cf.ThreadPoolExecutor(20) as pool:
                return next((e for e in pool.map(one, range(40)) if e is not None and e.status == 429), None)

        err = wait_for(rejected, timeout=60, interval=0.2, message="a 429 from the jail priority level")
        assert type(err) is ke.TooManyRequests and err.retryable
        assert err.retry_after is not None and err.retry_after > 0
    finally:
        jailed.close()
        objs.delete_cluster_custom_object(*FLOWCONTROL, "flowschemas", level)
        objs.delete_cluster_custom_object(*FLOWCONTROL, "prioritylevelconfigurations", level)
