"""The pjsua callbacks that observe: pjsip's message log (TX/RX lines -> :mod:`.routemeter` -> route status,
drift, repairs; RX 2xx to REGISTER -> :mod:`.responseguard`, a refused answer ends the worker before pjsua sees it,
an answer cut at the UDP receive buffer makes its ``onRegState`` a failure unless its grant survived the cut),
``onRegState`` (-> :mod:`.regstate` -> registration status; a failure -> :mod:`.retrier`, the agent's own retry
timer, pjsua's is off; no answer from the first hop at all -> a path failure the supervisor may fail over on) and
transport loss (-> the retrier's first retry). Runs on the worker's event thread only.
"""

from __future__ import annotations

import datetime as _dt
import errno
import logging
import os
import time
from typing import Any

import pjsua2 as pj

from sipfleet.api import reasons
from sipfleet.api.budget import PATH_FAILURE_CODES

from ..logs import log
from ..siplog import TxRequest, parse_rx_response, parse_tx_request, scrub, service_route_from_message
from ..status import now_iso
from . import probeplan, refreshplan, regattempts, regstate, responseguard
from .accounts import AccountRuntime
from .routemeter import aor_key

LOG = logging.getLogger("sipfleet_agent")
PJ_LOG = logging.getLogger("sipfleet_agent.pjsip")
#: a failure this long after pjsip dropped an answer is that answer's timeout (Timer F is 32 s)
DROPPED_MEMORY_S = 64.0
#: pjsip's status for the OS error ETIMEDOUT (PJ_ERRNO_START_SYS + errno): a TCP/TLS connection the kernel closed
#: after TCP_USER_TIMEOUT (worker/deadflow.py), i.e. the peer acknowledged nothing
ETIMEDOUT_STATUS = 120000 + errno.ETIMEDOUT


