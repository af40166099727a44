"""The cluster's network against the real kernel: the node bridge keeps its address while pods come and go.

A Linux bridge created without a MAC of its own takes the lowest MAC of its ports, and takes another one when a
port with a lower MAC joins or the lowest one leaves. Pods' veths are ports of ``cbr0``, so every pod created or
deleted could move the node address's MAC; the host (and every pod) kept sending to the MAC it had resolved,
and those frames are dropped (delivered up as not for this host, or flooded to nobody) until its neighbour entry
expires: the apiserver's clients stalled for up to ~50 s after a pod was replaced.

The test builds the cluster's real network (``cluster.network.build``: netns, ``cbr0``, the host's veth), adds
and removes "pod" ports with low MACs the way the CNI bridge plugin does, and connects from the host to a TCP
listener on the node address after each step. Nothing here measures how fast anything is: each connect either
completes or is refused by its timeout.
"""

from __future__ import annotations

import socket
import uuid

import pytest

from sipfleet.localenv import hostnet
from sipfleet.localenv.cluster import network

CONNECT_TIMEOUT_S = 5.0  # generous: a working path answers at once, a broken one never (neighbour entries live 15-45 s)


def _bridge_mac(netns: str) -> str:
    return str(hostnet.link("cbr0", netns)["address"])


def _connect(node_ip: str, port: int, listener: socket.socket) -> None:
    with socket.create_connection((node_ip, port), timeout=CONNECT_TIMEOUT_S):
        conn, _ = listener.accept()
        conn.close()


def _pod_port(netns: str, name: str, mac: str) -> None:
    """A veth whose one end (MAC ``mac``) is a port of cbr0, as the CNI bridge plugin attaches a pod."""
    hostnet.ip("link", "add", name, "address", mac, "type", "veth", "peer", "name", f"{name}p", netns=netns)
    hostnet.ip("link", "set", name, "master", "cbr0", netns=netns)
    hostnet.ip("link", "set", name, "up", netns=netns)
    hostnet.ip("link", "set", f"{name}p", "up", netns=netns)


def test_the_node_bridge_keeps_its_mac_and_the_host_its_path_while_pod_ports_come_and_go(tmp_path):
    owned = hostnet.Owned(tmp_path / "net.json", "test")
    name = f"pytest-{uuid.uuid4().hex[:6]}"
    with hostnet.slot_lock():
        net = network.pick_slot(name, None)
        network.build(owned, net)
    listener, steps = None, ["built"]
    try:
        assert _bridge_mac(net.netns) == net.bridge_mac
        listener = hostnet.in_netns(net.netns, lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        listener.bind((net.node_ip, 0))
        listener.listen(8)
        listener.settimeout(CONNECT_TIMEOUT_S)
        port = listener.getsockname()[1]

        _pod_port(net.netns, "sftpoda", "02:00:00:00:00:02")  # a pod whose veth has a lower MAC than any port
        steps.append("pod a joined")
        _connect(net.node_ip, port, listener)  # the host resolves the node address now
        _pod_port(net.netns, "sftpodb", "02:00:00:00:00:01")  # an even lower one
        steps.append("pod b joined")
        _connect(net.node_ip, port, listener)
        hostnet.ip("link", "delete", "sftpodb", netns=net.netns)
        steps.append("pod b left")
        _connect(net.node_ip, port, listener)
        hostnet.ip("link", "delete", "sftpoda", netns=net.netns)
        steps.append("pod a left")
        _connect(net.node_ip, port, listener)
        assert _bridge_mac(net.netns) == net.bridge_mac, steps
        neigh = [n for n in hostnet.ip_json("neigh", "show", "dev", net.host_link) if n.get("dst") == net.node_ip]
        assert [n.get("lladdr") for n in neigh] == [net.bridge_mac]
    except (TimeoutError, OSError) as e:
        pytest.fail(f"host -> node address {net.node_ip} broke after {steps[-1]!r} (cbr0 now "
                    f"{_bridge_mac(net.netns)}): {e}")
    finally:
        if listener is not None:
            listener.close()  # a socket keeps its netns alive
        assert owned.teardown() == []
