"""The worker's pjsua2 Endpoint: created with no threads of its own (``threadCnt=0``: the worker's one event thread
polls it), message logging into our LogWriter, UDP+TCP on one port and TLS if it can (unverified, for accounts
without a TLS policy; a worker whose accounts bring TLS material gets its TLS transport from :func:`tls_transport`
at their first apply instead), the TCP and TLS sockets with :mod:`.deadflow`'s options, no audio device.

Promise: :func:`start` returns a started Endpoint and its transports or raises :class:`EndpointError`; pjlib's
early prints never reach fd 1; :func:`destroy` hangs up and deletes every Call before ``libDestroy``.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
from typing import Any

import pjsua2 as pj

from . import deadflow
from .pjbind import Endpoint, LogWriter

LOG = logging.getLogger("sipfleet_agent")


class EndpointError(Exception):
    pass


@dataclasses.dataclass
class Started:
    ep: Any
    transport_ids: dict
    sip_port: int
    version: str


def start(owner: Any, *, address: str, port: int, global_proxy: list[str], max_calls: int, user_agent: str,
          default_tls: bool = True, dead_flow_seconds: int = 0) -> Started:
    ep = Endpoint(owner)
    saved, devnull = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        ep.libCreate()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = False
    cfg.uaConfig.maxCalls = max_calls
    cfg.uaConfig.userAgent = user_agent
    for uri in global_proxy:
        cfg.uaConfig.outboundProxies.append(uri)
    lw = LogWriter(owner)
    cfg.logConfig.writer = lw
    cfg.logConfig.level = 4
    cfg.logConfig.consoleLevel = 4
    cfg.logConfig.msgLogging = 1
    cfg.logConfig.decor = 0
    cfg.medConfig.noVad = True
    cfg.medConfig.ecTailLen = 0
    cfg.medConfig.threadCnt = 0
    ep.libInit(cfg)
    lw.__disown__()  # libDestroy() deletes the writer: C++ owns it from here on
    ids, sip_port = _transports(ep, address, port, default_tls, dead_flow_seconds)
    ep.audDevManager().setNullDev()
    ep.libStart()
    return Started(ep, ids, sip_port, ep.libVersion().full)


def set_sock_opts(params: Any, seconds: int) -> None:
    """Fill a config's own ``SockOptParams`` (``tc.sockOptParams``, ``tc.tlsConfig.sockOptParams``) with the
    dead-flow options (:mod:`.deadflow`). pjsua2 2.15.1's ``SockOpt`` has no copy constructor: a copy keeps pointing
    at its source's value, so each element is pointed at its own value once it sits in the config's vector (and the
    config is not copied again before ``transportCreate``; pjsip clones the values then)."""
    opts = deadflow.socket_options(seconds)
    for level, name, value in opts:
        params.sockOpts.append(pj.SockOpt(level, name, value))
    for i, (_, _, value) in enumerate(opts):
        params.sockOpts[i].setOptValInt(value)


def tls_transport(ep: Any, addr: str, material: Any, proto_mask: int, dead_flow_seconds: int = 0) -> int:
    """A TLS transport (listener and connection factory) verifying servers as ``material`` says: CA, client
    certificate and key from memory buffers (nothing written to disk), only the versions of ``proto_mask``.
    Raises ``pj.Error`` when pjsip's OpenSSL refuses the material."""
    tc = pj.TransportConfig()
    tc.boundAddress, tc.publicAddress, tc.port = addr, addr, 0
    t = tc.tlsConfig
    set_sock_opts(t.sockOptParams, dead_flow_seconds)
    t.CaBuf = material.ca_pem
    if material.cert_pem:
        t.certBuf, t.privKeyBuf = material.cert_pem, material.key_pem
    t.verifyServer = bool(material.verify_server)
    t.proto = proto_mask
    return ep.transportCreate(pj.PJSIP_TRANSPORT_TLS, tc)


def _transports(ep: Any, addr: str, want: int, default_tls: bool = True,
                dead_flow_seconds: int = 0) -> tuple[dict, int]:
    last_err: Exception | None = None
    for _ in range(20):
        udp_id = None
        try:
            tc = pj.TransportConfig()
            tc.boundAddress, tc.publicAddress, tc.port = addr, addr, want
            udp_id = ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tc)
            port = int(ep.transportGetInfo(udp_id).localName.rsplit(":", 1)[1])
            tc2 = pj.TransportConfig()
            tc2.boundAddress, tc2.publicAddress, tc2.port = addr, addr, port
            set_sock_opts(tc2.sockOptParams, dead_flow_seconds)
            ids = {"udp": udp_id, "tcp": ep.transportCreate(pj.PJSIP_TRANSPORT_TCP, tc2)}
            try:
                if not default_tls:
                    return ids, port
                tc3 = pj.TransportConfig()
                tc3.boundAddress, tc3.publicAddress, tc3.port = addr, addr, 0
                set_sock_opts(tc3.tlsConfig.sockOptParams, dead_flow_seconds)
                ids["tls"] = ep.transportCreate(pj.PJSIP_TRANSPORT_TLS, tc3)
            except pj.Error as e:
                LOG.warning("no TLS transport: %s", e.info())
            return ids, port
        except pj.Error as e:
            last_err = EndpointError(e.info())
            if udp_id is not None:
                try:
                    ep.transportClose(udp_id)
                except pj.Error:
                    pass
            if want:
                break
    raise EndpointError(f"cannot bind SIP transports on {addr}:{want}: {last_err}")


def destroy(ep: Any, calls: Any, drop_accounts: Any) -> None:
    try:
        if len(calls):
            try:
                ep.hangupAllCalls()
            except pj.Error:
                pass
        calls.clear()  # a live Call after libDestroy aborts the process
        drop_accounts()
        gc.collect()
        ep.libDestroy()
    except pj.Error as e:
        LOG.error("libDestroy failed: %s", e.info())
    gc.collect()