class Observer:
    def __init__(self, agent: Any):
        self.a = agent
        self._from_cache: dict[str, tuple] = {}
        #: tests only: prove the supervisor's crash attribution against pjsua's real crash (never set in production)
        self._guard = os.environ.get("SIPFLEET_AGENT_TEST_NO_RESPONSE_GUARD") != "1"
        self._last_crumb: tuple | None = None  # the account of the last breadcrumb (engine.answer_hook)
        self._dropping: tuple[str, str] | None = None  # pjsip's last "Dropping N bytes packet" (source, why)

    def on_transport_state(self, state: int, last_error: int, tp_type: str = "") -> None:
        if state == pj.PJSIP_TP_STATE_DISCONNECTED:
            transport = tp_type.lower().rstrip("6")
            log(LOG, logging.WARNING, "transport disconnected; re-registering after firstRetryIntervalSeconds",
                error=last_error, transport=transport)
            self.a.retrier.on_transport_lost(transport if transport in ("tcp", "tls") else "")
            if last_error == ETIMEDOUT_STATUS and transport in ("tcp", "tls"):
                self.a.retrier.on_transport_timeout(transport, f"{transport} connection to the first hop timed out")

    def on_log(self, level: int, msg: str) -> None:
        if msg.startswith("TX "):
            req = parse_tx_request(msg)
            if req is not None:
                self._on_tx(req)
            return
        if msg.startswith("RX "):
            resp = None
            if responseguard.is_register_2xx(msg):
                resp = parse_rx_response(msg)
                verdict = responseguard.check_register_response(resp) if resp is not None and self._guard else None
                if verdict is not None:
                    self.a.on_rejected(self._rt_for_from(verdict.from_uri), verdict)  # does not return
                if resp is not None and self.a.answer_hook is not None:
                    rt = self._rt_for_from(resp.from_uri, resp.call_id)
                    if rt is not None and rt.key != self._last_crumb:
                        self._last_crumb = rt.key
                        self.a.answer_hook(rt)
            if " Response msg " in msg[:60] and "/REGISTER/" in msg[:80]:
                resp = resp or parse_rx_response(msg)
                rt = self._rt_for_from(resp.from_uri, resp.call_id) if resp is not None else None
                if rt is not None:  # its meter knows which REGISTERs are answered (a re-create waits for them)
                    rt.meter.observe_rx(resp)
                    self._note_truncated(rt, resp)
            return
        if msg.startswith("Dropped packet:"):
            dropped = responseguard.dropped_register_answer(msg, self._dropping)
            self._dropping = None
            if dropped is not None:
                self._on_dropped(dropped)
            return
        if msg.startswith("Dropping "):
            self._dropping = responseguard.parse_dropping(msg)
        elif msg.startswith("Error processing packet from "):
            dropped = responseguard.error_processing_answer(msg)
            if dropped is not None:
                self._on_dropped(dropped)
        if level <= 2:
            PJ_LOG.log(logging.ERROR if level <= 1 else logging.WARNING, scrub(msg.strip()))
        elif level <= self.a.pjsip_log_level:
            PJ_LOG.info(scrub(msg.strip()))

    def _note_truncated(self, rt: AccountRuntime, resp: Any) -> None:
        """An answer cut at pjsip's UDP receive buffer: remembered for the ``onRegState`` it is about to cause."""
        cut = responseguard.truncated_answer(resp)
        if cut is None:
            return
        self.a.metrics.answers_truncated.inc()
        if rt.truncated_answer is None or rt.truncated_answer.call_id != cut.call_id:
            log(LOG, logging.WARNING, "registrar answer cut at pjsip's receive buffer", account=rt.name,
                reason=cut.reason, code=cut.code, source=cut.source, bytes=cut.length)
        rt.truncated_answer = cut

    def _on_dropped(self, d: "responseguard.Dropped") -> None:
        """pjsip dropped an answer to this account's REGISTER as unparsable: say so instead of a silent timeout."""
        rt = self._rt_for_from(d.from_uri, d.call_id)
        if rt is None:
            return
        first = rt.dropped_answer is None or rt.dropped_answer[2] != d.call_id
        rt.dropped_answer = (d.message, time.monotonic(), d.call_id, d.reason)
        if first:
            log(LOG, logging.WARNING, "registrar answer dropped by pjsip", account=rt.name, reason=d.reason,
                code=d.code, source=d.source, error=d.why)
        if rt.status.registration.state != "Registered":
            rt.status.set_registration(state="Failed", code=d.code, reason=d.message[:1024],
                                       failure_reason=d.reason, last_failure=now_iso())
            self.a._update_gauges()
            self.a.mark(rt)

    def _rt_for_from(self, from_uri: str, call_id: str | None = None) -> AccountRuntime | None:
        """The account a REGISTER or its answer belongs to: by its From AOR; an account that is leaving the worker
        (:mod:`.leaving`) when the Call-ID is one of its registration clients (or no hosted account has the AOR)."""
        cached = self._from_cache.get(from_uri)
        if cached is None:
            if len(self._from_cache) > 256:
                self._from_cache.clear()
            cached = self._from_cache[from_uri] = aor_key(from_uri)
        gone = self.a.leaving.find(cached, call_id) if len(self.a.leaving) else None
        if gone is not None and call_id is not None and gone.meter.knows(call_id):
            return gone
        found = None
        for rt in self.a.accounts.values():
            if rt.aor_key == cached:
                if not rt.meter.retiring:
                    return rt
                found = rt
        return found or gone

    def _on_tx(self, req: TxRequest) -> None:
        if self.a.tx_hook is not None:
            self.a.tx_hook(req)
        if req.method != "REGISTER":
            return
        self.a.metrics.registers_sent.inc()
        rt = self._rt_for_from(req.from_uri, req.call_id)
        if rt is None:
            return
        obs = rt.meter.observe_tx(req, rt.status.route)
        if obs.kind == "stale-client":
            LOG.debug("REGISTER from a deleted registration client of %s ignored", rt.name)
        if obs.kind in ("unregister", "stale-client") or rt.removed:
            return  # a leaving account's REGISTERs say nothing about a route anybody asks for
        rt.last_tx_register = time.monotonic()
        if obs.kind == "retransmission":
            return
        self._attempt_started(rt, req.call_id)
        at = now_iso()
        rt.last_register = (req, at)  # a SentRequest is built only when someone asks (GET /status)
        rt.status.observed_at = at
        changes = dict(obs.changes)
        if obs.drift_started:
            changes["last_drift_at"] = at
            changes["drift_count"] = rt.status.route.drift_count + 1
            if rt.repair is None:
                rt.repair_drift_t0 = time.monotonic()
            self.a.metrics.drift_seen.inc()
            log(LOG, logging.WARNING, "route drift: REGISTER sent off the configured route", account=rt.name,
                effective=list(req.route), desired=list(rt.res.spec.route), destination=req.destination)
        if changes:
            rt.status.set_route(**changes)
            self.a.mark(rt)
        self.a.repairs.on_register(rt, obs.in_sync)

    def on_reg_state(self, rt: AccountRuntime, prm: "pj.OnRegStateParam") -> None:
        code, expiration = int(prm.code), int(prm.expiration)
        reason = scrub(str(prm.reason or ""))
        src = whole = info = ""
        try:
            src = prm.rdata.srcAddress or ""
            whole = prm.rdata.wholeMsg or ""
            info = prm.rdata.info or ""
        except Exception:  # noqa: BLE001
            pass
        cut, rt.truncated_answer = rt.truncated_answer, None
        if cut is not None and not (whole and cut.answers(info, whole)):
            cut = None  # the cut answer was a challenge pjsip answered itself; this outcome is another answer's
        if cut is not None and 200 <= code < 300 and responseguard.grant_survived(whole):
            reason, cut = f"{reason} ({cut.note})".strip(), None  # a grant the registrar made: registered, remarked
        rt.meter.settled()
        if rt.removed:
            return  # leaving the worker (.leaving): its outcome only ends the wait for its un-REGISTER
        st = rt.status
        before = st.registration.state
        at = _dt.datetime.now(_dt.timezone.utc)
        granted = expiration if 200 <= code < 300 and expiration > 0 else 0
        last = rt.last_register[0] if rt.last_register else None
        asked = (last is not None and last.expires != 0 and not last.contact_expires_zero
                 and not rt.removed and not self.a.stopping)
        out = regstate.on_reg_state(st.registration, st.route, code=code, reason=reason, expiration=expiration, src=src,
                                    service_route=service_route_from_message(whole) if whole and 200 <= code < 300 else [],
                                    configured_route=list(rt.res.spec.route), now=now_iso(),
                                    expires_at=refreshplan.expires_at(at, granted) if granted else None,
                                    asked_binding=asked, truncated=cut.message if cut is not None else None)
        if out.failed:
            granted = 0  # a cut 2xx is no grant: no refresh or lapse timer of the agent's
        if granted:
            self.a.refresher.on_grant(rt, granted)
        else:
            self.a.refresher.cancel(rt)
        if out.route:
            st.set_route(**out.route)
        reg = out.registration
        dropped = rt.dropped_answer is not None and time.monotonic() - rt.dropped_answer[1] < DROPPED_MEMORY_S
        if reg and out.failed and cut is None and dropped:
            # the timeout of a REGISTER whose answer pjsip dropped: the answer is the news, not the 408
            reg = {**reg, "reason": f"{reason}: {rt.dropped_answer[0]}"[:1024],
                   "failure_reason": rt.dropped_answer[3]}
        elif reg and not out.failed:
            rt.dropped_answer = None
        self._attempt_ended(rt, code, expiration)
        if reg and out.failed:
            reg = self.a.tls.classify(rt, reg, reason)
        if out.failed:
            rt.last_failure_mono = time.monotonic()
            self.a.metrics.registration_failures.labels(code=str(code)).inc()
            nxt = self.a.retrier.on_failure(rt, code, whole)
            if not whole and code in PATH_FAILURE_CODES and not dropped:
                # no answer came back from the first hop (pjsip's own 408, or a transport error)
                self.a.retrier.path_failed(rt, reasons.FIRST_HOP_UNANSWERED if code == 408
                                           else reasons.FIRST_HOP_UNREACHABLE, f"{code} {reason}".strip())
            if reg and reg.get("failure_reason"):  # a dropped answer says more than the policy's class
                nxt.pop("failure_reason", None)
            reg = {**(reg or {}), **nxt}
        elif 200 <= code < 300 and expiration > 0:
            clear = self.a.retrier.on_success(rt)
            if reg is not None or st.registration.next_attempt_at is not None or st.registration.failures is not None:
                reg = {**(reg or {}), **clear}
            rt.flow_timer = probeplan.flow_timer(whole)  # pjsua keeps the flow alive at it; .flowprobe watches it
            if rt.flow_timer != st.registration.flow_timer_seconds:
                reg = {**(reg or {}), "flow_timer_seconds": rt.flow_timer}
        if reg:
            st.set_registration(**reg)
        if st.registration.state != before:
            log(LOG, logging.INFO if st.registration.state != "Failed" else logging.WARNING,
                "registration " + st.registration.state.lower(), account=rt.name, code=code, reason=reason,
                expires=expiration, response_from=src)
        self.a._update_gauges()
        self.a.mark(rt)
        if self.a.reg_hook is not None:
            self.a.reg_hook(rt, code, expiration)

    def _attempt_started(self, rt: AccountRuntime, call_id: str) -> None:
        new = regattempts.on_register(rt.reg_attempt, call_id=call_id, now=time.monotonic(),
                                      registered=rt.status.registration.state == "Registered")
        if new is not None:
            rt.reg_attempt = new
            self.a.metrics.registration_attempts.inc()
            if new.refresh:
                self.a.metrics.reregistrations.inc()

    def _attempt_ended(self, rt: AccountRuntime, code: int, expiration: int) -> None:
        ended = regattempts.on_final(rt.reg_attempt, code=code, expiration=expiration, now=time.monotonic())
        rt.reg_attempt = None
        if ended is not None and ended.delay is not None:
            self.a.metrics.register_request_delay.observe(ended.delay)
        elif ended is not None and ended.ineffective:
            self.a.metrics.ineffective_registration_attempts.labels(reason=ended.ineffective).inc()
