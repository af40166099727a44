"""The agent's own registration timers of one worker (event thread only): after every 2xx with an expiry, a lapse
timer at the granted expiry (the status leaves Registered if no newer grant came: ``RegistrationLapsed``) and,
when :mod:`.refreshplan` says pjsip would not refresh in time, our own refresh (``setRegistration(True)`` on the
existing registration client, so the route set is not rebuilt).
"""

from __future__ import annotations

import logging
from typing import Any

import pjsua2 as pj

from sipfleet.api.reasons import REGISTRATION_LAPSED

from ..logs import log
from ..status import now_iso
from . import refreshplan
from .accounts import AccountRuntime

LOG = logging.getLogger("sipfleet_agent")
BUSY_RETRY_S = 0.2


class Refresher:
    def __init__(self, agent: Any):
        self.a = agent

    def on_grant(self, rt: AccountRuntime, granted: int) -> None:
        """A 2xx granted ``granted`` seconds (> 0) just now."""
        rt.grant_seq += 1
        self.cancel(rt)
        rt.lapse_timer = self.a.loop.call_later(granted, self._lapse, rt, rt.grant_seq, granted)
        delay = refreshplan.own_refresh_delay(granted, refreshplan.delay_before_refresh(rt.res.expires))
        if delay is not None:
            rt.refresh_timer = self.a.loop.call_later(delay, self._refresh, rt, rt.grant_seq)

    def cancel(self, rt: AccountRuntime) -> None:
        self.a.loop.cancel(rt.lapse_timer)
        self.a.loop.cancel(rt.refresh_timer)
        rt.lapse_timer = rt.refresh_timer = None

    def _refresh(self, rt: AccountRuntime, seq: int) -> None:
        rt.refresh_timer = None
        if seq != rt.grant_seq or rt.acc is None or rt.removed or rt.busy or self.a.stopping:
            return
        try:
            rt.acc.setRegistration(True)
        except pj.Error as e:  # e.g. a REGISTER of pjsua's own is in flight: look again shortly
            LOG.debug("own refresh of %s deferred: %s", rt.name, e.info())
            rt.refresh_timer = self.a.loop.call_later(BUSY_RETRY_S, self._refresh, rt, seq)

    def _lapse(self, rt: AccountRuntime, seq: int, granted: int) -> None:
        rt.lapse_timer = None
        if rt.removed or not refreshplan.lapsed(rt.status.registration.state, rt.grant_seq, seq):
            return
        reason = f"the binding granted for {granted} s lapsed without a successful refresh"
        log(LOG, logging.WARNING, "registration lapsed", account=rt.name, granted=granted)
        rt.status.set_registration(state="Failed", code=None, reason=reason, failure_reason=REGISTRATION_LAPSED,
                                   registered_since=None, last_failure=now_iso())
        self.a._update_gauges()
        self.a.mark(rt)
