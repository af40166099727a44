"""The SipAccount API as the real kube-apiserver enforces it: OpenAPI schema, CEL rules, the status subresource,
optimistic concurrency and resourceNames-limited RBAC for a ServiceAccount token.

Everything here talks to the local control plane started by the ``cluster`` fixture; nothing is mocked.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from sipfleet.api.models import GROUP, PLURAL, VERSION
from sipfleet.localenv.waiting import wait_for

pytestmark = pytest.mark.cluster

CRD_FILE = Path(__file__).resolve().parents[2] / "crds" / f"{PLURAL}.{GROUP}.yaml"
MERGE = "application/merge-patch+json"

VALID_SPEC = {
    "aor": "sip:alice@example.test",
    "registrar": "sip:127.0.20.2",
    "route": ["sip:127.0.20.1;lr"],
    "transport": "udp",
    "routeMode": "prevent",
    "credentials": {"secretName": "alice-credentials"},
}


def _crd_doc() -> dict:
    return yaml.safe_load(CRD_FILE.read_text())


def _spec_rule_message(field_path: str, needle: str) -> str:
    """The message of the spec-level CEL rule on ``field_path`` whose rule text contains ``needle``."""
    schema = _crd_doc()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for rule in schema.get("x-kubernetes-validations", []):
        if rule.get("fieldPath") == field_path and needle in rule["rule"]:
            return rule["message"]
    raise AssertionError(f"the CRD has no CEL rule on {field_path} mentioning {needle!r}")


@pytest.fixture
def objs(k8s, sipaccount_crd):
    return client.CustomObjectsApi(k8s)


def body(name: str, **spec_changes) -> dict:
    spec = copy.deepcopy(VALID_SPEC)
    spec.update(spec_changes)
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SipAccount", "metadata": {"name": name}, "spec": spec}


def create(objs, ns: str, obj: dict) -> dict:
    return objs.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, obj)


def rejected(objs, ns: str, obj: dict) -> ApiException:
    with pytest.raises(ApiException) as info:
        create(objs, ns, obj)
    return info.value


def error_message(exc: ApiException) -> str:
    try:
        return json.loads(exc.body)["message"]
    except (TypeError, ValueError, KeyError):
        return str(exc.body)


# ------------------------------------------------------------------------------------------------ schema, CEL


def test_valid_sipaccount_is_accepted_with_defaults(objs, namespace):
    spec = dict(VALID_SPEC)
    del spec["transport"], spec["routeMode"]
    created = create(objs, namespace, {**body("alice"), "spec": spec})
    assert created["spec"]["transport"] == "udp"  # schema defaults applied by the apiserver
    assert created["spec"]["routeMode"] == "prevent"
    assert created["spec"]["credentials"]["passwordKey"] == "password"
    assert created["metadata"]["generation"] == 1


def test_aor_pattern_violation_is_rejected_with_422_naming_the_field(objs, namespace):
    exc = rejected(objs, namespace, body("bad-aor", aor="alice at example"))
    assert exc.status == 422
    msg = error_message(exc)
    assert "spec.aor" in msg, msg
    assert "should match" in msg, msg


def test_missing_required_field_is_rejected(objs, namespace):
    obj = body("no-registrar")
    del obj["spec"]["registrar"]
    exc = rejected(objs, namespace, obj)
    assert exc.status == 422
    assert "spec.registrar" in error_message(exc)


def test_cel_rule_prevent_mode_needs_a_route(objs, namespace):
    exc = rejected(objs, namespace, body("prevent-no-route", route=[], routeMode="prevent"))
    assert exc.status == 422
    msg = error_message(exc)
    assert _spec_rule_message(".routeMode", "prevent") in msg, msg
    assert "spec.routeMode" in msg, msg
    # the same spec in account mode is fine: the rule, not the schema, rejected it
    create(objs, namespace, body("account-no-route", route=[], routeMode="account"))


def test_cel_rule_tls_needs_a_tls_route(objs, namespace):
    exc = rejected(objs, namespace, body("tls-plain-route", transport="tls", route=["sip:127.0.20.1;lr"]))
    assert exc.status == 422
    msg = error_message(exc)
    assert _spec_rule_message(".transport", "'tls' ||") in msg, msg
    create(objs, namespace, body("tls-ok", transport="tls", route=["sips:127.0.20.1;lr"],
                                 registrar="sips:127.0.20.2", tls={"caRef": {"name": "ca"}}))


def test_cel_rules_of_fallback_routes(objs, namespace):
    """Fallback routes are checked at admission, each refusal naming the field; an account without them (the
    field absent) passes every one of their rules."""
    create(objs, namespace, body("fb-none"))
    create(objs, namespace, body("fb-ok", fallbackRoutes=[["sip:127.0.20.3;lr"], ["sip:127.0.20.4;lr", "sip:127.0.20.5;lr"]],
                                 failover={"probeIntervalSeconds": 5, "returnAfterProbes": 2}))
    for name, spec, says in (
            ("fb-same", {"fallbackRoutes": [["sip:127.0.20.1;lr"]]}, "a fallback route must differ from route"),
            ("fb-strict", {"fallbackRoutes": [["sip:127.0.20.3"]]}, "must be a loose-routing URI"),
            ("fb-noroute", {"route": [], "routeMode": "account", "fallbackRoutes": [["sip:127.0.20.3;lr"]]},
             "fallbackRoutes need a primary route"),
            ("fb-sips", {"fallbackRoutes": [["sips:127.0.20.3;lr"]]}, "sips: URIs need transport tls"),
            ("fb-tls", {"transport": "tls", "route": ["sips:127.0.20.1;lr"], "registrar": "sips:127.0.20.2",
                        "tls": {"caRef": {"name": "ca"}}, "fallbackRoutes": [["sip:127.0.20.3;lr"]]},
             "transport tls needs sips: or ;transport=tls fallback routes")):
        exc = rejected(objs, namespace, body(name, **spec))
        msg = error_message(exc)
        assert exc.status == 422 and says in msg and "spec.fallbackRoutes" in msg, msg


def test_cel_rule_on_update_is_enforced(objs, namespace):
    create(objs, namespace, body("upd"))
    with pytest.raises(ApiException) as info:
        objs.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "upd", {"spec": {"route": []}},
                                            _content_type=MERGE)
    assert info.value.status == 422
    assert _spec_rule_message(".routeMode", "prevent") in error_message(info.value)


# ------------------------------------------------------------------------------------------------ status subresource


def test_status_subresource_separates_spec_and_status(objs, namespace):
    created = create(objs, namespace, body("split"))
    assert "status" not in created or not created["status"]

    # a write to the main resource ignores status
    patched = objs.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "split",
        {"metadata": {"labels": {"touched": "yes"}}, "status": {"observedGeneration": 7}}, _content_type=MERGE,
    )
    assert patched["metadata"]["labels"]["touched"] == "yes"
    assert not (patched.get("status") or {}).get("observedGeneration")

    # a write to /status ignores spec (and does not bump generation)
    patched = objs.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "split",
        {"spec": {"aor": "sip:mallory@example.test"}, "status": {"observedGeneration": 1}}, _content_type=MERGE,
    )
    assert patched["status"]["observedGeneration"] == 1
    assert patched["spec"]["aor"] == VALID_SPEC["aor"]
    assert patched["metadata"]["generation"] == 1

    # spec changes bump generation; status survives them
    patched = objs.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "split", {"spec": {"aor": "sip:bob@example.test"}}, _content_type=MERGE
    )
    assert patched["metadata"]["generation"] == 2
    assert patched["status"]["observedGeneration"] == 1


def test_status_is_validated_too(objs, namespace):
    create(objs, namespace, body("st"))
    with pytest.raises(ApiException) as info:
        objs.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, "st", {"status": {"observedGeneration": "seven"}}, _content_type=MERGE
        )
    assert info.value.status == 422
    assert "status.observedGeneration" in error_message(info.value)


# ------------------------------------------------------------------------------------------------ concurrency


def test_stale_resource_version_update_conflicts(objs, namespace):
    first = create(objs, namespace, body("occ"))
    stale = copy.deepcopy(first)

    fresh = copy.deepcopy(first)
    fresh["spec"]["aor"] = "sip:bob@example.test"
    updated = objs.replace_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "occ", fresh)
    assert updated["metadata"]["resourceVersion"] != first["metadata"]["resourceVersion"]

    stale["spec"]["aor"] = "sip:carol@example.test"
    with pytest.raises(ApiException) as info:
        objs.replace_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "occ", stale)
    assert info.value.status == 409
    current = objs.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "occ")
    assert current["spec"]["aor"] == "sip:bob@example.test"

    # the same holds for the status subresource
    stale_status = {**stale, "status": {"observedGeneration": 1}}
    with pytest.raises(ApiException) as info:
        objs.replace_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "occ", stale_status)
    assert info.value.status == 409


# ------------------------------------------------------------------------------------------------ RBAC


def _token_client(cluster, k8s, namespace: str, sa: str) -> client.ApiClient:
    core = client.CoreV1Api(k8s)
    tr = core.create_namespaced_service_account_token(
        sa, namespace, {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                        "spec": {"expirationSeconds": 600}},
    )
    token = tr.status.token
    assert token and token.count(".") == 2  # a JWT
    cfg = client.Configuration()
    cfg.host = cluster.server
    cfg.ssl_ca_cert = str(cluster.pki.ca_crt)
    cfg.api_key = {"BearerToken": token}
    cfg.api_key_prefix = {"BearerToken": "Bearer"}
    return client.ApiClient(cfg)


def test_service_account_token_limited_by_resource_names(cluster, k8s, objs, namespace):
    core = client.CoreV1Api(k8s)
    rbac = client.RbacAuthorizationV1Api(k8s)
    create(objs, namespace, body("mine"))
    create(objs, namespace, body("theirs", aor="sip:bob@example.test"))
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "agent-1"}})
    rbac.create_namespaced_role(namespace, {
        "metadata": {"name": "agent-1"},
        "rules": [
            {"apiGroups": [GROUP], "resources": [PLURAL], "resourceNames": ["mine"], "verbs": ["get"]},
            {"apiGroups": [GROUP], "resources": [f"{PLURAL}/status"], "resourceNames": ["mine"],
             "verbs": ["get", "patch"]},
        ],
    })
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "agent-1"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "agent-1"},
        "subjects": [{"kind": "ServiceAccount", "name": "agent-1", "namespace": namespace}],
    })

    with _token_client(cluster, k8s, namespace, "agent-1") as api:
        agent = client.CustomObjectsApi(api)

        # RBAC changes reach the authorizer's cache asynchronously: poll for the first allowed call.
        mine = wait_for(
            lambda: agent.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "mine"),
            timeout=60, interval=0.2, message="the agent may read its own SipAccount",
        )
        assert mine["metadata"]["name"] == "mine"

        patched = agent.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, "mine", {"status": {"observedGeneration": 1}}, _content_type=MERGE
        )
        assert patched["status"]["observedGeneration"] == 1

        def forbidden(call) -> int:
            with pytest.raises(ApiException) as info:
                call()
            return info.value.status

        assert forbidden(lambda: agent.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                                     "theirs")) == 403
        assert forbidden(lambda: agent.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, "theirs", {"status": {"observedGeneration": 1}},
            _content_type=MERGE)) == 403
        # status rights do not extend to the main resource, nor to listing
        assert forbidden(lambda: agent.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "mine", {"metadata": {"labels": {"x": "y"}}},
            _content_type=MERGE)) == 403
        assert forbidden(lambda: agent.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)) == 403

        # and the token identifies the ServiceAccount
        review = client.AuthenticationV1Api(api).create_self_subject_review(
            {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
        )
        assert review.status.user_info.username == f"system:serviceaccount:{namespace}:agent-1"

    theirs = objs.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "theirs")
    assert not (theirs.get("status") or {}).get("observedGeneration")


def test_node_identity_is_limited_by_the_node_authorizer(cluster, k8s, namespace):
    """The kubelet's credentials (CN=system:node:..., O=system:nodes) get a kubelet's rights, no more:
    it may read its own Node but not other Nodes, nor a Secret that no pod on it references, nor write other namespaces' objects."""
    from kubernetes import config

    core = client.CoreV1Api(k8s)
    core.create_namespaced_secret(namespace, {"metadata": {"name": "unreferenced"}, "stringData": {"k": "v"}})
    node_api = config.new_client_from_config(config_file=str(cluster.dir / "kubeconfig-node"))
    with node_api:
        node_core = client.CoreV1Api(node_api)
        review = client.AuthenticationV1Api(node_api).create_self_subject_review(
            {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
        )
        assert review.status.user_info.username == "system:node:sipfleet-node-0"
        assert "system:nodes" in review.status.user_info.groups
        assert node_core.read_node("sipfleet-node-0").metadata.name == "sipfleet-node-0"  # its own Node
        for call in (
            node_core.list_node,  # since 1.35 a node may read only its own Node
            lambda: node_core.read_namespaced_secret("unreferenced", namespace),
            lambda: node_core.list_namespaced_secret(namespace),
            lambda: node_core.create_namespaced_config_map(namespace, {"metadata": {"name": "x"}}),
        ):
            with pytest.raises(ApiException) as info:
                call()
            assert info.value.status == 403
