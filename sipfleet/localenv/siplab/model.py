"""The SIP lab's vocabulary: its error, node and host names, and the plain records it hands out."""

from __future__ import annotations

import dataclasses
from typing import Any

NODES: tuple[str, ...] = ("P", "R", "E")
#: lab hosts (one netns each): the three Kamailio nodes and the SIPp host
HOSTS: tuple[str, ...] = ("P", "R", "E", "sipp")
#: host number of each lab host in its lab's /24 (see hostnet.plan)
HOST_NUMBER = {"P": 1, "R": 2, "E": 3, "sipp": 10}
INJECT_MODES = ("normal", "408", "503", "blackhole", "delay:<ms>")
NET_FAULTS = ("partition", "block:<ip>", "loss:<percent>:<ip>", "heal", "link-down", "link-up")


class LabError(RuntimeError):
    """The lab could not do what was asked (the message says why)."""


def node_name(node: str) -> str:
    n = str(node).strip().upper()
    if n not in NODES:
        raise LabError(f"unknown node {node!r}; one of P, R, E")
    return n


def host_name(host: str) -> str:
    """A lab host name: P, R, E (any case) or sipp."""
    h = str(host).strip()
    if h.upper() in NODES:
        return h.upper()
    if h.lower() == "sipp":
        return "sipp"
    raise LabError(f"unknown lab host {host!r}; one of P, R, E, sipp")


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
    """One request as a lab node received it."""

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


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * (len(s) - 1)))))
    return s[k]
