"""Hostile registrar answers, pure parts: Service-Route URIs counted on pjsip receive-log entries (the format of
``logging_on_rx_msg()`` in pjsua_core.c, 2.15.1) and the quarantine back-off."""

from __future__ import annotations

import pytest

from sipfleet.api.reasons import PJSUA_MAX_SERVICE_ROUTE_URIS, REGISTRAR_RESPONSE_REJECTED
from sipfleet_agent.supervisor.quarantine import QuarantinePolicy, forget, held, isolate, on_reject
from sipfleet_agent.worker import responseguard as g


def rx(service_routes: list[str], code: str = "200 OK", method: str = "REGISTER", compact_from: bool = False,
       length: int | None = None, proto: str = "UDP") -> str:
    srs = "".join(f"Service-Route: {v}\r\n" for v in service_routes)
    frm = "f" if compact_from else "From"
    msg = (f"SIP/2.0 {code}\r\n"
           "Via: SIP/2.0/UDP 10.213.201.100:5070;rport=5070;received=10.213.201.100;branch=z9hG4bKPj1\r\n"
           f"{frm}: <sip:alice@lab.sipfleet.test>;tag=abc\r\n"
           "To: <sip:alice@lab.sipfleet.test>;tag=s1\r\n"
           "Call-ID: 5d3c2b1a\r\n"
           f"CSeq: 4711 {method}\r\n"
           "Contact: <sip:alice@10.213.201.100:5070;ob>;expires=300\r\n"
           f"{srs}Expires: 300\r\nContent-Length: 0\r\n\r\n")
    n = code.split()[0]
    return (f"RX {length or len(msg)} bytes Response msg {n}/{method}/cseq=4711 (rdata0x7f4c2c000b58) from {proto} "
            f"10.213.201.4:5060:\n{msg}\n--end msg--")


def sr(i: int) -> str:
    return f"<sip:10.213.201.3:5060;lr;srn={i}>"


@pytest.mark.parametrize("n", [0, 1, 8])
def test_up_to_eight_service_route_uris_pass(n):
    assert g.check_log_entry(rx([sr(i) for i in range(n)])) is None


@pytest.mark.parametrize("n", [9, 10, 16])
def test_more_than_eight_in_separate_headers_are_refused(n):
    v = g.check_log_entry(rx([sr(i) for i in range(n)]))
    assert v is not None and v.count == n and v.limit == PJSUA_MAX_SERVICE_ROUTE_URIS == 8
    assert v.reason == REGISTRAR_RESPONSE_REJECTED and f"{n} Service-Route URIs" in v.message and "8" in v.message
    assert v.from_uri == "sip:alice@lab.sipfleet.test" and v.call_id == "5d3c2b1a"


def test_uris_are_counted_across_headers_and_comma_separated_values():
    five = ", ".join(sr(i) for i in range(5))
    four = ", ".join(sr(i) for i in range(5, 9))
    v = g.check_log_entry(rx([five, four], compact_from=True))
    assert v is not None and v.count == 9 and v.from_uri == "sip:alice@lab.sipfleet.test"
    assert g.check_log_entry(rx([five, ", ".join(sr(i) for i in range(5, 8))])) is None
    # a comma inside <...> or quotes is no separator
    assert g.check_log_entry(rx(['"a, b" <sip:x;lr>'] * 8)) is None


def test_only_2xx_to_register_is_checked():
    many = [sr(i) for i in range(10)]
    assert g.check_log_entry(rx(many, code="401 Unauthorized")) is None
    assert g.check_log_entry(rx(many, method="INVITE")) is None
    assert g.check_log_entry(rx(many, code="202 Accepted")) is not None
    tx = rx(many).replace("RX ", "TX ", 1)
    assert g.check_log_entry(tx) is None


def test_quarantine_doubles_is_capped_and_is_forgotten_after_a_clean_stretch():
    pol = QuarantinePolicy(base_s=30, max_s=100, forget_s=600)
    e1 = on_reject(pol, None, 1000.0, "R", "m")
    assert (e1.strikes, e1.until) == (1, 1030.0)
    assert held({"k": e1}, 1029.9) == {"k"} and held({"k": e1}, 1030.0) == set()
    assert not isolate(e1, 1029.0) and isolate(e1, 1030.0) and not isolate(None, 1030.0)
    e2 = on_reject(pol, e1, 1040.0, "R", "m")
    e3 = on_reject(pol, e2, 1200.0, "R", "m")
    e4 = on_reject(pol, e3, 1400.0, "R", "m")
    assert [e.until - t for e, t in ((e2, 1040.0), (e3, 1200.0), (e4, 1400.0))] == [60.0, 100.0, 100.0]
    assert e4.strikes == 4
    assert forget(pol, {"k": e4}, e4.until + 599) == {"k": e4} and forget(pol, {"k": e4}, e4.until + 600) == {}
    fresh = on_reject(pol, e4, e4.until + 600, "R", "m")
    assert fresh.strikes == 1 and fresh.until - (e4.until + 600) == 30.0


