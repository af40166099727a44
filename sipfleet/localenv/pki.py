"""Throwaway PKI for the local control plane, generated with ``cryptography``.

One CA signs: the kube-apiserver serving certificate (the node IP, the ``kubernetes`` Service IP, localhost and the
in-cluster names), the kubelet's serving certificate (the node IP and name: the apiserver verifies it for logs
and exec), and client certificates for the admin (O=system:masters), the controller-manager, the scheduler, the
node (the Node authorizer's ``system:node:<name>``), kube-proxy (``system:kube-proxy``, bound to
``system:node-proxier`` by the apiserver's own bootstrap RBAC) and the apiserver's client towards the kubelet. A
separate RSA key pair signs service-account tokens. Keys are EC P-256 (fast to make); the service-account key is
RSA 2048 (RS256, what every client expects). The serving certificates are issued again when the addresses they
must name change (a cluster that got another slot of the address plan); the CA and keys of clients stay.
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
NODE_NAME = "sipfleet-node-0"
APISERVER_DNS = [
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
]

#: client certificates: file stem -> (CN, O list)
CLIENTS: dict[str, tuple[str, list[str]]] = {
    "admin": ("sipfleet-admin", ["system:masters"]),
    "controller-manager": ("system:kube-controller-manager", []),
    "scheduler": ("system:kube-scheduler", []),
    "node": (f"system:node:{NODE_NAME}", ["system:nodes"]),
    "kube-proxy": ("system:kube-proxy", []),
    "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", ["system:masters"]),
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
    def kubelet_crt(self) -> Path:
        return self.dir / "kubelet.crt"

    @property
    def kubelet_key(self) -> Path:
        return self.dir / "kubelet.key"

    @property
    def sans_file(self) -> Path:
        return self.dir / "serving-sans.txt"

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
        files = [self.ca_crt, self.ca_key, self.serving_crt, self.serving_key, self.kubelet_crt, self.kubelet_key,
                 self.sa_key, self.sa_pub]
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


def _load(crt: Path, key: Path):
    cert = x509.load_pem_x509_certificate(crt.read_bytes())
    return cert, serialization.load_pem_private_key(key.read_bytes(), password=None)


def ensure(pki_dir: Path, *, node_ip: str, service_ip: str) -> Pki:
    """Create the PKI in ``pki_dir`` unless it is complete for these addresses; returns the paths. The CA, client
    certificates and service-account keys are kept; only the serving certificates follow ``node_ip`` (the
    apiserver and the kubelet listen there) and ``service_ip`` (the ``kubernetes`` Service)."""
    pki = Pki(Path(pki_dir))
    sans = f"{node_ip} {service_ip}"
    if pki.complete() and pki.sans_file.is_file() and pki.sans_file.read_text().strip() == sans:
        return pki
    pki.dir.mkdir(parents=True, exist_ok=True)
    os.chmod(pki.dir, 0o700)
    if pki.ca_crt.is_file() and pki.ca_key.is_file():
        ca_cert, ca_key = _load(pki.ca_crt, pki.ca_key)
    else:
        ca_cert, ca_key = make_ca()
        _write(pki.ca_crt, ca_cert.public_bytes(serialization.Encoding.PEM))
        _write(pki.ca_key, _key_pem(ca_key), private=True)
        for f in pki.dir.glob("*.crt"):  # anything signed by another CA is worthless now
            if f != pki.ca_crt:
                f.unlink()

    cert, key = issue(ca_cert, ca_key, "kube-apiserver", server=True, dns=APISERVER_DNS,
                      ips=[node_ip, service_ip, "127.0.0.1"])
    _write(pki.serving_crt, cert.public_bytes(serialization.Encoding.PEM))
    _write(pki.serving_key, _key_pem(key), private=True)
    cert, key = issue(ca_cert, ca_key, NODE_NAME, server=True, dns=[NODE_NAME], ips=[node_ip])
    _write(pki.kubelet_crt, cert.public_bytes(serialization.Encoding.PEM))
    _write(pki.kubelet_key, _key_pem(key), private=True)

    for who, (cn, orgs) in CLIENTS.items():
        if pki.client_crt(who).is_file() and pki.client_key(who).is_file():
            continue
        cert, key = issue(ca_cert, ca_key, cn, orgs)
        _write(pki.client_crt(who), cert.public_bytes(serialization.Encoding.PEM))
        _write(pki.client_key(who), _key_pem(key), private=True)

    if not (pki.sa_key.is_file() and pki.sa_pub.is_file()):
        sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write(pki.sa_key, _key_pem(sa), private=True)
        _write(
            pki.sa_pub,
            sa.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        )
    pki.sans_file.write_text(sans + "\n")
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
