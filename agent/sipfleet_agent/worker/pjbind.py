"""The pjsua2 subclasses, thin: every callback goes straight to its owner (the worker's
:class:`~sipfleet_agent.worker.engine.Agent`), and no exception ever reaches SWIG.
"""

from __future__ import annotations

import gc
import logging
import sys
from typing import Any

import pjsua2 as pj

LOG = logging.getLogger("sipfleet_agent")


def release(obj: Any) -> None:
    """Make sure the caller's reference is the last one, so ``del`` destroys the C++ object at once.

    A full ``gc.collect()`` costs tens of milliseconds; it only runs when something else (a reference cycle)
    still holds the object.
    """
    # getrefcount: the caller's variable + this argument + getrefcount's own argument
    if sys.getrefcount(obj) > 3:
        gc.collect()


class LogWriter(pj.LogWriter):
    def __init__(self, owner: Any):
        super().__init__()
        self.owner = owner

    def write(self, entry: "pj.LogEntry") -> None:
        try:
            self.owner.on_log(entry.level, entry.msg)
        except Exception:  # pragma: no cover - never let an exception into pjsip
            LOG.exception("log writer failed")


class Endpoint(pj.Endpoint):
    def __init__(self, owner: Any):
        super().__init__()
        self.owner = owner

    def onTransportState(self, prm: "pj.OnTransportStateParam") -> None:
        try:
            self.owner.on_transport_state(prm.state, prm.lastError, str(prm.type or ""), prm)
        except Exception:
            LOG.exception("onTransportState failed")

    def onIpChangeProgress(self, prm: "pj.OnIpChangeProgressParam") -> None:
        LOG.debug("ip change progress op=%s status=%s", prm.op, prm.status)

    def onRejectedIncomingCall(self, prm: "pj.OnRejectedIncomingCallParam") -> None:
        try:
            self.owner.calls.on_rejected(prm.statusCode)
        except Exception:
            LOG.exception("onRejectedIncomingCall failed")


class Account(pj.Account):
    def __init__(self, owner: Any, rt: Any):
        super().__init__()
        self.owner = owner
        self.rt = rt

    def onRegState(self, prm: "pj.OnRegStateParam") -> None:
        try:
            if self.rt is not None:
                self.owner.on_reg_state(self.rt, prm)
        except Exception:
            LOG.exception("onRegState failed")

    def onIncomingCall(self, prm: "pj.OnIncomingCallParam") -> None:
        try:
            self.owner.calls.on_incoming(self, prm)
        except Exception:
            LOG.exception("onIncomingCall failed")

    def onSendRequest(self, prm: "pj.OnSendRequestParam") -> None:
        try:
            self.owner.probe.on_send_request(prm)
        except Exception:
            LOG.exception("onSendRequest failed")


class Call(pj.Call):
    def __init__(self, registry: Any, acc: Account, call_id: int, rt: Any):
        super().__init__(acc, call_id)
        self.registry = registry
        self.rt = rt
        self.pj_id = call_id
        self.result = "ringing"
        self.answered_at: float | None = None

    def onCallState(self, prm: "pj.OnCallStateParam") -> None:
        try:
            ci = self.getInfo()
            if ci.state == pj.PJSIP_INV_STATE_DISCONNECTED:
                self.registry.on_disconnected(self, ci.lastStatusCode)
        except Exception:
            LOG.exception("onCallState failed")

    def onCallMediaState(self, prm: "pj.OnCallMediaStateParam") -> None:
        return None  # no audio device: nothing to connect