# ---------------------------------------------------------------------------------------------- short expiries

from datetime import datetime, timezone  # noqa: E402

from sipfleet_agent.worker import refreshplan as rp  # noqa: E402


def test_pjsip_refresh_delay_wraps_below_the_accounts_delay_and_is_at_least_five_seconds():
    assert rp.pjsip_refresh_delay(300, 5) == 295
    assert rp.pjsip_refresh_delay(1, 5) is None and rp.pjsip_refresh_delay(4, 5) is None  # 2**32 - 4: ~136 years
    assert rp.pjsip_refresh_delay(5, 5) == 5 and rp.pjsip_refresh_delay(1, 1) == 5 and rp.pjsip_refresh_delay(4, 1) == 5
    assert rp.delay_before_refresh(300) == 5 and rp.delay_before_refresh(5) == 1 and rp.delay_before_refresh(12) == 3


@pytest.mark.parametrize("granted,dbr,own", [
    (1, 5, 0.5), (4, 5, 2.0), (5, 5, 2.5), (1, 1, 0.5), (4, 1, 2.0), (5, 1, 2.5),  # at or below the 5 s margin
    (6, 5, None), (10, 1, None), (300, 5, None), (3600, 5, None),  # pjsip refreshes before the expiry
    (0, 5, None),  # nothing granted
])
def test_own_refresh_at_half_the_grant_when_pjsip_would_be_late_or_never(granted, dbr, own):
    assert rp.own_refresh_delay(granted, dbr) == own


def test_expires_at_is_the_grant_time_plus_the_granted_expiry_and_lapse_needs_the_same_grant():
    t = datetime(2026, 12, 2, 16, 0, 0, 250000, tzinfo=timezone.utc)
    assert rp.expires_at(t, 4) == "2026-12-02T16:00:04.250Z"
    assert rp.lapsed("Registered", 7, 7) and not rp.lapsed("Registered", 8, 7) and not rp.lapsed("Failed", 7, 7)


# ---------------------------------------------------------------------------------------------- unparsable answers

# the two entries pjsip 2.15.1 (sip_transport.c) logged for S's "200 bad-contact" in the lab (level 2, then 4)
DROPPING = ("Dropping 456 bytes packet from UDP 10.213.201.1:5060 : PJSIP syntax error exception when parsing "
            "'Contact' header on line 7 col 0\n")
DROPPED = ("Dropped packet:SIP/2.0 200 OK\r\n"
           "Via: SIP/2.0/UDP 10.213.201.100:57433;rport=57433;received=10.213.201.100;branch=z9hG4bKPj2\r\n"
           "From: <sip:probe1@lab.sipfleet.test>;tag=t1\r\nTo: <sip:probe1@lab.sipfleet.test>;tag=s1\r\n"
           "Call-ID: c-1\r\nCSeq: 2 REGISTER\r\n"
           "Contact: <sip:siplab-bad-contact@10.213.201.4:5060;expires=300\r\nContent-Length: 0\r\n\r\n"
           "\n-- end of packet.")


def test_a_dropped_answer_to_register_names_its_account_and_pjsips_reason():
    src_why = g.parse_dropping(DROPPING)
    assert src_why == ("UDP 10.213.201.1:5060", "PJSIP syntax error exception when parsing 'Contact' header on line 7 col 0")
    d = g.dropped_register_answer(DROPPED, src_why)
    assert d is not None and (d.code, d.from_uri, d.call_id) == (200, "sip:probe1@lab.sipfleet.test", "c-1")
    assert "answered 200 to REGISTER (from UDP 10.213.201.1:5060)" in d.message and "'Contact' header" in d.message
    assert g.dropped_register_answer(DROPPED.replace("2 REGISTER", "2 INVITE"), src_why) is None
    assert g.dropped_register_answer(DROPPED.replace("SIP/2.0 200 OK", "INVITE sip:x SIP/2.0"), src_why) is None
    assert g.dropped_register_answer(DROPPING, None) is None and g.parse_dropping(DROPPED) is None


# ---------------------------------------------------------------------------------------------- crash attribution

from sipfleet_agent.supervisor.attribution import suspect  # noqa: E402


