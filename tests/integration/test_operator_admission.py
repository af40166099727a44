"""Invalid SipAccounts are rejected at admission by the real kube-apiserver (schema + CEL), naming the field.

Only the apiserver and the CRD take part: nothing reaches the operator. A valid control object is accepted, so
each rejection is caused by its one mutation.
"""

from __future__ import annotations

import copy
import json

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from sipfleet.api.models import GROUP, PLURAL, VERSION

pytestmark = pytest.mark.cluster

BASE = {
    "aor": "sip:alice@example.test",
    "registrar": "sip:127.0.20.2:5060",
    "route": ["sip:127.0.20.1:5060;lr"],
    "credentials": {"secretName": "alice"},
}


def mod(**changes) -> dict:
    """BASE with changes; ``a__b`` addresses nested fields, ``None`` removes a field."""
    spec = copy.deepcopy(BASE)
    for key, value in changes.items():
        cur = spec
        parts = key.split("__")
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        if value is None:
            cur.pop(parts[-1], None)
        else:
            cur[parts[-1]] = value
    return spec


INVALID = [
    ("spec.aor", mod(aor="alice@example.test")),
    ("spec.aor", mod(aor="sip:example.test")),
    ("spec.aor", mod(aor=None)),
    ("spec.registrar", mod(registrar="sip:127.0.20.2 5060")),
    ("spec.registrar", mod(registrar="http://127.0.20.2")),
    ("spec.route[0]", mod(route=["<sip:127.0.20.1;lr>"])),
    ("spec.route", mod(route=[f"sip:127.0.20.{i};lr" for i in range(1, 6)])),
    ("spec.route[1]", mod(route=["sip:127.0.20.1;lr", "sip:127.0.20.1;lr"])),
    ("spec.transport", mod(transport="sctp")),
    ("spec.routeMode", mod(routeMode="sometimes")),
    ("spec.routeMode", mod(route=[])),  # prevent mode needs a proxy
    ("spec.transport", mod(transport="tls")),  # tls needs sips:/transport=tls hops
    ("spec.transport", mod(registrar="sips:127.0.20.2", route=[], routeMode="account")),  # sips needs tls
    ("spec.credentials", mod(credentials=None)),
    ("spec.credentials.secretName", mod(credentials__secretName="Bad_Name")),
    ("spec.credentials.usernameKey", mod(credentials__usernameKey="bad key!")),
    ("spec.registration.expiresSeconds", mod(registration__expiresSeconds=10)),
    ("spec.registration.firstRetryIntervalSeconds",
     mod(registration__firstRetryIntervalSeconds=60, registration__retryIntervalSeconds=30)),
    ("spec.registration.jitterSeconds", mod(registration__jitterSeconds=30, registration__retryIntervalSeconds=30)),
    ("spec.incomingCalls.policy", mod(incomingCalls__policy="maybe")),
    ("spec.incomingCalls.rejectCode", mod(incomingCalls__rejectCode=603)),
    ("spec.incomingCalls.answerDelayMs", mod(incomingCalls__policy="reject", incomingCalls__answerDelayMs=100)),
    ("spec.drift.repairTimeoutSeconds", mod(drift__repairTimeoutSeconds=0)),
    ("spec.drift.maxPodRestarts", mod(drift__maxPodRestarts=11)),
    ("spec.agent.dedicated", mod(agent__dedicated="yes")),
    # every string that reaches a SIP header or URI refuses control characters (header injection)
    ("spec.credentials.realm", mod(credentials__realm="a\r\nb")),
    ("spec.credentials.realm", mod(credentials__realm='lab"; nonce="x')),
    ("spec.aor", mod(aor="sip:al\x01ice@example.test")),
    ("spec.aor", mod(aor="sip:alice\r\nVia: x@example.test")),
    ("spec.registrar", mod(registrar="sip:127.0.20.2;x=\x7f")),
    ("spec.route[0]", mod(route=["sip:127.0.20.1;lr;x=\r\nInjected: yes"])),
    # spec.tls: only with transport tls, required with it, a CA to verify against while verifying
    ("spec.tls", mod(tls={"verifyServer": False})),
    ("spec.tls", mod(transport="tls", route=["sips:127.0.20.1;lr"], registrar="sips:127.0.20.2")),
    ("spec.tls.caRef", mod(transport="tls", route=["sips:127.0.20.1;lr"], registrar="sips:127.0.20.2", tls={})),
    ("spec.tls.caRef.name", mod(transport="tls", route=["sips:127.0.20.1;lr"], registrar="sips:127.0.20.2",
                                tls={"caRef": {"name": "Bad_Name"}})),
    ("spec.tls.caRef.kind", mod(transport="tls", route=["sips:127.0.20.1;lr"], registrar="sips:127.0.20.2",
                                tls={"caRef": {"name": "ca", "kind": "Pod"}})),
    ("spec.tls.minVersion", mod(transport="tls", route=["sips:127.0.20.1;lr"], registrar="sips:127.0.20.2",
                                tls={"caRef": {"name": "ca"}, "minVersion": "SSLv3"})),
    ("spec.tls.clientCertificateSecretRef.secretName",
     mod(transport="tls", route=["sips:127.0.20.1;lr"], registrar="sips:127.0.20.2",
         tls={"caRef": {"name": "ca"}, "clientCertificateSecretRef": {"secretName": "Bad_Name"}})),
    # routes are loose-routing, as the README promises
    ("spec.route", mod(route=["sip:127.0.20.1:5060"])),
    ("spec.route", mod(route=["sip:127.0.20.1:5060;lr", "sip:127.0.20.9;lrx"])),
]


@pytest.fixture
def custom(k8s, sipaccount_crd):
    return client.CustomObjectsApi(k8s)


def _create(custom, ns: str, name: str, spec: dict):
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SipAccount", "metadata": {"name": name}, "spec": spec}
    return custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)


def test_at_least_thirty_invalid_cases():
    assert len(INVALID) >= 30
    assert len({json.dumps(s, sort_keys=True) for _, s in INVALID}) == len(INVALID)


def test_valid_control_object_is_accepted(custom, op_namespace):
    created = _create(custom, op_namespace, "valid", BASE)
    assert created["spec"]["routeMode"] == "prevent"  # defaults filled in by the apiserver
    assert created["spec"]["registration"]["expiresSeconds"] == 300
    tls = copy.deepcopy(BASE) | {"transport": "tls", "route": ["sip:127.0.20.1:5061;lr;transport=tls"],
                                 "tls": {"caRef": {"name": "lab-ca"}}}
    created = _create(custom, op_namespace, "valid-tls", tls)
    assert created["spec"]["tls"] == {"caRef": {"kind": "ConfigMap", "name": "lab-ca", "key": "ca.crt"},
                                      "verifyServer": True, "minVersion": "TLSv1.2"}


@pytest.mark.parametrize("field,spec", INVALID, ids=[f"{i:02d}-{f}" for i, (f, _) in enumerate(INVALID)])
def test_invalid_spec_is_rejected_naming_the_field(custom, op_namespace, field, spec):
    with pytest.raises(ApiException) as info:
        _create(custom, op_namespace, "bad", spec)
    assert info.value.status == 422, info.value.body
    message = json.loads(info.value.body)["message"]
    assert f"{field}:" in message or f"{field} " in message, message
