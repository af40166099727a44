"""Answers pjsua 2.15.1 must never process: seen in pjsip's receive log before the registration layer handles them.

Pure: no pjsua2, no clock. pjsua's message logger is a pjsip module of priority ``PJSIP_MOD_PRIORITY_TRANSPORT_LAYER
- 1`` (``pjsip/src/pjsua-lib/pjsua_core.c``, 2.15.1), so its ``RX`` entry for a response is written, on the
worker's one thread and synchronously through our LogWriter, before the transaction layer (priority 16) hands the
response to the registration client and ``pjsua_acc.c``'s ``update_service_route()`` copies its Service-Route URIs
into an array of ``PJSUA_ACC_MAX_PROXIES`` (8) entries. Nine or more URIs over several headers write past that
array (SIGSEGV); more than 8 in one header make it log an error and keep a stale route. Either way such an answer
is refused: :func:`check_register_response` returns a :class:`Verdict` for a 2xx to REGISTER carrying more than
8 Service-Route URIs, counted across all Service-Route headers, comma-separated values included.

An answer pjsip cannot parse never reaches that log: ``sip_transport.c`` logs ``Dropping N bytes packet from
PROTO ip:port : <syntax error>`` (level 2), then ``Dropped packet:<the packet>-- end of packet.`` (level 4) and
drops it; the REGISTER then times out (408 after 32 s). :func:`parse_dropping` and :func:`dropped_register_answer`
turn those two entries into a :class:`Dropped` naming the account, so the status can say what really happened.
An answer larger than pjsip's receive buffer (``PJSIP_MAX_PKT_LEN``, 4000 bytes) over TCP ends in
``endpt_on_rx_msg()`` (``sip_endpoint.c``): ``Error processing packet from ip:port: Rx buffer overflow
(PJSIP_ERXOVERFLOW) [code N]:`` and the packet (level 1); :func:`error_processing_answer` reads that one.
Over UDP the same answer is cut instead: the transport reads into that buffer (``sip_transport_udp.c``), the
kernel drops the rest of the datagram, and ``pjsip_tpmgr_receive_packet()`` parses what is left as a whole message
(a cut header line is just shorter; the headers after it are gone). Its ``RX 4000 bytes ... from UDP`` entry is
the only sign: :func:`truncated_answer` turns it into a :class:`Truncated`. A datagram of exactly 4000 bytes looks
the same, so it counts as cut too (nothing tells them apart). :func:`grant_survived` says whether the cut 2xx
still carries its grant (an Expires header, or a Contact with ``;expires=``, on a line before the cut one): then
pjsua's expiry is the registrar's and only headers past the cut (a Service-Route?) may be lost; else pjsua took the
*requested* expiry for the grant (``calculate_response_expiration()`` in ``sip_reg.c``).
"""

from __future__ import annotations

import dataclasses
import re

from sipfleet.api.reasons import (PJSIP_MAX_PKT_LEN, PJSUA_MAX_SERVICE_ROUTE_URIS, REGISTRAR_RESPONSE_OVERSIZED,
                                  REGISTRAR_RESPONSE_REJECTED, REGISTRAR_RESPONSE_TRUNCATED,
                                  REGISTRAR_RESPONSE_UNPARSABLE)

from ..siplog import RxResponse, from_header_uri, header_values, parse_rx_response

_ERROR_RE = re.compile(r"^Error processing packet from (?P<src>\S+?): (?P<why>[^\n]*?)\s*\[code -?\d+\]:\n")
_EXPIRES_PARAM_RE = re.compile(r";\s*expires\s*=\s*\d", re.I)
_DROPPING_RE = re.compile(r"^Dropping \d+ bytes packet from (?P<src>\S+ \S+)\s+:\s*(?P<why>.*?)\s*$", re.S)


@dataclasses.dataclass(frozen=True)
class Verdict:
    reason: str
    message: str
    count: int
    limit: int
    from_uri: str
    call_id: str


def is_register_2xx(entry: str) -> bool:
    """Cheap test on a log entry's first bytes: an RX 2xx response to REGISTER."""
    head = entry[:80]
    return entry.startswith("RX ") and " Response msg 2" in head and "/REGISTER/" in head


def check_register_response(resp: RxResponse, limit: int = PJSUA_MAX_SERVICE_ROUTE_URIS) -> Verdict | None:
    """A :class:`Verdict` when pjsua must not see ``resp`` (a 2xx to REGISTER with more than ``limit`` URIs)."""
    if resp.method != "REGISTER" or not 200 <= resp.code < 300:
        return None
    n = len(resp.service_route)
    if n <= limit:
        return None
    msg = (f"the registrar's {resp.code} to REGISTER (from {resp.transport}:{resp.source}) carried {n} Service-Route "
           f"URIs; pjsua 2.15.1 holds at most {limit} (PJSUA_ACC_MAX_PROXIES) and crashes on more: answer refused")
    return Verdict(REGISTRAR_RESPONSE_REJECTED, msg, n, limit, resp.from_uri, resp.call_id)


def check_log_entry(entry: str, limit: int = PJSUA_MAX_SERVICE_ROUTE_URIS) -> Verdict | None:
    """:func:`check_register_response` on one pjsip log entry (None for anything but an RX 2xx to REGISTER)."""
    if not is_register_2xx(entry):
        return None
    resp = parse_rx_response(entry)
    return check_register_response(resp, limit) if resp is not None else None


