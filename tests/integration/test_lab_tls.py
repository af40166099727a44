"""TLS in the lab for real: the lab's own CA and certificates, Kamailio's TLS listeners (P, R, E) and S's, a
REGISTER over TLS through P checked on the wire, refusals by verifying clients (Python's ssl and openssl
s_client, both OpenSSL 3) for the wrong CA and a name mismatch, and what the pjsua2 wheel (its bundled OpenSSL
1.0.2k) negotiates with Kamailio.

SIPp from Debian (3.6.1) is built without TLS (no ``-t l1``), so the TLS clients here are Python's ``ssl``,
``openssl s_client`` and pjsua2.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess

import pytest
from cryptography import x509

from sipfleet.localenv.siplab import tlspki
from sipfleet.localenv.siplab.pjsua_tls_check import run_check
from sipfleet.localenv.siplab.sipclient import SipClient

pytestmark = pytest.mark.lab


@pytest.fixture
def tls_lab(clean_lab):
    assert clean_lab.tls_enabled, "Kamailio's tls module is missing: run ./scripts/setup (kamailio-tls-modules)"
    return clean_lab


@pytest.fixture
def me(tls_lab):
    ip = tls_lab.client_address()
    yield ip
    tls_lab.release_client_address(ip)


def _ctx(ca_file, client_cert=None):
    ctx = ssl.create_default_context(cafile=str(ca_file))
    if client_cert:
        ctx.load_cert_chain(*map(str, client_cert))
    return ctx


def _s_client(lab, node_port: str, ca, *verify: str) -> subprocess.CompletedProcess:
    exe = shutil.which("openssl")
    assert exe, "openssl not installed"
    return subprocess.run([exe, "s_client", "-connect", node_port, "-CAfile", str(ca), "-verify_return_error",
                           "-brief", *verify], input="", capture_output=True, text=True, timeout=30)


def test_the_lab_makes_its_ca_and_names_every_host(tls_lab):
    lab = tls_lab
    ca = x509.load_pem_x509_certificate(lab.ca_pem().encode())
    wrong = x509.load_pem_x509_certificate(lab.wrong_ca_pem().encode())
    assert ca.subject != wrong.subject
    for h in "PRES":
        dns, ips = tlspki.cert_names(lab.tls.crt(h))
        assert ips == [lab.ip(h)] and dns[0] == lab.tls_name(h) == f"{h.lower()}.{lab.domain}"
        cert = x509.load_pem_x509_certificate(lab.tls.crt(h).read_bytes())
        cert.verify_directly_issued_by(ca)
        assert (lab.tls.key(h).stat().st_mode & 0o777) == 0o600
    assert lab.domain in tlspki.cert_names(lab.tls.crt("R"))[0]
    bad_name = x509.load_pem_x509_certificate(lab.tls.crt("wrong-name").read_bytes())
    bad_name.verify_directly_issued_by(ca)
    assert tlspki.cert_names(lab.tls.crt("wrong-name")) == ([f"wrong.{lab.domain}"], [])
    x509.load_pem_x509_certificate(lab.tls.crt("wrong-ca-P").read_bytes()).verify_directly_issued_by(wrong)
    st = lab.status()["tls"]
    assert st["proxy_uri"] == lab.proxy_uri("tls") == f"sip:{lab.ip('P')}:5061;lr;transport=tls"
    assert st["bad_proxy_uris"] == {"wrong-name": f"sip:{lab.ip('P')}:5062;lr;transport=tls",
                                    "wrong-ca": f"sip:{lab.ip('P')}:5063;lr;transport=tls"}


@pytest.mark.parametrize("by", ["name", "ip"])
def test_register_over_tls_through_p_verified_and_on_the_wire(tls_lab, lab_user, me, by):
    lab = tls_lab
    user, password = lab_user("tls-")
    name = lab.tls_name("P") if by == "name" else lab.ip("P")
    with SipClient(me, (lab.ip("P"), lab.tls_port), "tls", ssl_context=_ctx(lab.tls.ca_crt), server_hostname=name) as c:
        version, cipher = c.tls_info()
        out = c.register(lab.registrar_uri(), user=user, domain=lab.domain, password=password,
                         route=f"<{lab.proxy_uri('tls')}>")
    assert [r.status for _, r in out] == [401, 200]
    assert out[1][1].all("service-route") == [f"<{lab.edge_uri('tls')}>"]  # E over TLS for a TLS client
    assert lab.service_route("tls") == lab.edge_uri("tls")
    call_id = out[0][0].call_id
    lab.wait_wire(lambda x: x.call_id == call_id and x.cseq == out[1][0].cseq, node="R", timeout=10)
    p = lab.wire(node="P", call_id=call_id)
    r = lab.wire(node="R", call_id=call_id)
    assert [x.transport for x in p] == ["tls", "tls"] and [x.transport for x in r] == ["udp", "udp"]
    assert {(x.tls_version, x.tls_cipher) for x in p} == {(version, cipher)} and version in ("TLSv1.2", "TLSv1.3")
    assert p[0].route == [lab.proxy_uri("tls")] and p[0].tls_peer == "" and r[0].tls_version == ""
    assert any(c.endswith(";transport=tls") for c in lab.contacts(user))


def test_client_certificate_is_verified_and_shown_on_the_wire(tls_lab, me):
    lab = tls_lab
    lab.scripted.script("200")
    for node, port in (("P", lab.tls_port), ("S", lab.tls_port)):
        with SipClient(me, (lab.ip(node), port), "tls", ssl_context=_ctx(lab.tls.ca_crt, lab.client_cert()),
                       server_hostname=lab.tls_name(node)) as c:
            [(req, resp)] = c.register(lab.scripted.uri(), user="alice", domain=lab.domain,
                                       route=f"<{lab.proxy_uri('tls')}>" if node == "P" else None)
        assert resp is not None and resp.status == 200
        rec = lab.wait_wire(lambda x: x.call_id == req.call_id, node=node, timeout=10)
        assert rec.transport == "tls" and rec.tls_peer == tlspki.CLIENT_CN


def test_registrar_and_s_serve_tls_directly(tls_lab, lab_user, me):
    lab = tls_lab
    user, password = lab_user("tlsr-")
    with SipClient(me, (lab.ip("R"), lab.tls_port), "tls", ssl_context=_ctx(lab.tls.ca_crt),
                   server_hostname=lab.domain) as c:  # R's certificate names the registrar's domain too
        out = c.register(lab.registrar_uri("tls"), user=user, domain=lab.domain, password=password)
    assert [r.status for _, r in out] == [401, 200]
    lab.wait_wire(lambda x: x.call_id == out[1][0].call_id and x.cseq == out[1][0].cseq, node="R", timeout=10)
    assert [x.transport for x in lab.wire(node="R", call_id=out[0][0].call_id)] == ["tls", "tls"]
    lab.scripted.script("503 retry-after=30", "200 sr=10")
    with SipClient(me, (lab.ip("S"), lab.tls_port), "tls", ssl_context=_ctx(lab.tls.ca_crt),
                   server_hostname=lab.ip("S")) as c:
        a = c.register(lab.scripted.uri("tls"), user=user, domain=lab.domain)
        b = c.register(lab.scripted.uri("tls"), user=user, domain=lab.domain)
    assert a[0][1].status == 503 and a[0][1].get("retry-after") == "30"
    assert b[0][1].status == 200 and len(b[0][1].all("service-route")) == 10
    recs = [lab.wait_wire(lambda x: x.call_id == b[0][0].call_id, node="S", timeout=10)]
    assert recs[0].transport == "tls" and recs[0].tls_version and recs[0].tls_cipher and recs[0].answer == "200"


@pytest.mark.parametrize("case", ["wrong-ca-trusted", "wrong-ca-served", "wrong-name-served", "other-host-name"])
def test_verifying_clients_refuse_the_wrong_ca_and_a_name_mismatch(tls_lab, me, case):
    lab = tls_lab
    ca, cert, name, why = {
        "wrong-ca-trusted": (lab.tls.wrong_ca_crt, "good", lab.tls_name("P"), "certificate verify failed"),
        "wrong-ca-served": (lab.tls.ca_crt, "wrong-ca", lab.tls_name("P"), "unable to get local issuer"),
        "wrong-name-served": (lab.tls.ca_crt, "wrong-name", lab.tls_name("P"), "Hostname mismatch"),
        "other-host-name": (lab.tls.ca_crt, "good", lab.tls_name("R"), "Hostname mismatch"),
    }[case]
    host, port = lab.tls_hostport("P", cert).split(":")
    with pytest.raises(ssl.SSLCertVerificationError) as e:
        SipClient(me, (host, int(port)), "tls", ssl_context=_ctx(ca), server_hostname=name).connect()
    assert why.lower() in str(e.value).lower(), e.value
    # openssl s_client says the same (and verifies the IP address too)
    res = _s_client(lab, f"{host}:{port}", ca, "-verify_hostname", name)
    assert res.returncode != 0 and "verify error" in res.stderr, res.stderr
    if cert == "wrong-name":
        res = _s_client(lab, f"{host}:{port}", ca, "-verify_ip", host)
        assert res.returncode != 0 and "IP address mismatch" in res.stderr, res.stderr
    # the same listener with the right trust and name is accepted (only the certificate is wrong)
    good = _s_client(lab, f"{host}:{port}", lab.tls.ca_crt if cert != "wrong-ca" else lab.tls.wrong_ca_crt,
                     "-verify_ip", host) if cert != "wrong-name" else None
    assert good is None or (good.returncode == 0 and "Verification: OK" in good.stderr), good and good.stderr


def test_s_client_verifies_every_host_by_ip_and_name(tls_lab):
    lab = tls_lab
    for h in "PRES":
        res = _s_client(lab, lab.tls_hostport(h), lab.tls.ca_crt, "-verify_ip", lab.ip(h), "-servername",
                        lab.tls_name(h))
        assert res.returncode == 0 and "Verification: OK" in res.stderr, (h, res.stderr)
        res = _s_client(lab, lab.tls_hostport(h), lab.tls.ca_crt, "-verify_hostname", lab.tls_name(h))
        assert res.returncode == 0 and "Verification: OK" in res.stderr, (h, res.stderr)


def test_what_pjsua2_negotiates_with_kamailio_tls(tls_lab):
    lab = tls_lab
    res = run_check(lab)
    assert res["registered"], res["reg"]
    [est] = [s for s in res["transport_states"] if s.get("established")]
    assert est["verify_msgs"] == ["OK"] and est["remote"] == lab.tls_hostport("P")
    assert res["wire"] and {w["transport"] for w in res["wire"]} == {"tls"}
    versions = {(w["tls_version"], w["tls_cipher"]) for w in res["wire"]}
    # the wheel's OpenSSL 1.0.2k has no TLS 1.3: Kamailio (OpenSSL 3, TLSv1.2+) settles on TLS 1.2
    assert versions == {("TLSv1.2", est["cipher_name"])}, (versions, est)
    assert "TLSv1.3" not in est["protocols_enabled"]


@pytest.mark.parametrize("cert,trust,msg", [
    ("good", "wrong", "untrusted"),
    ("wrong-ca", "lab", "untrusted"),
    ("wrong-name", "lab", "identity does not match"),
])
def test_pjsua2_refuses_the_bad_certificates(tls_lab, cert, trust, msg):
    res = run_check(tls_lab, cert=cert, trust=trust, timeout=10)
    assert not res["registered"] and res["reg"] and res["reg"][-1]["code"] == 503, res["reg"]
    assert "PJSIP_TLS_ECERTVERIF" in res["reg"][-1]["reason"]
    assert any(msg in " ".join(s.get("verify_msgs", [])) for s in res["transport_states"]), res["transport_states"]
    assert not [w for w in res["wire"] if w["method"] == "REGISTER"]  # nothing reached P's SIP layer
