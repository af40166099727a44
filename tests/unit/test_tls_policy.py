"""The account-side TLS policy, pure parts: spec.tls validation (models and the CRD's CEL rules), the worker key
(accounts with different TLS settings never share a pjsua2 worker), what the operator hands the agent (refs, never
material) and the Role rules for them, the agent's material checks, the wire form (the key never in a repr), and
how pjsua2's TLS reports become status.tls and failure reasons."""

from __future__ import annotations

import base64
import types

import pytest
from pydantic import ValidationError

from sipfleet.api import crd
from sipfleet.api import models as m
from sipfleet.api.reasons import TLS_HANDSHAKE_FAILED, TLS_VERIFY_FAILED
from sipfleet_agent import protocol as proto
from sipfleet_agent.config import ConfigError, ResolvedAccount, Secretish
from sipfleet_agent.k8s.tlsrefs import TlsResolver
from sipfleet_agent.supervisor.messages import wire
from sipfleet_agent.supervisor.plan import plan_workers
from sipfleet_agent.tlsmaterial import TlsError, checked, file_material, proto_mask
from sipfleet_agent.worker import tlsstate
from sipfleet_operator import builders as b
from sipfleet_operator import placement as p
from sipfleet_operator import stored

CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nsecret-key-bytes\n-----END PRIVATE KEY-----\n"
TLS_ROUTE = ["sip:10.0.0.1:5061;lr;transport=tls"]


def spec(**kw) -> m.SipAccountSpec:
    base = dict(aor="sip:a@example.com", registrar="sip:10.0.0.2", route=TLS_ROUTE, transport="tls",
                credentials={"secretName": "creds"}, tls={"caRef": {"name": "ca"}})
    base.update(kw)
    return m.SipAccountSpec.model_validate(base)


@pytest.mark.parametrize("kw,field", [
    (dict(tls=None), "transport tls needs tls"),
    (dict(transport="udp", route=["sip:10.0.0.1;lr"]), "tls applies only to transport tls"),
    (dict(tls={}), "caRef is required"),
    (dict(tls={"verifyServer": True}), "caRef is required"),
    (dict(tls={"caRef": {"name": "Bad_Name"}}), "caRef.name"),
    (dict(tls={"caRef": {"name": "ca", "kind": "Pod"}}), "caRef.kind"),
    (dict(tls={"caRef": {"name": "ca", "key": "bad key"}}), "caRef.key"),
    (dict(tls={"caRef": {"name": "ca"}, "minVersion": "SSLv3"}), "minVersion"),
    (dict(tls={"caRef": {"name": "ca"}, "clientCertificateSecretRef": {}}), "secretName"),
])
def test_spec_tls_refuses_nonsense_naming_the_field(kw, field):
    with pytest.raises(ValidationError) as e:
        spec(**kw)
    assert field in str(e.value), str(e.value)


def test_spec_tls_defaults():
    t = spec().tls
    assert t.verify_server is True and t.min_version == "TLSv1.2" and t.ca_ref.kind == "ConfigMap"
    assert t.ca_ref.key == "ca.crt" and t.client_certificate_secret_ref is None
    assert spec(tls={"verifyServer": False}).tls.ca_ref is None


def test_crd_carries_the_tls_rules_with_field_paths():
    schema = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rules = {r["fieldPath"]: r for r in schema["x-kubernetes-validations"] if r["fieldPath"] == ".tls"}
    assert rules and all("tls" in r["message"] for r in rules.values())
    by_msg = {r["message"]: r["rule"] for r in schema["x-kubernetes-validations"] if r["fieldPath"] == ".tls"}
    assert any("has(self.tls)" in rule and "!=" in rule for rule in by_msg.values())
    tls = schema["properties"]["tls"]
    assert "default" not in tls  # optional: no filled-in default (the apiserver would check it against the rules)
    assert tls["x-kubernetes-validations"][0]["fieldPath"] == ".caRef"
    assert tls["properties"]["verifyServer"]["default"] is True
    assert set(tls["properties"]["caRef"]["properties"]["kind"]["enum"]) == {"ConfigMap", "Secret"}


