"""The local cluster's throwaway PKI: who each certificate says it is, and that the CA really signed it."""

from __future__ import annotations

import ipaddress

import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sipfleet.localenv import pki

ADDR = {"node_ip": "10.213.7.1", "service_ip": "10.214.7.1"}


def _load(path):
    return x509.load_pem_x509_certificate(path.read_bytes())


def _names(cert, oid):
    return [a.value for a in cert.subject.get_attributes_for_oid(oid)]


def test_pki_is_complete_signed_and_idempotent(tmp_path):
    p = pki.ensure(tmp_path / "pki", **ADDR)
    assert p.complete()
    ca = _load(p.ca_crt)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca

    serving = _load(p.serving_crt)
    serving.verify_directly_issued_by(ca)
    san = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert "kubernetes.default.svc" in san.get_values_for_type(x509.DNSName)
    ips = san.get_values_for_type(x509.IPAddress)
    assert {ipaddress.ip_address(a) for a in ("127.0.0.1", "10.213.7.1", "10.214.7.1")} <= set(ips)
    eku = serving.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku

    expected = {
        "admin": (None, ["system:masters"]),
        "controller-manager": ("system:kube-controller-manager", []),
        "scheduler": ("system:kube-scheduler", []),
        "node": ("system:node:sipfleet-node-0", ["system:nodes"]),
        "kube-proxy": ("system:kube-proxy", []),
        "apiserver-kubelet-client": (None, ["system:masters"]),
    }
    for who, (cn, orgs) in expected.items():
        cert = _load(p.client_crt(who))
        cert.verify_directly_issued_by(ca)
        if cn:
            assert _names(cert, NameOID.COMMON_NAME) == [cn]
        assert _names(cert, NameOID.ORGANIZATION_NAME) == orgs
        assert ExtendedKeyUsageOID.CLIENT_AUTH in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert (p.client_key(who).stat().st_mode & 0o077) == 0  # private keys are private

    from cryptography.hazmat.primitives import serialization

    sa = serialization.load_pem_private_key(p.sa_key.read_bytes(), None)
    assert isinstance(sa, rsa.RSAPrivateKey)
    assert serialization.load_pem_public_key(p.sa_pub.read_bytes()).public_numbers() == sa.public_key().public_numbers()
    key = serialization.load_pem_private_key(p.client_key("admin").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)

    before = p.ca_crt.read_bytes()
    pki.ensure(tmp_path / "pki", **ADDR)  # complete: nothing regenerated
    assert p.ca_crt.read_bytes() == before


def test_kubelet_serving_certificate_names_the_node(tmp_path):
    p = pki.ensure(tmp_path / "pki", **ADDR)
    cert = _load(p.kubelet_crt)
    cert.verify_directly_issued_by(_load(p.ca_crt))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.213.7.1")]
    assert san.get_values_for_type(x509.DNSName) == ["sipfleet-node-0"]


def test_a_missing_piece_is_issued_again_under_the_same_ca(tmp_path):
    p = pki.ensure(tmp_path / "pki", **ADDR)
    old_ca, old_admin = p.ca_crt.read_bytes(), p.client_crt("admin").read_bytes()
    p.client_key("node").unlink()
    assert not p.complete()
    pki.ensure(tmp_path / "pki", **ADDR)
    assert p.complete()
    assert p.ca_crt.read_bytes() == old_ca and p.client_crt("admin").read_bytes() == old_admin
    _load(p.client_crt("node")).verify_directly_issued_by(_load(p.ca_crt))


def test_serving_certificates_follow_the_addresses(tmp_path):
    p = pki.ensure(tmp_path / "pki", **ADDR)
    old_ca, old_admin = p.ca_crt.read_bytes(), p.client_crt("admin").read_bytes()
    pki.ensure(tmp_path / "pki", node_ip="10.213.9.1", service_ip="10.214.9.1")
    san = _load(p.serving_crt).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("10.213.9.1") in san.get_values_for_type(x509.IPAddress)
    assert ipaddress.ip_address("10.213.7.1") not in san.get_values_for_type(x509.IPAddress)
    assert p.ca_crt.read_bytes() == old_ca and p.client_crt("admin").read_bytes() == old_admin


def test_a_lost_ca_key_makes_everything_new(tmp_path):
    p = pki.ensure(tmp_path / "pki", **ADDR)
    old_admin = p.client_crt("admin").read_bytes()
    p.ca_key.unlink()
    pki.ensure(tmp_path / "pki", **ADDR)
    assert p.client_crt("admin").read_bytes() != old_admin
    _load(p.client_crt("admin")).verify_directly_issued_by(_load(p.ca_crt))


def test_kubeconfig_document(tmp_path):
    p = pki.ensure(tmp_path / "pki", **ADDR)
    doc = pki.kubeconfig("https://127.0.0.1:1234", p.ca_crt, p.client_crt("admin"), p.client_key("admin"),
                         "admin", "sipfleet-x")
    text = yaml.safe_dump(doc)
    back = yaml.safe_load(text)
    assert back["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:1234"
    assert back["current-context"] == "sipfleet-x"
    assert back["users"][0]["user"]["client-key"] == str(p.client_key("admin"))
