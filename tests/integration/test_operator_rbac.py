"""Each agent's ServiceAccount can reach only what it hosts: a token of one agent gets 403 for another
agent's SipAccount, its status and its Secret."""

from __future__ import annotations

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from sipfleet.api.models import GROUP, PLURAL, VERSION
from sipfleet.localenv.waiting import wait_for

pytestmark = [pytest.mark.cluster]

NOWHERE = "sip:127.0.20.250:5060"  # nothing listens there: these agents need not register for this test


def spec(secret: str, dedicated: bool) -> dict:
    return {
        "aor": f"sip:{secret}@rbac.test", "registrar": NOWHERE, "route": [f"{NOWHERE};lr"],
        "credentials": {"secretName": secret}, "agent": {"dedicated": dedicated},
    }


def token_client(cluster, k8s, ns: str, sa: str) -> client.ApiClient:
    tr = client.CoreV1Api(k8s).create_namespaced_service_account_token(
        sa, ns, {"spec": {"expirationSeconds": 600}}
    )
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(cluster.kubeconfig), client_configuration=cfg)
    cfg.cert_file = cfg.key_file = None
    cfg.api_key = {"authorization": f"Bearer {tr.status.token}"}
    return client.ApiClient(cfg)


def status_code(fn) -> int:
    try:
        fn()
        return 200
    except ApiException as e:
        return e.status


def test_agent_token_reaches_only_its_own_accounts(operator, sipacc, cluster, k8s):
    sipacc.secret("mine", "mine", "pw-mine")
    sipacc.secret("theirs", "theirs", "pw-theirs")
    sipacc.create("mine", spec("mine", dedicated=True))
    sipacc.create("theirs", spec("theirs", dedicated=True))
    wait_for(lambda: sipacc.hosting_agent("mine") and sipacc.hosting_agent("theirs"), timeout=60,
             message="both placed")
    mine = sipacc.hosting_agent("mine")
    assert mine != sipacc.hosting_agent("theirs")
    wait_for(lambda: status_code(lambda: sipacc.core.read_namespaced_service_account(mine, sipacc.ns)) == 200,
             timeout=30, message="agent ServiceAccount")

    api = token_client(cluster, k8s, sipacc.ns, mine)
    try:
        custom = client.CustomObjectsApi(api)
        core = client.CoreV1Api(api)
        ns = sipacc.ns
        get = lambda n: lambda: custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, n)  # noqa: E731
        patch = lambda n: lambda: custom.patch_namespaced_custom_object_status(  # noqa: E731
            GROUP, VERSION, ns, PLURAL, n, {"status": {"agent": {"name": mine}}})
        # RBAC is written together with the assignment: wait until the token works for its own account
        wait_for(lambda: status_code(get("mine")) == 200, timeout=30, message="agent can read its account")
        assert status_code(patch("mine")) == 200
        assert status_code(lambda: core.read_namespaced_secret("mine", ns)) == 200
        assert status_code(lambda: core.read_namespaced_config_map(mine, ns)) == 200

        assert status_code(get("theirs")) == 403
        assert status_code(patch("theirs")) == 403
        assert status_code(lambda: core.read_namespaced_secret("theirs", ns)) == 403
        assert status_code(lambda: custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)) == 403
        assert status_code(lambda: core.list_namespaced_secret(ns)) == 403
        assert status_code(lambda: custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "mine")) == 403
        assert status_code(lambda: custom.patch_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, "mine", {"spec": {"aor": "sip:x@y.z"}})) == 403
    finally:
        api.close()