def test_different_tls_settings_never_share_a_worker():
    a = b.build_agent_account(hosted("a", spec()))
    c = b.build_agent_account(hosted("c", spec(tls={"caRef": {"name": "other-ca"}})))
    d = b.build_agent_account(hosted("d", spec(tls={"verifyServer": False})))
    same = b.build_agent_account(hosted("e", spec()))
    assert len({a.worker_key(), c.worker_key(), d.worker_key()}) == 3
    assert a.worker_key() == same.worker_key()
    assert a.worker_key()[:3] == ("tls", tuple(TLS_ROUTE), "prevent")
    assert m.workers_needed([a, c, d, same]) == 3
    # the operator counts with the same key it hands the agent, and reads it back from the ConfigMap alike
    assert p.worker_key(spec()) == a.worker_key()
    assert stored._shape(a.to_api()) == a.worker_key()
    # a udp account's key is what it always was
    udp = m.AgentAccount(name="u", aor="sip:u@example.com", registrar="sip:10.0.0.2", credentials={"secretName": "x"})
    assert udp.worker_key() == ("udp", (), "prevent")


def test_the_supervisor_plans_tls_material_into_its_own_workers():
    spec_a = b.build_agent_account(hosted("a", spec()))
    mat1 = checked(CA, "", "", verify=True, min_version="TLSv1.2", where="t")
    mat2 = checked(CA + CA, "", "", verify=True, min_version="TLSv1.2", where="t")  # the CA rotated
    r1 = ResolvedAccount(spec_a, Secretish("a", "pw"), tls=mat1)
    r2 = ResolvedAccount(spec_a.model_copy(update={"name": "b"}), Secretish("b", "pw"), tls=mat2)
    plan = plan_workers({}, {r1.key: r1.worker_key(), r2.key: r2.worker_key()})
    assert len(plan.workers) == 2 and r1.worker_key() != r2.worker_key()
    assert r1.worker_key()[:4] == spec_a.worker_key()[:4]


def hosted(name: str, s: m.SipAccountSpec) -> b.HostedAccount:
    return b.HostedAccount(name=name, namespace="ns1", uid=f"uid-{name}", generation=1, spec=s)


def test_operator_hands_refs_and_grants_get_on_exactly_them():
    s = spec(tls={"caRef": {"name": "ca-cm"}, "clientCertificateSecretRef": {"secretName": "client-tls"}})
    s2 = spec(tls={"caRef": {"name": "ca-secret", "kind": "Secret", "key": "bundle.pem"}})
    accounts = [hosted("a", s), hosted("b", s2)]
    agent = p.Agent(name="sipfleet-agent-x-0", key=p.GroupKey("ns1"), accounts=("a", "b"))
    acc = b.build_agent_account(accounts[0])
    assert acc.tls == m.AgentTls(ca_kind="ConfigMap", ca_name="ca-cm", ca_key="ca.crt", client_secret_name="client-tls")
    rules = b.build_role(agent, accounts)["rules"]
    secrets = next(r for r in rules if r["resources"] == ["secrets"])
    assert secrets["resourceNames"] == ["ca-secret", "client-tls", "creds"] and secrets["verbs"] == ["get"]
    cms = [r for r in rules if r["resources"] == ["configmaps"]]
    assert {"resourceNames": ["ca-cm"], "verbs": ["get"]}.items() <= cms[1].items()
    cm = b.build_configmap(agent, accounts)
    assert "BEGIN" not in cm["data"]["assignment.json"]


