"""Local network changes: the worker polls the SIP address's interface (address set, link state) and calls
pjsua's ``handleIpChange`` when it changed and the link is usable (deferred while it is down; retried with
back-off while pjsua refuses with EBUSY). Listeners stay bound to their address (``restartListener`` off:
pjsip #3873 would rebind them to the wildcard address).
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import pjsua2 as pj

from ..logs import log
from ..netaddr import address_fingerprint, describe_change, link_usable

LOG = logging.getLogger("sipfleet_agent")


class NetWatch:
    def __init__(self, address: str, poll_s: float, *, endpoint: Callable[[], Any], call_later: Callable,
                 stopping: Callable[[], bool], metrics: Any):
        self.address = address
        self.poll_s = poll_s
        self.endpoint = endpoint
        self.call_later = call_later
        self.stopping = stopping
        self.metrics = metrics
        self.fp: tuple | None = address_fingerprint(address)
        self.retries = 0

    def poll(self) -> None:
        if self.stopping():
            return
        fp = address_fingerprint(self.address)
        if self.fp is not None and fp != self.fp:
            why = describe_change(self.fp, fp)
            before, self.fp = self.fp, fp
            if link_usable(fp):
                log(LOG, logging.WARNING, f"local {why.split('-')[0]} change detected", before=str(before), after=str(fp))
                self.ip_change(why)
            else:
                log(LOG, logging.WARNING, "local link lost: handleIpChange when it is back", before=str(before),
                    after=str(fp))
        self.fp = fp
        self.call_later(self.poll_s, self.poll)

    def ip_change(self, why: str) -> None:
        ep = self.endpoint()
        if ep is None or self.stopping():
            return
        if not link_usable(address_fingerprint(self.address)):
            self.retries = 0  # the poll calls it again when the link is back
            log(LOG, logging.INFO, "handleIpChange deferred: the link is down", why=why)
            return
        prm = pj.IpChangeParam()
        prm.restartListener = False
        try:
            ep.handleIpChange(prm)
            self.retries = 0
            self.metrics.ip_changes.inc()
            log(LOG, logging.INFO, "handleIpChange called", why=why)
        except pj.Error as e:  # PJ_EBUSY: a previous IP change is still in progress
            self.retries += 1
            delay = min(5.0, 0.2 * (2 ** min(self.retries, 5)))
            log(LOG, logging.WARNING, "handleIpChange refused, retrying", why=why, error=e.info(), retry_in_s=delay)
            if self.retries <= 20:
                self.call_later(delay, self.ip_change, why)
