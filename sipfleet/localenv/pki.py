"""Throwaway PKI for the local control plane, generated with ``cryptography``.

One CA signs: the kube-apiserver serving certificate (localhost, 127.0.0.1, the service IP 10.0.0.1 and the
in-cluster names), and client certificates for the admin (O=system:masters), the controller-manager, the
scheduler and the node. A separate RSA key pair signs service-account tokens. Keys are EC P-256 (fast to make);
the service-account key is RSA 2048 (RS256, what every client expects).
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = _dt.timedelta(days=365)
SERVICE_IP = "10.0.0.1"
APISERVER_DNS = [
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
]
APISERVER_IPS = ["127.0.0.1", SERVICE_IP]

#: client certificates: file stem -> (CN, O list)
CLIENTS: dict[str, tuple[str, list[str]]] = {
    "admin": ("sipfleet-admin", ["system:masters"]),
    "controller-manager": ("system:kube-controller-manager", []),
    "scheduler": ("system:kube-scheduler", []),
    "node": ("system:node:sipfleet-node-0", ["system:nodes"]),
}


@dataclass(frozen=True)
class Pki:
    dir: Path

    @property
    def ca_crt(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def serving_crt(self) -> Path:
        return self.dir / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.dir / "apiserver.key"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"

    def client_crt(self, who: str) -> Path:
        return self.dir / f"{who}.crt"

    def client_key(self, who: str) -> Path:
        return self.dir / f"{who}.key"

    def complete(self) -> bool:
        files = [self.ca_crt, self.ca_key, self.serving_crt, self.serving_key, self.sa_key, self.sa_pub]
        files += [self.client_crt(w) for w in CLIENTS] + [self.client_key(w) for w in CLIENTS]
        return all(p.is_file() for p in files)


def _ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes, private: bool = False) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _name(cn: str, orgs: list[str] | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs or []]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def make_ca(cn: str = "sipfleet-local-ca"):
    key = _ec_key()
    now = _dt.datetime.now(_dt.timezone.utc)
    name = _name(cn)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue(
    ca_cert, ca_key, cn: str, orgs: list[str] | None = None, *, server: bool = False,
    dns: list[str] | None = None, ips: list[str] | None = None,
):
    """Issue a leaf certificate signed by the CA; returns (cert, key)."""
    key = _ec_key()
    now = _dt.datetime.now(_dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn, orgs))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if server:
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns or []]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips or []]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def ensure(pki_dir: Path) -> Pki:
    """Create the PKI in ``pki_dir`` unless it is already complete; returns the paths."""
    pki = Pki(Path(pki_dir))
    if pki.complete():
        return pki
    pki.dir.mkdir(parents=True, exist_ok=True)
    os.chmod(pki.dir, 0o700)
    ca_cert, ca_key = make_ca()
    _write(pki.ca_crt, ca_cert.public_bytes(serialization.Encoding.PEM))
    _write(pki.ca_key, _key_pem(ca_key), private=True)

    cert, key = issue(ca_cert, ca_key, "kube-apiserver", server=True, dns=APISERVER_DNS, ips=APISERVER_IPS)
    _write(pki.serving_crt, cert.public_bytes(serialization.Encoding.PEM))
    _write(pki.serving_key, _key_pem(key), private=True)

    for who, (cn, orgs) in CLIENTS.items():
        cert, key = issue(ca_cert, ca_key, cn, orgs)
        _write(pki.client_crt(who), cert.public_bytes(serialization.Encoding.PEM))
        _write(pki.client_key(who), _key_pem(key), private=True)

    sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write(pki.sa_key, _key_pem(sa), private=True)
    _write(
        pki.sa_pub,
        sa.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
    )
    return pki


def kubeconfig(server: str, ca_crt: Path, client_crt: Path, client_key: Path, user: str, cluster: str) -> dict:
    """A kubeconfig document (dict) with file references to the certificates."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {"server": server, "certificate-authority": str(ca_crt)}}],
        "users": [{"name": user, "user": {"client-certificate": str(client_crt), "client-key": str(client_key)}}],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": user}}],
        "current-context": cluster,
        "preferences": {},
    }
