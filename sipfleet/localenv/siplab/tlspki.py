"""The lab's TLS material: its own CA, a certificate per lab host, and the deliberately bad ones.

Made with ``cryptography`` (:func:`sipfleet.localenv.pki.make_ca` / :func:`~sipfleet.localenv.pki.issue`, EC P-256,
SHA-256) under ``<state>/tls/``, kept across ``up``/``down`` (a client may cache the CA); the host certificates
are issued again when the lab's addresses change (another slot). Names are DNS-free: each host certificate
names the host's IP address and a name under the lab domain that no resolver knows, for clients that verify
with an explicit server name (``p.lab.sipfleet.test`` ... ``s.lab.sipfleet.test``; R's also names the domain
itself, the registrar's identity for ``sip:user@lab.sipfleet.test``).

Files (``<x>.crt`` + ``<x>.key``, keys mode 0600):

- ``ca`` - the lab CA (trust it: ``lab.ca_pem()``); ``wrong-ca`` - a second CA nothing of the lab trusts
  (``lab.wrong_ca_pem()``);
- ``P``, ``R``, ``E``, ``S`` - each host's server certificate (lab CA, its IP and name);
- ``wrong-name`` - lab CA, but naming only ``wrong.lab.sipfleet.test`` (P serves it on its name-mismatch port);
- ``wrong-ca-P`` - names P correctly but is signed by the wrong CA (P serves it on its wrong-CA port);
- ``client`` - a client certificate from the lab CA (CN ``sipfleet-lab-client``), for optional client auth.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .. import pki
from .model import LabError, sip_host_name

if TYPE_CHECKING:
    from .state import LabState

TLS_DIR = "tls"
CA_CN = "sipfleet lab CA"
WRONG_CA_CN = "sipfleet lab WRONG CA (trusted by nobody)"
WRONG_NAME = "wrong"  # wrong.<domain>
CLIENT_CN = "sipfleet-lab-client"


def host_name(host: str, domain: str) -> str:
    """The DNS-free name a host's certificate carries (``p.lab.sipfleet.test``)."""
    return f"{host.lower()}.{domain}"


def host_sans(host: str, ip: str, domain: str) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) of a host's certificate (pure)."""
    dns = [host_name(host, domain)] + ([domain] if host == "R" else [])
    return dns, [ip]


@dataclass(frozen=True)
class LabTls:
    """Paths of the lab's TLS files."""

    dir: Path

    def crt(self, who: str) -> Path:
        return self.dir / f"{who}.crt"

    def key(self, who: str) -> Path:
        return self.dir / f"{who}.key"

    @property
    def ca_crt(self) -> Path:
        return self.crt("ca")

    @property
    def wrong_ca_crt(self) -> Path:
        return self.crt("wrong-ca")

    @property
    def stamp(self) -> Path:
        return self.dir / "issued-for.txt"

    def complete(self, hosts: Iterable[str]) -> bool:
        names = ["ca", "wrong-ca", "wrong-name", "wrong-ca-P", "client", *hosts]
        return all(self.crt(n).is_file() and self.key(n).is_file() for n in names)


def _write(path: Path, data: bytes, private: bool) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _save(tls: LabTls, who: str, cert, key) -> None:
    _write(tls.crt(who), cert.public_bytes(serialization.Encoding.PEM), False)
    _write(tls.key(who), key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()), True)


def _load_or_make_ca(tls: LabTls, who: str, cn: str):
    if tls.crt(who).is_file() and tls.key(who).is_file():
        cert = x509.load_pem_x509_certificate(tls.crt(who).read_bytes())
        key = serialization.load_pem_private_key(tls.key(who).read_bytes(), password=None)
        return (cert, key), False
    cert, key = pki.make_ca(cn)
    _save(tls, who, cert, key)
    return (cert, key), True


def stamp_text(host_ips: dict[str, str], domain: str) -> str:
    return " ".join(f"{h}={ip}" for h, ip in sorted(host_ips.items())) + f" domain={domain}"


