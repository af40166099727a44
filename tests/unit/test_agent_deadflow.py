"""The dead-flow socket options (pure): the kernel closes a TCP/TLS connection that acknowledges nothing for the
bound, within pjsip's four options per transport."""

from __future__ import annotations

import socket

from sipfleet_agent.worker import deadflow


def test_a_bound_becomes_keepalive_probes_and_a_user_timeout():
    opts = dict(((level, name), value) for level, name, value in deadflow.socket_options(30))
    assert opts == {(socket.SOL_SOCKET, socket.SO_KEEPALIVE): 1, (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE): 10,
                    (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL): 5, (socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT): 30000}
    assert len(deadflow.socket_options(3600)) <= deadflow.MAX_OPTIONS
    short = dict(((lv, n), v) for lv, n, v in deadflow.socket_options(2))
    assert short[(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)] == 1 and short[(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL)] == 1
    assert deadflow.socket_options(0) == []


def test_the_kernel_takes_them():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        for level, name, value in deadflow.socket_options(12):
            s.setsockopt(level, name, value)
            assert s.getsockopt(level, name) == value
