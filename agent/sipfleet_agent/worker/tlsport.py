"""The worker's TLS transport made from its accounts' TLS material, and what its TLS layer reports.

Promise: :meth:`TlsPort.ensure` creates the TLS transport before any account of a worker whose accounts bring TLS
material (one material per worker: it is part of the worker key); material pjsip refuses fails those accounts with
``TlsConfigInvalid`` and pjsip's error, it never ends the worker. :meth:`TlsPort.on_state` turns each
``onTransportState`` of a TLS transport into ``status.tls`` of the accounts whose first hop it is, and the
metrics; :meth:`TlsPort.classify` names a failed REGISTER's TLS cause. Event thread only.
"""

from __future__ import annotations

import logging
from typing import Any

import pjsua2 as pj

from sipfleet.api.reasons import TLS_CONFIG_INVALID

from ..logs import log
from ..siplog import scrub, uri_hostport
from ..status import now_iso
from ..tlsmaterial import library_version, proto_mask
from . import endpoint, tlsstate

LOG = logging.getLogger("sipfleet_agent")


def report(prm: Any) -> tlsstate.TlsReport | None:
    """Copy pjsua2's ``OnTransportStateParam`` TLS part out of the callback (None for other transports; a TLS
    transport's report without details has ``established`` false and no remote)."""
    ti = prm.tlsInfo
    if ti.isEmpty():
        if str(prm.type or "").lower() != "tls":
            return None
        return tlsstate.TlsReport(int(prm.state), int(prm.lastError), False, 0, "", 0, (), "", detailed=False)
    return tlsstate.TlsReport(int(prm.state), int(prm.lastError), bool(ti.established), int(ti.protocol),
                              str(ti.cipherName or ""), int(ti.verifyStatus), tuple(str(m) for m in ti.verifyMsgs),
                              str(ti.remoteAddr or ""))


class TlsPort:
    def __init__(self, agent: Any):
        self.a = agent
        self.fingerprint: str | None = None
        self.error: str | None = None
        self.verify_server = False
        self.library: str | None = None

    def ensure(self, accounts: list) -> None:
        mats = sorted({a.tls.fingerprint(): a.tls for a in accounts if a.tls is not None}.items())
        if not mats or mats[0][0] == self.fingerprint:
            return
        fp, mat = mats[0]
        old = self.a.transport_ids.pop("tls", None)
        if old is not None:
            try:
                self.a.ep.transportClose(old)
            except pj.Error:
                pass
        if self.library is None:
            self.library = library_version()
        try:
            self.a.transport_ids["tls"] = endpoint.tls_transport(self.a.ep, self.a.settings.sip_address, mat,
                                                                 proto_mask(mat.min_version),
                                                                 self.a.settings.dead_flow_seconds)
            self.error = None
            log(LOG, logging.INFO, "TLS transport created", verify_server=mat.verify_server,
                min_version=mat.min_version, client_certificate=bool(mat.cert_pem), library=self.library)
        except pj.Error as e:
            self.error = scrub(str(e.info()))[:900]
            log(LOG, logging.ERROR, "TLS transport refused the account's TLS material", error=self.error)
        self.fingerprint, self.verify_server = fp, mat.verify_server

    def after_apply(self) -> None:
        """Accounts that could not be created for want of the TLS transport say why."""
        if self.error is None:
            return
        for rt in self.a.accounts.values():
            if rt.res.tls is not None and rt.acc is None and rt.status.registration.state == "Failed":
                rt.status.set_registration(reason=f"TLS transport not created: {self.error}"[:1024],
                                           failure_reason=TLS_CONFIG_INVALID)
                self.a.mark(rt)

    def on_state(self, r: tlsstate.TlsReport) -> None:
        if not r.detailed:
            self._on_loss(r)
            return
        st = tlsstate.status_of(r, verify_server=self.verify_server, library=self.library or library_version(),
                                now=now_iso())
        if st.state == "Failed":
            self.a.metrics.tls_failures.labels(reason="verify" if r.verify_status else "handshake").inc()
            log(LOG, logging.WARNING, "TLS connection failed", remote=r.remote, verify=list(r.verify_msgs),
                error=r.last_error)
        for rt in self.a.accounts.values():
            spec = rt.res.spec
            if spec.transport != "tls":
                continue
            hop = uri_hostport(rt.res.applied_route()[0] if spec.route else rt.res.applied_registrar(), "tls")
            if tlsstate.matches(r.remote, hop) and rt.status.tls != st:
                rt.status.tls = st
                self.a.mark(rt)
        self.gauges()

    def _on_loss(self, r: tlsstate.TlsReport) -> None:
        failed = False
        for rt in self.a.accounts.values():
            if rt.res.spec.transport != "tls":
                continue
            st = tlsstate.after_loss(rt.status.tls, r, library=self.library, now=now_iso())
            if st is not None:
                failed = failed or st.state == "Failed"
                rt.status.tls = st
                self.a.mark(rt)
        if failed:
            self.a.metrics.tls_failures.labels(reason="handshake").inc()
        self.gauges()

    def gauges(self) -> None:
        g = self.a.metrics.tls_connected
        g.clear()
        for rt in self.a.accounts.values():
            t = rt.status.tls
            if t is not None and t.state == "Connected":
                g.labels(protocol=t.protocol or "unknown", cipher=t.cipher or "unknown").inc()

    def classify(self, rt: Any, reg: dict, reason: str) -> dict:
        found = tlsstate.failure(reason, rt.status.tls) if rt.res.spec.transport == "tls" else None
        return {**reg, **found} if found else reg
