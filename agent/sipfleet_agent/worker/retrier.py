"""The agent's own retry timer of one worker (event thread only): after a failed REGISTER it asks
:mod:`.retrypolicy` when to send the next one, writes that into ``status.registration`` (``nextAttemptAt``,
``nextAttemptReason``, ``failures``, ``failureReason``, ``redirectedTo``) and sends it then. pjsua's own retry is
off (:mod:`.accounts`), so nothing else re-registers a failed account. A paced account's attempt waits for the
supervisor's Go (:mod:`.pacing`), and after a failure that says the registrar does not answer it waits for the
agent's probe instead of a back-off of its own (``nextAttemptReason: Paced``).

Promise: one scheduled attempt per account at most; a 2xx clears it; a lost TCP/TLS connection re-registers the
worker's accounts of that transport after ``firstRetryIntervalSeconds`` (never sooner, never shortening a wait the
registrar asked for); a followed 3xx re-creates the account with the redirect target as its registrar (the
registration client is built new, its route from the configuration); an attempt due while a re-create or repair
runs waits for that task to end (the task's own REGISTER usually settles it first).
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from sipfleet.api import reasons
from sipfleet.api.budget import PATH_FAILURE_CODES

from .. import protocol as p
from ..logs import log
from . import retrypolicy
from .accounts import AccountRuntime

LOG = logging.getLogger("sipfleet_agent")
BUSY_RECHECK_S = 1.0


class Retrier:
    def __init__(self, agent: Any):
        self.a = agent

    # ---------------------------------------------------------------- outcomes

    def on_success(self, rt: AccountRuntime) -> dict:
        """A 2xx: the fields to clear in ``status.registration``."""
        rt.failures = 0
        rt.redirect_chain = ()
        self._cancel(rt)
        self.a.pace.answered(rt, 200)
        return {"next_attempt_at": None, "next_attempt_reason": None, "failures": None}

    def on_failure(self, rt: AccountRuntime, code: int, whole_msg: str) -> dict:
        """A failed REGISTER: schedule the next one; the fields to set in ``status.registration``."""
        retry_after, min_expires, contacts = retrypolicy.parse_answer(whole_msg)
        answered = rt.last_register is not None and rt.last_register[0].authorized
        registrar = rt.registrar_uri()
        f = retrypolicy.Failure(code=code, attempt=rt.failures + 1, retry_after=retry_after, min_expires=min_expires,
                                challenge_answered=answered, contacts=contacts, registrar=registrar,
                                redirect_chain=rt.redirect_chain or (registrar,))
        d = retrypolicy.decide(rt.res.spec.registration, f, time.time(), random.random())
        self.a.pace.answered(rt, code, retry_after)
        upd: dict = {}
        if d.redirect_to is not None:
            rt.redirect_chain = f.redirect_chain + (d.redirect_to,)
            rt.registrar_override = d.redirect_to
            upd["redirected_to"] = d.redirect_to
        else:
            rt.failures += 1
            rt.redirect_chain = ()
            if rt.registrar_override is not None:  # the next attempt starts over at the configured registrar
                rt.registrar_override = None
                upd["redirected_to"] = None
        if self.a.pace.paced(rt) and d.next_reason == reasons.BACKOFF and code in PATH_FAILURE_CODES:
            # the registrar does not answer: not a back-off of this account's own, the agent's probe decides
            self._cancel(rt)
            self.a.pace.send(rt)
            log(LOG, logging.INFO, "next registration attempt: after the agent's probe", account=rt.name, code=code)
            return {**upd, "failure_reason": d.failure_reason, "next_attempt_at": None,
                    "next_attempt_reason": reasons.PACED, "failures": rt.failures}
        self._schedule(rt, d)
        log(LOG, logging.INFO, "next registration attempt", account=rt.name, code=code, reason=d.next_reason,
            failure=d.failure_reason, delay_s=round(d.delay, 3), detail=d.message)
        return {**upd, "failure_reason": d.failure_reason, "next_attempt_at": d.at_iso(),
                "next_attempt_reason": d.next_reason, "failures": rt.failures}

    def on_transport_lost(self, transport: str, reason: str = reasons.TRANSPORT_LOST) -> None:
        """A TCP/TLS connection went away (or the UDP path is dead, :mod:`.flowprobe`): the first retry of the
        accounts that use that transport."""
        for rt in list(self.a.accounts.values()):
            if rt.acc is None or rt.busy or rt.removed or (transport and rt.res.spec.transport != transport):
                continue
            d = retrypolicy.after_transport_loss(rt.res.spec.registration, time.time(), random.random(), reason)
            cur = rt.next_attempt if rt.retry_timer is not None else None
            if retrypolicy.keeps_current(cur[0] if cur else None, cur[1] if cur else None, d):
                continue
            self._schedule(rt, d)
            rt.status.set_registration(next_attempt_at=d.at_iso(), next_attempt_reason=d.next_reason)
            self.a.mark(rt)

    def path_failed(self, rt: AccountRuntime, cause: str, detail: str) -> None:
        """The first hop of this worker's route failed for ``rt``: the supervisor decides on failover (an account
        without fallback routes: nothing happens there). Told through the pipe to the supervisor, if any."""
        hook = self.a.pace.hook
        if hook is not None and not rt.removed and not self.a.stopping:
            hook(p.PathFailed(rt.key[0], rt.key[1], list(rt.res.spec.route), cause, detail[:512]))

    def on_transport_timeout(self, transport: str, detail: str) -> None:
        """A TCP/TLS connection ended because the peer acknowledged nothing (the dead-flow bound): a path failure
        of every account of that transport."""
        for rt in list(self.a.accounts.values()):
            if rt.acc is not None and not rt.removed and rt.res.spec.transport == transport:
                self.path_failed(rt, reasons.DEAD_FLOW, detail)

    # ---------------------------------------------------------------- timer

    def _schedule(self, rt: AccountRuntime, d: retrypolicy.Decision) -> None:
        self._cancel(rt)
        rt.next_attempt = (d.at, d.next_reason)
        rt.retry_timer = self.a.loop.call_later(d.delay, self._attempt, rt)

    def _cancel(self, rt: AccountRuntime) -> None:
        self.a.loop.cancel(rt.retry_timer)
        rt.retry_timer = None
        rt.next_attempt = None

    def _attempt(self, rt: AccountRuntime) -> None:
        rt.retry_timer = None
        if rt.removed or self.a.stopping or rt.acc is None:
            return  # a removed or stopping account sends nothing
        if rt.busy:  # a re-create / repair is running: it registers anew (and cancels this); else look again
            rt.retry_timer = self.a.loop.call_later(BUSY_RECHECK_S, self._attempt, rt)
            return
        if rt.registrar_uri() != rt.created_registrar:  # a followed 3xx, or back from one: a new account
            log(LOG, logging.INFO, "registering at another registrar", account=rt.name, registrar=rt.registrar_uri())
            self.a.spawn(self.a.recreate(rt))
            return
        log(LOG, logging.INFO, "retrying registration", account=rt.name, reason=rt.next_attempt[1] if rt.next_attempt
            else None)
        self.a.pace.send(rt)  # at once unless paced (.pacing)
