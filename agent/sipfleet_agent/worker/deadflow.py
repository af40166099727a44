"""Dead-flow detection for the TCP and TLS transports: the kernel's keep-alive, bounded by ``TCP_USER_TIMEOUT``.

Pure: no pjsua2. pjsip sends a CRLF keep-alive on an idle TCP/TLS connection only every 90 s
(``PJSIP_TCP_KEEP_ALIVE_INTERVAL``) and never waits for an answer to it, so a dead path (a partitioned proxy, a
lost link, a NAT that forgot the flow) was noticed only when a refresh timed out, up to a whole expiry later. With
these socket options on every TCP/TLS socket of a worker (pjsip applies a transport's ``sockopt_params`` to the
connections it opens, ``sip_transport_tcp.c`` and ``ssl_sock_ossl.c``), the kernel probes an idle connection
after ``seconds / 3`` and closes it once nothing from the peer was acknowledged for ``seconds``
(``TCP_USER_TIMEOUT``, which also bounds data left unacknowledged). pjsip then reports the transport
disconnected, and the agent's retrier re-registers at once (``firstRetryIntervalSeconds``, reason
``TransportLost``) instead of at the next refresh. A dead path is noticed within ``seconds`` to
``seconds * 4 / 3`` of its last sign of life.

pjsip takes at most ``PJ_MAX_SOCKOPT_PARAMS`` (4) options per transport: ``SO_KEEPALIVE``, ``TCP_KEEPIDLE``,
``TCP_KEEPINTVL`` and ``TCP_USER_TIMEOUT`` (with a user timeout the probe count does not matter: Linux closes on
the timeout). UDP has no connection to watch: :mod:`.flowprobe` probes it with OPTIONS instead (opt-in).
"""

from __future__ import annotations

import socket

#: pjsip's PJ_MAX_SOCKOPT_PARAMS
MAX_OPTIONS = 4


def socket_options(seconds: int) -> list[tuple[int, int, int]]:
    """``(level, option, value)`` for a dead-flow bound of ``seconds`` (0: none, the kernel's defaults)."""
    if seconds <= 0:
        return []
    idle = max(1, seconds // 3)
    interval = max(1, seconds // 6)
    return [
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
        (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle),
        (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval),
        (socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, seconds * 1000),
    ]