def test_material_checks_name_the_field_never_the_value():
    for args, why in [((CA, "", "", True), None), (("", "", "", True), "verifyServer needs CA"),
                      (("junk", "", "", True), "no PEM certificate"), ((CA, CA, "", True), "needs its key"),
                      ((CA, CA, "junk-key", True), "not a PEM private key"),
                      ((CA, CA, KEY.replace("PRIVATE", "ENCRYPTED PRIVATE"), True), "encrypted"),
                      (("", "", "", False), None)]:
        if why is None:
            checked(*args[:3], verify=args[3], min_version="TLSv1.2", where="w")
            continue
        with pytest.raises(TlsError) as e:
            checked(*args[:3], verify=args[3], min_version="TLSv1.2", where="account x: tls")
        assert why in str(e.value) and "secret-key-bytes" not in str(e.value)
        assert isinstance(e.value, ConfigError)
    mat = checked(CA, CA, KEY, verify=True, min_version="TLSv1.2", where="w")
    assert "secret-key-bytes" not in repr(mat)
    assert proto_mask("TLSv1.2") == 16 and proto_mask("TLSv1") == 4 | 8 | 16


def test_standalone_files(tmp_path):
    (tmp_path / "ca.pem").write_text(CA)
    acc = m.AgentAccount(name="a", aor="sip:a@example.com", registrar="sip:10.0.0.2", route=TLS_ROUTE,
                         transport="tls", credentials={"username": "a", "passwordFile": "pw"},
                         tls={"caFile": "ca.pem"})
    assert file_material(acc, tmp_path).ca_pem == CA
    missing = acc.model_copy(update={"tls": m.AgentTls(ca_file="nope.pem")})
    with pytest.raises(TlsError, match="tls.caFile: cannot read"):
        file_material(missing, tmp_path)
    with pytest.raises(ValidationError, match="certFile and keyFile go together"):
        m.AgentTls(ca_file="x", cert_file="c")


def test_wire_form_carries_the_material_but_no_repr_shows_the_key():
    acc = b.build_agent_account(hosted("a", spec()))
    mat = checked(CA, CA, KEY, verify=True, min_version="TLSv1.2", where="w")
    w = wire(ResolvedAccount(acc, Secretish("a", "pw"), tls=mat))
    assert "secret-key-bytes" not in repr(w) and "secret-key-bytes" not in proto.describe(proto.Apply(1, [w]))
    back = proto.decode(proto.encode(proto.Apply(1, [w])))
    assert back.accounts[0].tls == mat.to_wire()


class FakeCore:
    def __init__(self, cms=None, secrets=None):
        self.cms, self.secrets, self.reads = cms or {}, secrets or {}, 0

    def read_namespaced_config_map(self, name, ns, **_):
        self.reads += 1
        return types.SimpleNamespace(data=self.cms[name])

    def read_namespaced_secret(self, name, ns, **_):
        self.reads += 1
        return types.SimpleNamespace(data={k: base64.b64encode(v.encode()).decode() for k, v in self.secrets[name].items()})


def test_cluster_resolver_reads_configmap_and_tls_secret_once_per_pass():
    core = FakeCore(cms={"ca-cm": {"ca.crt": CA}}, secrets={"client-tls": {"tls.crt": CA, "tls.key": KEY},
                                                             "half": {"tls.crt": CA}})
    r = TlsResolver(core, "ns1")
    acc = b.build_agent_account(hosted("a", spec(tls={"caRef": {"name": "ca-cm"},
                                                      "clientCertificateSecretRef": {"secretName": "client-tls"}})))
    mat = r(acc)
    assert (mat.ca_pem, mat.cert_pem, mat.key_pem) == (CA, CA, KEY)
    r(acc)
    assert core.reads == 2  # one get per object and pass
    bad = acc.model_copy(update={"tls": acc.tls.model_copy(update={"client_secret_name": "half"})})
    with pytest.raises(TlsError, match="has no key 'tls.key'"):
        r(bad)
    wrong_key = acc.model_copy(update={"tls": acc.tls.model_copy(update={"ca_key": "bundle.pem"})})
    with pytest.raises(TlsError, match="ConfigMap ns1/ca-cm has no key 'bundle.pem'"):
        r(wrong_key)


def report(**kw) -> tlsstate.TlsReport:
    base = dict(state=tlsstate.CONNECTED, last_error=0, established=True, protocol_mask=16,
                cipher="ECDHE-ECDSA-AES256-GCM-SHA384", verify_status=0, verify_msgs=("OK",), remote="10.0.0.1:5061")
    base.update(kw)
    return tlsstate.TlsReport(**base)


