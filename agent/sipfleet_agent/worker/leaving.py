"""Accounts leaving the worker (removed from its assignment, or all of them when it stops): no binding left behind.

Why: ``pjsua_acc_del`` (and ``setRegistration(False)``) sends the un-REGISTER through the account's registration
client, and that client refuses to send while a REGISTER of it is still in flight (``pjsip_regc_send`` returns
``PJSIP_EBUSY``: no un-REGISTER at all). The deleted client still answers its registrar's 401/407 challenge
(``sip_reg.c``: "even when _delete_flag is set"), so an account removed in the middle of its REGISTER ends up with
a binding at the registrar that nobody refreshes or removes: it lingers there until it expires, and calls for
the AOR are routed to a contact that no longer answers.

Promise:

* :meth:`Leaving.remove` takes the account out of the assignment at once (no status, no refresh, no retry, no
  repair), keeps its pjsua account until the REGISTER in flight has its final answer (at most
  ``unregister_timeout_seconds``), then deletes it, so that pjsua sends its un-REGISTER; the account's REGISTERs
  and answers are still attributed to it (:meth:`Leaving.find`) until that un-REGISTER is answered;
* :meth:`Leaving.stop_all` (the worker stops): calls hung up, then the same wait for every account, then an
  un-REGISTER of each registered one, all within ``unregister_timeout_seconds`` (half of it at most for the wait);
* an account re-added meanwhile under the same key is created only once the leaving one has gone
  (:meth:`Leaving.then`): its Contact is the same URI, and the old client's un-REGISTER would remove the new
  client's binding (RFC 3261 10.3: a binding with another Call-ID is removed by an expiry of zero).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Iterable

import pjsua2 as pj

from ..logs import log
from .eventloop import TaskGen, Wait

LOG = logging.getLogger("sipfleet_agent")

#: how long a deleted account's un-REGISTER is still attributed to it (its answer is usually milliseconds away)
UNREGISTER_ATTRIBUTION_S = 2.0


class Leaving:
    def __init__(self, agent: Any):
        self.agent = agent
        self._rts: dict[int, Any] = {}  # id(rt) -> rt: a key may be re-added while its old account leaves

    def __len__(self) -> int:
        return len(self._rts)

    def accounts(self) -> list[Any]:
        return list(self._rts.values())

    def find(self, aor: tuple, call_id: str | None) -> Any:
        """The leaving account whose registration client sent/received this (by Call-ID), else one with this AOR."""
        found = None
        for rt in self._rts.values():
            if rt.aor_key == aor:
                if call_id is not None and rt.meter.knows(call_id):
                    return rt
                found = found or rt
        return found

    def holds(self, key: tuple) -> bool:
        return any(rt.key == key for rt in self._rts.values())

    def then(self, key: tuple, fn: Any) -> TaskGen:
        """Call ``fn()`` once no account of ``key`` is leaving any more."""
        limit = self.agent.settings.unregister_timeout_seconds + UNREGISTER_ATTRIBUTION_S + 1.0
        yield Wait(limit, lambda: not self.holds(key))
        fn()

    def remove(self, rt: Any) -> None:
        """``rt`` is already out of the worker's accounts and marked removed."""
        self._rts[id(rt)] = rt
        self.agent.spawn(self._task(rt), on_error=lambda e: self._rts.pop(id(rt), None))

    def settle(self, rts: Iterable[Any], timeout: float) -> TaskGen:
        """Wait (at most ``timeout``) until none of ``rts`` has a REGISTER asking for a binding in flight."""
        busy = [rt for rt in rts if rt.acc is not None and rt.meter.registering]
        if busy:
            log(LOG, logging.INFO, "waiting for REGISTERs in flight before unregistering", accounts=len(busy))
            yield Wait(timeout, lambda: not any(r.acc is not None and r.meter.registering for r in busy))

    def stop_all(self) -> TaskGen:
        a = self.agent
        log(LOG, logging.INFO, "stopping: unregistering all accounts")
        if len(a.calls):
            try:
                a.ep.hangupAllCalls()
            except pj.Error:
                pass
            yield Wait(2.0, lambda: not len(a.calls))
        timeout = a.settings.unregister_timeout_seconds
        deadline = time.monotonic() + timeout
        hosted = list(a.accounts.values())
        for rt in hosted:
            a.loop.cancel(rt.retry_timer)
            a.refresher.cancel(rt)
        # a REGISTER in flight would make the un-REGISTER fail (its client is busy) and still create a binding
        yield from self.settle([*hosted, *self.accounts()], timeout / 2)
        waiting = []
        for rt in hosted:
            if rt.acc is not None and rt.status.registration.state == "Registered":
                try:
                    rt.acc.setRegistration(False)
                    waiting.append(rt)
                except pj.Error as e:
                    LOG.warning("unregister failed: %s", e.info())
        if waiting:
            yield Wait(max(0.5, deadline - time.monotonic()),
                       lambda: all(r.status.registration.state != "Registered" for r in waiting))
        for rt in hosted:
            a.mark(rt)

    def _task(self, rt: Any) -> TaskGen:
        a = self.agent
        try:
            t0 = time.monotonic()
            yield from self.settle([rt], a.settings.unregister_timeout_seconds)
            if rt.acc is not None and rt.meter.registering:
                log(LOG, logging.WARNING, "removed account's REGISTER still unanswered: deleting it anyway",
                    account=rt.name, waited_s=round(time.monotonic() - t0, 3))
            if a.drop_account(rt):
                yield Wait(min(UNREGISTER_ATTRIBUTION_S, a.settings.unregister_timeout_seconds),
                           lambda: rt.meter.unreg_done)
        finally:
            rt.meter.retiring = False
            self._rts.pop(id(rt), None)
