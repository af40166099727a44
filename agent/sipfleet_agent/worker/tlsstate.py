"""What the worker's TLS layer reported, as status (pure): a transport state with pjsua2's ``TlsInfo`` -> the
accounts' ``status.tls``, and a failed REGISTER whose reason is pjsip's TLS error -> ``failureReason``
``TlsVerifyFailed`` (with pjsip's verification messages) or ``TlsHandshakeFailed``.

pjsua2 reports the negotiated cipher but not the negotiated version (``TlsInfo.protocol`` is the set of versions
the socket was configured with, pjlib's ``ssl_sock_imp_common.c``): the version is reported when exactly one is
enabled, and left out otherwise rather than guessed.
"""

from __future__ import annotations

import dataclasses

from sipfleet.api.models import TlsStatus
from sipfleet.api.reasons import TLS_HANDSHAKE_FAILED, TLS_VERIFY_FAILED

from ..tlsmaterial import proto_names

#: pjsip's pjsip_transport_state: PJSIP_TP_STATE_CONNECTED, _DISCONNECTED, _SHUTDOWN, _DESTROY
CONNECTED, DISCONNECTED, SHUTDOWN, DESTROY = 0, 1, 2, 3


@dataclasses.dataclass(frozen=True)
class TlsReport:
    """One ``onTransportState`` of a TLS transport (pjsua2's ``TlsInfo``, copied out of the callback)."""

    state: int
    last_error: int
    established: bool
    protocol_mask: int
    cipher: str
    verify_status: int
    verify_msgs: tuple[str, ...]
    remote: str
    detailed: bool = True  # False: a TLS transport's state without TlsInfo (pjsua2 leaves it empty)


def status_of(r: TlsReport, *, verify_server: bool, library: str | None, now: str) -> TlsStatus:
    """A handshake that completed and verified -> Connected; one whose verification failed (pjsip completes the
    handshake, then closes: ``established`` is true) or that did not complete -> Failed; a connection that ends
    after that -> Disconnected, its cipher kept."""
    enabled = proto_names(r.protocol_mask)
    verify_failed = verify_server and r.verify_status != 0
    if r.state == CONNECTED and r.established and not verify_failed:
        state = "Connected"
    elif verify_failed or not r.established:
        state = "Failed"
    else:
        state = "Disconnected"
    msgs = [m for m in r.verify_msgs if m][:16]
    return TlsStatus(
        state=state, remote=r.remote or None, enabled_protocols=enabled,
        protocol=enabled[0] if len(enabled) == 1 and r.established else None,
        cipher=r.cipher if r.established and r.cipher and not r.cipher.startswith("Cipher 0x") else None,
        verified=verify_server and r.verify_status == 0 and r.established,
        verify_messages=msgs, library=library, at=now)


def after_loss(prev: TlsStatus | None, r: TlsReport, *, library: str | None, now: str) -> TlsStatus | None:
    """A TLS transport that went down without TLS details (pjsua2 fills ``TlsInfo`` only on connect and on a failed
    verification): a connection that was up is Disconnected, one that never came up failed its handshake."""
    if r.state != DISCONNECTED:
        return None
    if prev is not None and prev.state == "Connected":
        return prev.model_copy(update={"state": "Disconnected", "at": now})
    return TlsStatus(state="Failed", verified=False, library=library, at=now,
                     remote=prev.remote if prev else None, enabled_protocols=prev.enabled_protocols if prev else [])


#: how OpenSSL's and pjsip's TLS errors read in a REGISTER's local 503 (``tlsv1 alert protocol version``,
#: ``sslv3 alert handshake failure``, ``wrong version number``, ``PJSIP_TLS_ECONNECT`` ...)
_TLS_WORDS = ("pjsip_tls_", "tls", "ssl", "handshake", "alert", "cipher", "wrong version number", "unknown protocol")


def failure(reason: str, last: TlsStatus | None) -> dict | None:
    """``failure_reason`` and ``reason`` for a failed REGISTER whose reason is pjsip's TLS error, else None."""
    if "PJSIP_TLS_ECERTVERIF" in reason or "certificate verification" in reason.lower():
        why = "; ".join(last.verify_messages) if last and last.verify_messages else ""
        return {"failure_reason": TLS_VERIFY_FAILED, "reason": (f"{reason}: {why}" if why else reason)[:1024]}
    if any(w in reason.lower() for w in _TLS_WORDS):
        return {"failure_reason": TLS_HANDSHAKE_FAILED, "reason": reason[:1024]}
    return None


def matches(remote: str, first_hop: tuple[str, int] | None) -> bool:
    """Whether a TLS peer ``ip:port`` is an account's first hop (an account whose hop is a name matches any)."""
    if first_hop is None or not remote:
        return True
    host, _, port = remote.rpartition(":")
    return host.strip("[]") == first_hop[0] and port == str(first_hop[1])