def test_transport_states_become_status():
    import pjsua2 as pj

    assert (tlsstate.CONNECTED, tlsstate.DISCONNECTED) == (pj.PJSIP_TP_STATE_CONNECTED, pj.PJSIP_TP_STATE_DISCONNECTED)
    ok = tlsstate.status_of(report(), verify_server=True, library="OpenSSL 1.0.2k-fips", now="t")
    assert (ok.state, ok.protocol, ok.cipher, ok.verified) == ("Connected", "TLSv1.2", "ECDHE-ECDSA-AES256-GCM-SHA384", True)
    several = tlsstate.status_of(report(protocol_mask=4 | 8 | 16), verify_server=True, library=None, now="t")
    assert several.protocol is None and several.enabled_protocols == ["TLSv1", "TLSv1.1", "TLSv1.2"]
    bad = tlsstate.status_of(report(state=tlsstate.DISCONNECTED, last_error=171173, verify_status=1,
                                    verify_msgs=("The certificate is untrusted",)), verify_server=True, library=None, now="t")
    assert (bad.state, bad.verified, bad.verify_messages) == ("Failed", False, ["The certificate is untrusted"])
    unverified = tlsstate.status_of(report(verify_status=1), verify_server=False, library=None, now="t")
    assert (unverified.state, unverified.verified) == ("Connected", False)
    ended = tlsstate.status_of(report(state=tlsstate.DISCONNECTED, last_error=70014), verify_server=True, library=None,
                               now="t")
    assert ended.state == "Disconnected"
    half = tlsstate.status_of(report(state=tlsstate.DISCONNECTED, established=False, last_error=1), verify_server=True,
                              library=None, now="t")
    assert half.state == "Failed" and half.cipher is None


def test_failure_reasons():
    last = m.TlsStatus(state="Failed", verify_messages=["The certificate is untrusted"])
    f = tlsstate.failure("SSL certificate verification error (PJSIP_TLS_ECERTVERIF)", last)
    assert f == {"failure_reason": TLS_VERIFY_FAILED,
                 "reason": "SSL certificate verification error (PJSIP_TLS_ECERTVERIF): The certificate is untrusted"}
    assert tlsstate.failure("Connection closed (PJSIP_TLS_ESEND)", None)["failure_reason"] == TLS_HANDSHAKE_FAILED
    assert tlsstate.failure("Request Timeout", last) is None
    assert tlsstate.matches("10.0.0.1:5061", ("10.0.0.1", 5061)) and not tlsstate.matches("10.0.0.1:5062", ("10.0.0.1", 5061))
    assert tlsstate.matches("10.0.0.1:5061", None)


def test_a_tls_transport_lost_without_details():
    """pjsua2 fills TlsInfo only on connect and on a failed verification: a TLS transport that goes down
    otherwise is Disconnected when it was up, a failed handshake when it never came up."""
    lost = report(state=tlsstate.DISCONNECTED, last_error=495070, established=False, protocol_mask=0, cipher="",
                  verify_msgs=(), remote="", detailed=False)
    up = tlsstate.status_of(report(), verify_server=True, library="L", now="t0")
    down = tlsstate.after_loss(up, lost, library="L", now="t1")
    assert (down.state, down.cipher, down.protocol, down.at) == ("Disconnected", up.cipher, "TLSv1.2", "t1")
    never = tlsstate.after_loss(None, lost, library="L", now="t1")
    assert (never.state, never.verified) == ("Failed", False)
    assert tlsstate.after_loss(up, report(state=tlsstate.SHUTDOWN, detailed=False), library="L", now="t") is None
    f = tlsstate.failure("tlsv1 alert protocol version", never)
    assert f == {"failure_reason": TLS_HANDSHAKE_FAILED, "reason": "tlsv1 alert protocol version"}
    assert tlsstate.failure("Service Unavailable", never) is None
    assert tlsstate.failure("Connection refused", never) is None
