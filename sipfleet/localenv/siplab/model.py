"""The SIP lab's vocabulary: its error, node and host names, and the plain records it hands out."""

from __future__ import annotations

import dataclasses
from typing import Any

from sipfleet.kubectl.fmt import percentile

NODES: tuple[str, ...] = ("P", "R", "E")
#: the scripted registrar (our own SIP responder, see .scripted_server)
SCRIPTED = "S"
#: lab hosts with a SIP listener and a wire log: the Kamailio nodes and S
SIP_HOSTS: tuple[str, ...] = (*NODES, SCRIPTED)
#: lab hosts (one netns each): the three Kamailio nodes, S and the SIPp host
HOSTS: tuple[str, ...] = (*SIP_HOSTS, "sipp")
#: host number of each lab host in its lab's /24 (see hostnet.plan)
HOST_NUMBER = {"P": 1, "R": 2, "E": 3, "S": 4, "sipp": 10}
INJECT_MODES = ("normal", "408", "503", "blackhole", "delay:<ms>")
NET_FAULTS = ("partition", "block:<ip>", "loss:<percent>:<ip>", "heal", "link-down", "link-up")


class LabError(RuntimeError):
    """The lab could not do what was asked (the message says why)."""


def node_name(node: str) -> str:
    n = str(node).strip().upper()
    if n not in NODES:
        raise LabError(f"unknown node {node!r}; one of P, R, E")
    return n


def sip_host_name(host: str) -> str:
    """A lab host with a SIP listener: P, R, E or S (any case)."""
    n = str(host).strip().upper()
    if n not in SIP_HOSTS:
        raise LabError(f"unknown SIP host {host!r}; one of P, R, E, S")
    return n


def host_name(host: str) -> str:
    """A lab host name: P, R, E, S (any case) or sipp."""
    h = str(host).strip()
    if h.upper() in SIP_HOSTS:
        return h.upper()
    if h.lower() == "sipp":
        return "sipp"
    raise LabError(f"unknown lab host {host!r}; one of P, R, E, S, sipp")


@dataclasses.dataclass(frozen=True)
class LabNode:
    name: str
    ip: str
    port: int
    pid: int | None
    running: bool
    netns: str = ""

    @property
    def hostport(self) -> str:
        return f"{self.ip}:{self.port}"


@dataclasses.dataclass(frozen=True)
class WireRecord:
    """One request as a lab node received it (S also logs CRLF keepalives, as method ``KEEPALIVE``)."""

    node: str
    at: float
    method: str
    ruri: str
    route: list[str]  # Route entries in order as received, one per URI, without the angle brackets
    src: str  # ip:port it came from
    transport: str  # "udp" | "tcp"
    call_id: str
    cseq: int
    from_uri: str
    to_uri: str
    has_auth: bool  # an Authorization / Proxy-Authorization header was present (never its value)
    dst: str = ""  # ip:port it arrived on
    contact: str = ""  # Contact header value(s) as received ("" if none)
    expires: str = ""  # Expires header value as received ("" if none)
    tls_version: str = ""  # over TLS: the negotiated protocol version (e.g. "TLSv1.2"), else ""
    tls_cipher: str = ""  # over TLS: the negotiated cipher suite (OpenSSL name), else ""
    tls_peer: str = ""  # over TLS: the CN of a client certificate the node verified, else ""
    answer: str = ""  # S only: what it answered ("200", "401", "silence", "retransmit:503", ...)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class SippResult:
    """The outcome of one bounded SIPp run."""

    returncode: int
    scenario: str
    target: str
    calls: int  # calls asked for (-m)
    successful: int
    failed: int
    final_codes: dict[str, int | str]  # call-id -> final response code (int), or "timeout"/"error:<why>"
    rtts_ms: list[float]  # response times measured by the scenario's rtd markers, in ms
    timed_out: bool  # the Python-side deadline killed SIPp
    duration_s: float
    run_dir: str
    stats: dict[str, str]  # last row of SIPp's -trace_stat CSV
    errors: list[str]  # lines of SIPp's error log (bounded)
    stdout_tail: str
    logs: list[str] = dataclasses.field(default_factory=list)  # the scenario's <log> lines (-trace_logs)
    # response times per SIPp rtd number, ms (SIPp's clock has 1 ms resolution); register.xml:
    # "1" = REGISTER -> 401, "2" = authenticated REGISTER -> 200
    rtts_by_rtd: dict[str, list[float]] = dataclasses.field(default_factory=dict)

    @property
    def codes(self) -> list[int | str]:
        return list(self.final_codes.values())

    def count(self, code: int | str) -> int:
        return sum(1 for c in self.final_codes.values() if c == code)

    def percentile_ms(self, p: float) -> float | None:
        return percentile(self.rtts_ms, p)
