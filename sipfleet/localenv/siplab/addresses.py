"""The lab's SIP addresses and URIs, derived from its lab slot (a mixin of :class:`SipLab`).

P, R and E listen on ``10.213.(200+l).1/.2/.3`` port ``port`` (UDP and TCP); P and E are loose routers
(``;lr``), R is the registrar. With the lab down, the addresses of its last network are given (for its logs).
"""

from __future__ import annotations

from .model import LabError, node_name
from .topology import Topology


class LabAddresses:
    """Needs ``topology``, ``port``, ``domain`` and ``service_route_transport`` on the instance."""

    topology: Topology
    port: int
    domain: str
    service_route_transport: str

    @property
    def slot(self) -> int | None:
        """The lab slot (None until the lab has been up)."""
        return self.topology.slot

    @property
    def subnet(self) -> str:
        """``10.213.(200+slot)``: the first three octets of every lab address (of the last network when down)."""
        return self.topology.net.prefix

    @property
    def bridge(self) -> str:
        return self.topology.net.bridge

    def ip(self, node: str) -> str:
        return self.topology.host_ip(node_name(node))

    def netns(self, host: str) -> str:
        """The netns name of lab host ``host`` (P, R, E or sipp)."""
        return self.topology.netns(host)

    def hostport(self, node: str) -> str:
        return f"{self.ip(node)}:{self.port}"

    def _lr_uri(self, node: str, transport: str) -> str:
        t = transport.lower()
        if t not in ("udp", "tcp"):
            raise LabError(f"transport must be udp or tcp, not {transport!r}")
        return f"sip:{self.ip(node)}:{self.port};lr" + (f";transport={t}" if t != "udp" else "")

    def proxy_uri(self, transport: str = "udp") -> str:
        return self._lr_uri("P", transport)

    def edge_uri(self, transport: str = "udp") -> str:
        """E's loose-route URI: what R puts in Service-Route (with ``;transport=tcp`` for clients that reached
        P or E over TCP, unless ``service_route_transport`` pins one)."""
        return self._lr_uri("E", transport)

    def service_route(self, client_transport: str = "udp") -> str:
        """The Service-Route URI R answers a client that used ``client_transport`` at its first hop."""
        t = client_transport if self.service_route_transport == "auto" else self.service_route_transport
        return self.edge_uri(t)

    def registrar_uri(self, transport: str = "udp") -> str:
        t = transport.lower()
        return f"sip:{self.ip('R')}:{self.port}" + (f";transport={t}" if t != "udp" else "")

    def aor(self, username: str) -> str:
        return f"sip:{username}@{self.domain}"
