"""The lab's SIP addresses and URIs, derived from its lab slot (a mixin of :class:`SipLab`).

P, R, E and S listen on ``10.213.(200+l).1/.2/.3/.4`` port ``port`` (UDP and TCP) and ``port + 1`` (TLS, when the
lab has TLS); P also serves TLS with deliberately bad certificates on ``port + 2`` (a name that is not P's) and
``port + 3`` (signed by a CA nobody trusts). P and E are loose routers (``;lr``), R is the registrar, S the
scripted registrar. TLS URIs are ``sip:<ip>:<port+1>;transport=tls`` (the CRD accepts ``;transport=tls`` as
well as ``sips:``; the lab uses the first, as it does for TCP). With the lab down, the addresses of its last
network are given (for its logs).
"""

from __future__ import annotations

from .model import LabError, sip_host_name
from .topology import Topology

TLS_CERTS = {"good": 1, "wrong-name": 2, "wrong-ca": 3}  # P's TLS listeners: port offset per certificate


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

    @property
    def tls_port(self) -> int:
        return self.port + TLS_CERTS["good"]

    def ip(self, node: str) -> str:
        """The address of P, R, E or S."""
        return self.topology.host_ip(sip_host_name(node))

    def netns(self, host: str) -> str:
        """The netns name of lab host ``host`` (P, R, E, S or sipp)."""
        return self.topology.netns(host)

    def hostport(self, node: str) -> str:
        return f"{self.ip(node)}:{self.port}"

    def tls_hostport(self, node: str, cert: str = "good") -> str:
        """``ip:port`` of a TLS listener: every SIP host's good one, or P's ``wrong-name`` / ``wrong-ca`` ones."""
        if cert not in TLS_CERTS:
            raise LabError(f"cert must be one of {', '.join(TLS_CERTS)}, not {cert!r}")
        if cert != "good" and sip_host_name(node) != "P":
            raise LabError("only P serves the wrong-name and wrong-ca certificates")
        return f"{self.ip(node)}:{self.port + TLS_CERTS[cert]}"

    def lr_uri(self, node: str, transport: str = "udp", cert: str = "good") -> str:
        """A loose-route URI of P, R, E or S over ``transport`` (udp, tcp or tls)."""
        t = transport.lower()
        if t not in ("udp", "tcp", "tls"):
            raise LabError(f"transport must be udp, tcp or tls, not {transport!r}")
        if t == "tls":
            return f"sip:{self.tls_hostport(node, cert)};lr;transport=tls"
        if cert != "good":
            raise LabError("a certificate applies to transport tls only")
        return f"sip:{self.hostport(node)};lr" + (f";transport={t}" if t != "udp" else "")

    def proxy_uri(self, transport: str = "udp", cert: str = "good") -> str:
        """P's loose-route URI; over TLS ``cert`` picks P's listener with the good, ``wrong-name`` or
        ``wrong-ca`` certificate."""
        return self.lr_uri("P", transport, cert)

    def edge_uri(self, transport: str = "udp") -> str:
        """E's loose-route URI: what R puts in Service-Route (with ``;transport=tcp|tls`` for clients that
        reached P or E over TCP/TLS, unless ``service_route_transport`` pins one)."""
        return self.lr_uri("E", transport)

    def service_route(self, client_transport: str = "udp") -> str:
        """The Service-Route URI R answers a client that used ``client_transport`` at its first hop."""
        t = client_transport if self.service_route_transport == "auto" else self.service_route_transport
        return self.edge_uri(t)

    def registrar_uri(self, transport: str = "udp", node: str = "R") -> str:
        """R (or ``node``, e.g. S) as a registrar: ``sip:<ip>:<port>[;transport=tcp]``, TLS on its TLS port."""
        t = transport.lower()
        if t == "tls":
            return f"sip:{self.tls_hostport(node)};transport=tls"
        if t not in ("udp", "tcp"):
            raise LabError(f"transport must be udp, tcp or tls, not {transport!r}")
        return f"sip:{self.hostport(node)}" + (f";transport={t}" if t != "udp" else "")

    def aor(self, username: str) -> str:
        return f"sip:{username}@{self.domain}"