def test_a_crash_is_blamed_only_in_a_loop_on_a_fresh_breadcrumb_and_a_crash_signal():
    crumb = (("ns", "a1"), 100.0)
    assert suspect(-11, crumb, 100.5, failures=2) == ("ns", "a1")
    assert suspect(-6, crumb, 101.9, failures=5) == ("ns", "a1")
    assert suspect(-11, crumb, 100.5, failures=1) is None  # not a loop yet
    assert suspect(-11, crumb, 102.5, failures=2) is None  # the breadcrumb is stale
    assert suspect(-9, crumb, 100.5, failures=2) is None and suspect(-15, crumb, 100.5, failures=2) is None
    assert suspect(1, crumb, 100.5, failures=2) is None and suspect(None, crumb, 100.5, failures=2) is None
    assert suspect(-11, None, 100.5, failures=2) is None


# pjsip 2.15.1's report (sip_endpoint.c, level 1) of S's "200 pad=4100" over TCP in the lab
OVERFLOW = ("Error processing packet from 10.213.203.4:5060: Rx buffer overflow (PJSIP_ERXOVERFLOW)  [code 171062]:\n"
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP 10.213.203.100:57743;rport=57743;branch=z9hG4bKPjn8;alias\r\n"
            "From: <sip:probe2@lab.sipfleet.test>;tag=Y1\r\nTo: <sip:probe2@lab.sipfleet.test>;tag=s2\r\n"
            "Call-ID: c-2\r\nCSeq: 7 REGISTER\r\nX-Siplab-Pad: xxxxxxxx\n-- end of packet.")


def test_an_answer_too_large_for_pjsips_buffer_is_oversized_not_a_timeout():
    d = g.error_processing_answer(OVERFLOW)
    assert d is not None and d.reason == "RegistrarResponseOversized" and (d.code, d.call_id) == (200, "c-2")
    assert d.from_uri == "sip:probe2@lab.sipfleet.test" and d.source == "10.213.203.4:5060"
    assert "too large for its receive buffer" in d.message and "PJSIP_ERXOVERFLOW" in d.message
    other = OVERFLOW.replace("Rx buffer overflow (PJSIP_ERXOVERFLOW)", "Missing required header(s) (PJSIP_EMISSINGHDR)")
    assert g.error_processing_answer(other).reason == "RegistrarResponseUnparsable"
    assert g.error_processing_answer(OVERFLOW.replace("7 REGISTER", "7 OPTIONS")) is None
    assert g.error_processing_answer(DROPPING) is None


# ---------------------------------------------------------------------------------------------- cut at 4000 bytes

from sipfleet_agent.siplog import parse_rx_response  # noqa: E402


def test_an_answer_filling_pjsips_udp_buffer_is_truncated():
    cut = g.truncated_answer(parse_rx_response(rx([], length=4000)))
    assert cut is not None and cut.reason == "RegistrarResponseTruncated" and cut.length == 4000
    assert (cut.code, cut.cseq, cut.call_id, cut.source) == (200, 4711, "5d3c2b1a", "UDP 10.213.201.4:5060")
    assert cut.from_uri == "sip:alice@lab.sipfleet.test"
    assert "4000-byte UDP receive buffer" in cut.message and "unknown" in cut.message
    assert g.truncated_answer(parse_rx_response(rx([], length=4000, proto="UDP6"))) is not None
    assert g.truncated_answer(parse_rx_response(rx([], code="401 Unauthorized", length=4000))).code == 401
    # shorter, over a stream (a complete message; a longer one is pjsip's overflow), or not about REGISTER
    assert g.truncated_answer(parse_rx_response(rx([], length=3999))) is None
    assert g.truncated_answer(parse_rx_response(rx([], length=4000, proto="TCP"))) is None
    assert g.truncated_answer(parse_rx_response(rx([], method="OPTIONS", length=4000))) is None
    # it is matched to the onRegState pjsua reports next by CSeq and Call-ID (a challenge pjsip answered is not)
    info = "Response msg 200/REGISTER/cseq=4711 (rdata0x7f4c2c000b58)"
    assert cut.answers(info, "SIP/2.0 200 OK\r\nCall-ID: 5d3c2b1a\r\n")
    assert not cut.answers(info.replace("4711", "4712"), "Call-ID: 5d3c2b1a")
    assert not cut.answers(info, "Call-ID: other") and not cut.answers("", "")


def test_a_cut_2xx_keeps_its_grant_only_on_whole_lines():
    head = "SIP/2.0 200 OK\r\nCall-ID: c\r\n"
    assert g.grant_survived(head + "Expires: 60\r\nX-Big: bbbb")
    assert g.grant_survived(head + "m: <sip:a@10.0.0.1:5070>;expires=60\r\nX-Big: bbbb")
    assert not g.grant_survived(head + "X-Big: bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb")  # cut before Contact, Expires
    assert not g.grant_survived(head + "Contact: <sip:a@10.0.0.1:5070>\r\nX-Big: bbbb")  # no expires in it
    assert not g.grant_survived(head + "X-Big: bbbb\r\nExpires: 3")  # the cut line itself: 3 may have been 3600
