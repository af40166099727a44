"""UDP dead-flow probing of one worker (event thread only): OPTIONS through its accounts' route, decided by
:mod:`.probeplan`; a dead path re-registers the worker's UDP accounts at once (``nextAttemptReason: DeadFlow``)
instead of at their next refresh, and is a path failure the supervisor may fail over on.
The bound is ``settings.udpDeadFlowSeconds`` (0: off), or shorter where a registrar offering RFC 5626 outbound
gave a registered UDP account a Flow-Timer (:func:`.probeplan.flow_bound`): such a flow is watched even while
probing is off. With neither, nothing is probed.

The probe is sent from a registered UDP account with ``Account.sendRequest`` (pjsua's route set and outbound
proxy: the path REGISTERs take), to that account's registrar URI; ``onSendRequest`` reports its end: a received
answer proves the path, a timeout does not.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pjsua2 as pj

from sipfleet.api import reasons

from ..logs import log
from . import probeplan
from .accounts import AccountRuntime

LOG = logging.getLogger("sipfleet_agent")


#: how often a worker with nothing to watch looks again (a Flow-Timer may come with the next 2xx)
IDLE_S = 1.0


class FlowProbe:
    def __init__(self, agent: Any):
        self.a = agent
        self.fixed = float(agent.settings.udp_dead_flow_seconds)
        self.state = probeplan.ProbeState()

    def start(self) -> None:
        self.a.loop.call_later(probeplan.interval(self.fixed) if self.fixed > 0 else IDLE_S, self._tick)

    def bound(self) -> float:
        """The bound now: the setting's, or a registered UDP account's Flow-Timer's if shorter (0: nothing to watch)."""
        bounds = [self.fixed] if self.fixed > 0 else []
        bounds += [probeplan.flow_bound(rt.flow_timer) for rt in self.a.accounts.values()
                   if rt.flow_timer and rt.acc is not None and not rt.removed and rt.res.spec.transport == "udp"
                   and rt.status.registration.state == "Registered"]
        return min(bounds, default=0.0)

    def _prober(self) -> AccountRuntime | None:
        for rt in self.a.accounts.values():
            if (rt.acc is not None and not rt.removed and not rt.busy and rt.res.spec.transport == "udp"
                    and rt.status.registration.state == "Registered"):
                return rt
        return None

    def _tick(self) -> None:
        if self.a.stopping:
            return
        bound = self.bound()
        if bound <= 0:
            self.state = probeplan.ProbeState()
            self.a.loop.call_later(IDLE_S, self._tick)
            return
        rt = self._prober()
        d = probeplan.tick(self.state, now=time.monotonic(), bound=bound, can_probe=rt is not None)
        self.state = d.state
        if d.dead:
            log(LOG, logging.WARNING, "UDP path to the first hop dead: no answer to OPTIONS; re-registering",
                bound_s=bound)
            self.a.metrics.dead_flows.inc()
            self.a.retrier.on_transport_lost("udp", reason=reasons.DEAD_FLOW)
            for acc in list(self.a.accounts.values()):
                if acc.acc is not None and acc.res.spec.transport == "udp":
                    self.a.retrier.path_failed(acc, reasons.DEAD_FLOW, f"no answer to OPTIONS for {bound:g} s")
        elif d.send and rt is not None:
            self._send(rt)
        self.a.loop.call_later(probeplan.interval(bound), self._tick)

    def _send(self, rt: AccountRuntime) -> None:
        prm = pj.SendRequestParam()
        prm.method = "OPTIONS"
        prm.txOption.targetUri = rt.registrar_uri()
        try:
            rt.acc.sendRequest(prm)
        except pj.Error as e:  # no transport, a bad URI: no probe this time (an unanswered one keeps counting)
            LOG.debug("OPTIONS probe not sent: %s", e.info())

    def on_send_request(self, prm: "pj.OnSendRequestParam") -> None:
        """``Account.onSendRequest``: a probe ended; an answer (any code) proves the path."""
        try:
            received = prm.e.body.tsxState.type == pj.PJSIP_EVENT_RX_MSG
        except Exception:  # noqa: BLE001
            received = False
        if received:
            self.state = probeplan.answered(self.state)
