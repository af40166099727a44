"""The agent's TLS policy in cluster mode against the real kube-apiserver and the lab (no operator): the CA comes
from a ConfigMap key, the client certificate from a ``kubernetes.io/tls`` Secret, the wrong CA from a Secret key;
``status.tls`` survives the CRD's status schema, P's wire log shows the TLS transport and the client certificate
the agent presented, and the client key appears in no status and no log line."""

from __future__ import annotations

import json

import pytest

from sipfleet.api.models import API_VERSION, GROUP, KIND, PLURAL, VERSION
from sipfleet.localenv.waiting import wait_for
from sipfleet.localenv.siplab import tlspki
from tests.fixtures.agent import HTTP_PORT
from tests.integration.test_agent_cluster import _start_agent, _terminate

pytestmark = [pytest.mark.lab, pytest.mark.cluster]


def test_cluster_mode_tls_from_configmap_and_tls_secret(cluster, k8s, namespace, sipaccount_crd, lab, lab_user,
                                                       tmp_path):
    from kubernetes import client

    assert lab.tls_enabled, "Kamailio's tls module is missing: run ./scripts/setup (kamailio-tls-modules)"
    core, objs = client.CoreV1Api(k8s), client.CustomObjectsApi(k8s)
    user, password = lab_user("k8stls")
    crt, key = lab.client_cert()
    key_pem = key.read_text()
    core.create_namespaced_secret(namespace, {"metadata": {"name": "creds"},
                                              "stringData": {"username": user, "password": password}})
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "lab-ca"}, "data": {"ca.crt": lab.ca_pem()}})
    core.create_namespaced_secret(namespace, {"metadata": {"name": "wrong-ca"}, "stringData": {"bundle.pem": lab.wrong_ca_pem()}})
    core.create_namespaced_secret(namespace, {"metadata": {"name": "client-tls"}, "type": "kubernetes.io/tls",
                                              "stringData": {"tls.crt": crt.read_text(), "tls.key": key_pem}})
    reg = {"expiresSeconds": 60, "retryIntervalSeconds": 5, "firstRetryIntervalSeconds": 1, "jitterSeconds": 0}
    tls_ok = {"caRef": {"name": "lab-ca"}, "clientCertificateSecretRef": {"secretName": "client-tls"}}
    tls_bad = {"caRef": {"kind": "Secret", "name": "wrong-ca", "key": "bundle.pem"}}
    specs = {}
    for name, tls, aor in (("tls-ok", tls_ok, lab.aor(user)), ("tls-bad", tls_bad, lab.aor("nobody"))):
        specs[name] = {"aor": aor, "registrar": lab.registrar_uri(), "route": [lab.proxy_uri("tls")],
                       "transport": "tls", "tls": tls, "routeMode": "prevent", "credentials": {"secretName": "creds"},
                       "registration": reg}
        objs.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, {
            "apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name}, "spec": specs[name]})
    agent_tls = {"tls-ok": {"caName": "lab-ca", "clientSecretName": "client-tls"},
                 "tls-bad": {"caKind": "Secret", "caName": "wrong-ca", "caKey": "bundle.pem"}}
    accounts = [{"name": n, "namespace": namespace, **{k: v for k, v in s.items() if k != "tls"},
                 "tls": agent_tls[n]} for n, s in specs.items()]
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "agent-t"}, "data": {"assignment.json": json.dumps(
        {"agent": "agent-t", "settings": {"httpPort": HTTP_PORT, "statusDebounceMs": 50}, "accounts": accounts})}})
    pod_ip = lab.client_address()
    proc, tail, status = _start_agent(cluster, objs, namespace, pod_ip, tmp_path, "agent-t",
                                      {"SIPFLEET_ASSIGNMENT_CONFIGMAP": "agent-t",
                                       "SIPFLEET_AGENT_TLS_RESYNC_SECONDS": "2"}, [])
    try:
        ok = wait_for(lambda: (s := status("tls-ok")).get("registration", {}).get("state") == "Registered"
                      and (s.get("tls") or {}).get("state") == "Connected" and s, timeout=90, interval=0.2,
                      message="tls-ok Registered over TLS in status")
        assert ok["tls"]["verified"] is True and ok["tls"]["protocol"] == "TLSv1.2" and ok["tls"]["cipher"]
        assert ok["route"]["firstHop"] == f"tls:{lab.tls_hostport('P')}"
        rec = lab.wait_wire(lambda r: f":{user}@" in r.from_uri, node="P", method="REGISTER", timeout=30)
        assert rec.transport == "tls" and rec.tls_peer == tlspki.CLIENT_CN  # the client certificate was presented
        assert (rec.tls_version, rec.tls_cipher) == ("TLSv1.2", ok["tls"]["cipher"])
        bad = wait_for(lambda: (s := status("tls-bad")).get("registration", {}).get("failureReason") == "TlsVerifyFailed"
                       and s, timeout=60, interval=0.2, message="tls-bad TlsVerifyFailed in status")
        assert "The certificate is untrusted" in bad["registration"]["reason"]
        assert bad["tls"]["state"] == "Failed" and bad["tls"]["verified"] is False
        body = "".join(key_pem.split("\n")[1:3])
        everything = json.dumps([status("tls-ok"), status("tls-bad")]) + (tmp_path / "agent.stderr").read_text(errors="replace")
        assert body not in everything and password not in everything
        assert proc.poll() is None
        # the CA rotates (same ConfigMap, now the wrong CA): the agent reads it again within its resync period and
        # the account moves to a worker with the new material, which refuses P's certificate
        core.patch_namespaced_config_map("lab-ca", namespace, {"data": {"ca.crt": lab.wrong_ca_pem()}})
        wait_for(lambda: status("tls-ok").get("registration", {}).get("failureReason") == "TlsVerifyFailed",
                 timeout=60, interval=0.2, message="tls-ok TlsVerifyFailed after the CA changed")
        core.patch_namespaced_config_map("lab-ca", namespace, {"data": {"ca.crt": lab.ca_pem()}})
        wait_for(lambda: (s := status("tls-ok")).get("registration", {}).get("state") == "Registered"
                 and (s.get("tls") or {}).get("state") == "Connected", timeout=60, interval=0.2,
                 message="tls-ok Registered again with the lab CA back")
        assert proc.poll() is None
    finally:
        rc = _terminate(proc)
        lab.release_client_address(pod_ip)
    assert rc == 0, tail()
