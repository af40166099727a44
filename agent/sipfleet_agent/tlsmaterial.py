"""An account's TLS material, resolved: the CA certificates (PEM, not secret), an optional client certificate and
its private key (secret: memory only, never in a ``repr``, a log line or a status), the verification policy.

Promise: :func:`file_material` (standalone files) and :func:`checked` (any source) return a :class:`TlsMaterial`
or raise :class:`~sipfleet_agent.config.ConfigError` naming the field and the reason, never a value; the PEM
checks are structural (markers), pjsip's OpenSSL parses the material when the worker creates its TLS transport.
:func:`proto_mask` turns ``minVersion`` into pjsip's protocol bits, and :func:`library_version` names the
OpenSSL the pjsua2 wheel carries (pure except for that one look-up).
"""

from __future__ import annotations

import ctypes
import dataclasses
import glob
import hashlib
import os
from pathlib import Path

from sipfleet.api.models import AgentAccount

from .config import ConfigError

#: pjsip's PJ_SSL_SOCK_PROTO_* bits
PROTO_BITS = {"TLSv1": 4, "TLSv1.1": 8, "TLSv1.2": 16, "TLSv1.3": 32}
#: the versions the pjsua2 wheel's OpenSSL 1.0.2k can speak (no TLS 1.3)
WHEEL_VERSIONS = ("TLSv1", "TLSv1.1", "TLSv1.2")
CERT_MARK = "-----BEGIN CERTIFICATE-----"
MAX_PEM_BYTES = 512 * 1024


class TlsError(ConfigError):
    """Unusable TLS material (the message names the field, never a value)."""


@dataclasses.dataclass(frozen=True)
class TlsMaterial:
    ca_pem: str
    cert_pem: str = ""
    key_pem: str = dataclasses.field(default="", repr=False)
    verify_server: bool = True
    min_version: str = "TLSv1.2"

    def fingerprint(self) -> str:
        """A digest that changes with any of it (a worker key part: new material, new TLS transport)."""
        h = hashlib.sha256()
        for part in (self.ca_pem, self.cert_pem, self.key_pem, str(self.verify_server), self.min_version):
            h.update(part.encode("utf-8", "surrogateescape") + b"\0")
        return h.hexdigest()[:16]

    def to_wire(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_wire(cls, d: dict) -> "TlsMaterial":
        return cls(**d)


def proto_mask(min_version: str) -> int:
    """pjsip protocol bits for every version from ``min_version`` up to what the wheel speaks."""
    names = WHEEL_VERSIONS[WHEEL_VERSIONS.index(min_version):]
    return sum(PROTO_BITS[n] for n in names)


def proto_names(mask: int) -> list[str]:
    return [n for n, b in PROTO_BITS.items() if mask & b]


def checked(ca_pem: str, cert_pem: str, key_pem: str, *, verify: bool, min_version: str, where: str) -> TlsMaterial:
    """The material if it looks like PEM of the right kind, else :class:`TlsError` naming ``where``."""
    for what, value in (("CA", ca_pem), ("client certificate", cert_pem), ("client key", key_pem)):
        if len(value.encode("utf-8", "surrogateescape")) > MAX_PEM_BYTES:
            raise TlsError(f"{where}: {what} is over {MAX_PEM_BYTES} bytes")
    if ca_pem and CERT_MARK not in ca_pem:
        raise TlsError(f"{where}: the CA holds no PEM certificate ({CERT_MARK})")
    if verify and not ca_pem:
        raise TlsError(f"{where}: verifyServer needs CA certificates")
    if bool(cert_pem) != bool(key_pem):
        raise TlsError(f"{where}: a client certificate needs its key and the key its certificate")
    if cert_pem and CERT_MARK not in cert_pem:
        raise TlsError(f"{where}: the client certificate is not a PEM certificate")
    if key_pem and not ("-----BEGIN" in key_pem and "PRIVATE KEY-----" in key_pem):
        raise TlsError(f"{where}: the client key is not a PEM private key")
    if key_pem and "ENCRYPTED" in key_pem:
        raise TlsError(f"{where}: the client key is encrypted (a passphrase is not supported)")
    return TlsMaterial(ca_pem, cert_pem, key_pem, verify, min_version)


def file_material(acc: AgentAccount, base: Path | None = None) -> TlsMaterial | None:
    """Standalone: the account's TLS files (``tls.caFile``, ``certFile``, ``keyFile``); None without ``tls``."""
    t = acc.tls
    if t is None or acc.transport != "tls":
        return None
    if t.ca_name or t.client_secret_name:
        raise TlsError(f"account {acc.name}: tls.caName / tls.clientSecretName need cluster mode")

    def read(p: str | None, field: str) -> str:
        if not p:
            return ""
        path = Path(p)
        if base is not None and not path.is_absolute():
            path = base / path
        try:
            return path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise TlsError(f"account {acc.name}: tls.{field}: cannot read {path}: "
                           f"{getattr(e, 'strerror', None) or 'not text'}") from None

    return checked(read(t.ca_file, "caFile"), read(t.cert_file, "certFile"), read(t.key_file, "keyFile"),
                   verify=t.verify_server, min_version=t.min_version, where=f"account {acc.name}: tls")


def library_version() -> str | None:
    """The OpenSSL the pjsua2 wheel bundles (``OpenSSL 1.0.2k-fips  26 Jan 2017``), None if not found."""
    try:
        import pjsua2
    except ImportError:
        return None
    libs = Path(pjsua2.__file__).resolve().parent.parent / "pjsua2_python.libs"
    for path in sorted(glob.glob(os.fspath(libs / "libcrypto*"))):
        try:
            lib = ctypes.CDLL(path)
            fn = getattr(lib, "SSLeay_version", None) or getattr(lib, "OpenSSL_version")
            fn.restype = ctypes.c_char_p
            fn.argtypes = [ctypes.c_int]
            out = fn(0)
            return " ".join(out.decode().split()[:2]) if out else None
        except (OSError, AttributeError):
            continue
    return None