def ensure(tls_dir: Path, host_ips: dict[str, str], domain: str) -> LabTls:
    """Create the lab's CAs and certificates in ``tls_dir`` unless complete for these addresses."""
    tls = LabTls(Path(tls_dir))
    stamp = stamp_text(host_ips, domain)
    if tls.complete(host_ips) and tls.stamp.is_file() and tls.stamp.read_text().strip() == stamp:
        return tls
    tls.dir.mkdir(parents=True, exist_ok=True)
    os.chmod(tls.dir, 0o700)
    (ca, ca_key), new_ca = _load_or_make_ca(tls, "ca", CA_CN)
    (wca, wca_key), _ = _load_or_make_ca(tls, "wrong-ca", WRONG_CA_CN)
    for who, (dns, ips) in {h: host_sans(h, ip, domain) for h, ip in host_ips.items()}.items():
        _save(tls, who, *pki.issue(ca, ca_key, dns[0], server=True, dns=dns, ips=ips))
    # right CA, wrong name (neither P's name nor any address of the lab)
    wrong = f"{WRONG_NAME}.{domain}"
    _save(tls, "wrong-name", *pki.issue(ca, ca_key, wrong, server=True, dns=[wrong]))
    # right name, wrong CA
    if "P" in host_ips:
        dns, ips = host_sans("P", host_ips["P"], domain)
        _save(tls, "wrong-ca-P", *pki.issue(wca, wca_key, dns[0], server=True, dns=dns, ips=ips))
    if new_ca or not (tls.crt("client").is_file() and tls.key("client").is_file()):
        _save(tls, "client", *pki.issue(ca, ca_key, CLIENT_CN))
    tls.stamp.write_text(stamp + "\n")
    return tls


def cert_names(path: Path) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) in a certificate's subjectAltName."""
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    return san.get_values_for_type(x509.DNSName), [str(i) for i in san.get_values_for_type(x509.IPAddress)]


def kamailio_tls_cfg(node: str, ip: str, tls_port: int, tls: LabTls) -> str:
    """The tls module's config for one node (pure): TLS 1.2 or newer, the node's certificate, client
    certificates verified against the lab CA when presented (never required); P's extra listeners on
    ``tls_port + 1`` (wrong name) and ``tls_port + 2`` (wrong CA) serve the bad certificates."""
    def server(profile: str, who: str, verify: bool) -> str:
        return (f"[server:{profile}]\nmethod = TLSv1.2+\nverify_certificate = {'yes' if verify else 'no'}\n"
                f"require_certificate = no\nprivate_key = {tls.key(who)}\ncertificate = {tls.crt(who)}\n"
                + (f"ca_list = {tls.ca_crt}\n" if verify else "") + "\n")

    out = f"# sipfleet lab node {node}: rendered by sipfleet.localenv.siplab.tlspki\n\n"
    out += server("default", node, True)
    if node == "P":
        out += server(f"{ip}:{tls_port + 1}", "wrong-name", False)
        out += server(f"{ip}:{tls_port + 2}", "wrong-ca-P", False)
    out += "[client:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\n"
    return out


class LabTlsFiles:
    """The lab's TLS material as :class:`SipLab` methods (a mixin; needs ``state`` and ``domain``)."""

    state: "LabState"
    domain: str

    @property
    def tls(self) -> LabTls:
        """Paths of the lab's CA, certificates and keys (made at ``up``)."""
        return LabTls(self.state.path(TLS_DIR))

    def _pem(self, path: Path) -> str:
        if not path.is_file():
            raise LabError(f"{path} does not exist (the lab makes its TLS files at up)")
        return path.read_text()

    def ca_pem(self) -> str:
        """The lab CA's certificate (PEM): what a client trusts to verify P, R, E and S."""
        return self._pem(self.tls.ca_crt)

    def wrong_ca_pem(self) -> str:
        """A CA certificate (PEM) that signed none of the lab's hosts: a client trusting only it must refuse them."""
        return self._pem(self.tls.wrong_ca_crt)

    def tls_name(self, host: str) -> str:
        """The DNS-free name in host ``host``'s certificate (e.g. ``p.lab.sipfleet.test``), for an explicit
        server name; the certificate also names the host's IP address."""
        return host_name(sip_host_name(host), self.domain)

    def client_cert(self) -> tuple[Path, Path]:
        """(certificate, key) of a client certificate from the lab CA (CN ``sipfleet-lab-client``)."""
        return self.tls.crt("client"), self.tls.key("client")
