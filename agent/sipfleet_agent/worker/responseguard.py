"""Answers pjsua 2.15.1 must never process: seen in pjsip's receive log before the registration layer handles them.

Pure: no pjsua2, no clock. pjsua's message logger is a pjsip module of priority ``PJSIP_MOD_PRIORITY_TRANSPORT_LAYER
- 1`` (``pjsip/src/pjsua-lib/pjsua_core.c``, 2.15.1), so its ``RX`` entry for a response is written, on the
worker's one thread and synchronously through our LogWriter, before the transaction layer (priority 16) hands the
response to the registration client and ``pjsua_acc.c``'s ``update_service_route()`` copies its Service-Route URIs
into an array of ``PJSUA_ACC_MAX_PROXIES`` (8) entries. Nine or more URIs over several headers write past that
array (SIGSEGV); more than 8 in one header make it log an error and keep a stale route. Either way such an answer
is refused: :func:`check_register_response` returns a :class:`Verdict` for a 2xx to REGISTER carrying more than
8 Service-Route URIs, counted across all Service-Route headers, comma-separated values included.
"""

from __future__ import annotations

import dataclasses

from sipfleet.api.reasons import PJSUA_MAX_SERVICE_ROUTE_URIS, REGISTRAR_RESPONSE_REJECTED

from ..siplog import RxResponse, parse_rx_response


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