@dataclasses.dataclass(frozen=True)
class Truncated:
    code: int
    cseq: int
    call_id: str
    from_uri: str
    source: str  # "UDP ip:port"
    length: int
    reason: str = REGISTRAR_RESPONSE_TRUNCATED

    @property
    def message(self) -> str:
        return (f"the registrar's {self.code} to REGISTER (from {self.source}) filled pjsip's {self.length}-byte UDP "
                f"receive buffer (PJSIP_MAX_PKT_LEN) and was cut there: what it granted (Expires, Service-Route) is "
                f"unknown; a registrar answer this large needs to be smaller (pjsip drops it over TCP)")

    @property
    def note(self) -> str:
        """The remark on a registration whose grant survived the cut."""
        return (f"answer cut at pjsip's {self.length}-byte UDP receive buffer (PJSIP_MAX_PKT_LEN): the grant "
                f"survived, headers past the cut (a Service-Route?) are lost")

    def answers(self, info: str, whole_msg: str) -> bool:
        """This is the answer pjsua's ``onRegState`` reports (``rdata.info``: ``Response msg 200/REGISTER/cseq=N
        ...``, ``rdata.wholeMsg``: the message)."""
        return f"/cseq={self.cseq} " in info and bool(self.call_id) and self.call_id in whole_msg


def truncated_answer(resp: RxResponse, limit: int = PJSIP_MAX_PKT_LEN) -> Truncated | None:
    """A :class:`Truncated` when ``resp`` (a response to REGISTER) came over UDP and filled the receive buffer."""
    if resp.method != "REGISTER" or resp.transport.rstrip("6") != "udp" or resp.length < limit:
        return None
    return Truncated(resp.code, resp.cseq, resp.call_id, resp.from_uri, f"UDP {resp.source}", resp.length)


def grant_survived(whole_msg: str) -> bool:
    """A cut answer (``rdata.wholeMsg``) still says what it granted: an Expires header or a Contact with an expires
    parameter on a whole line (the last line of a cut message is itself cut: ``Expires: 3`` may have been 3600)."""
    lines = [ln.rstrip("\r") for ln in whole_msg.split("\n")][1:-1]
    hdrs = header_values(lines, {"expires", "contact"})
    return bool(hdrs.get("expires")) or any(_EXPIRES_PARAM_RE.search(c) for c in hdrs.get("contact", []))


@dataclasses.dataclass(frozen=True)
class Dropped:
    code: int
    from_uri: str
    call_id: str
    source: str  # "UDP ip:port"
    why: str  # pjsip's syntax error text
    reason: str = REGISTRAR_RESPONSE_UNPARSABLE

    @property
    def message(self) -> str:
        what = "too large for its receive buffer" if self.reason == REGISTRAR_RESPONSE_OVERSIZED else "unparsable"
        return (f"the registrar answered {self.code} to REGISTER (from {self.source}) but pjsip dropped the answer "
                f"as {what}: {self.why}")


def parse_dropping(entry: str) -> tuple[str, str] | None:
    """(source, why) of pjsip's ``Dropping N bytes packet from ...`` entry, else None."""
    m = _DROPPING_RE.match(entry) if entry.startswith("Dropping ") else None
    return (m.group("src"), m.group("why")) if m else None


def dropped_register_answer(entry: str, dropping: tuple[str, str] | None) -> Dropped | None:
    """A :class:`Dropped` when ``entry`` is pjsip's ``Dropped packet:`` dump of a response to REGISTER;
    ``dropping``: what :func:`parse_dropping` made of the entry just before it."""
    if not entry.startswith("Dropped packet:"):
        return None
    src, why = dropping or ("?", "unparsable")
    return _register_answer(entry[len("Dropped packet:"):], src, why, REGISTRAR_RESPONSE_UNPARSABLE)


def error_processing_answer(entry: str) -> Dropped | None:
    """A :class:`Dropped` when ``entry`` is pjsip's ``Error processing packet`` report of a response to REGISTER."""
    m = _ERROR_RE.match(entry) if entry.startswith("Error processing packet from ") else None
    if m is None:
        return None
    why = m.group("why").strip()
    reason = REGISTRAR_RESPONSE_OVERSIZED if "ERXOVERFLOW" in why else REGISTRAR_RESPONSE_UNPARSABLE
    return _register_answer(entry[m.end():], m.group("src"), why, reason)


def _register_answer(pkt: str, src: str, why: str, reason: str) -> Dropped | None:
    end = pkt.rfind("-- end of packet.")
    lines = [ln.rstrip("\r") for ln in (pkt[:end] if end >= 0 else pkt).split("\n")]
    start = lines[0].split(" ") if lines else []
    if len(start) < 2 or not start[0].startswith("SIP/") or not start[1].isdigit():
        return None
    hdrs = header_values(lines[1:], {"cseq", "from", "call-id"})
    cseq = hdrs.get("cseq", [""])[0].split()
    if len(cseq) != 2 or cseq[1].upper() != "REGISTER":
        return None
    return Dropped(int(start[1]), from_header_uri(hdrs.get("from", [""])[0]), hdrs.get("call-id", [""])[0], src, why, reason)
