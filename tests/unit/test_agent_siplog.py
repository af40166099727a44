"""Pure parsing of pjsip's message log, URI normalisation and credential scrubbing (no pjsua, no lab)."""

from __future__ import annotations

from sipfleet_agent.siplog import (
    normalize_uri,
    parse_rx_response,
    parse_tx_request,
    routes_equal,
    same_aor,
    scrub,
    service_route_from_message,
    split_header_values,
    uri_hostport,
    with_transport,
)

TX = (
    "TX 506 bytes Request msg REGISTER/cseq=52301 (tdta0x55c266812258) to UDP 127.0.20.1:5060:\n"
    "REGISTER sip:127.0.20.2:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.20.200:36381;rport;branch=z9hG4bKPjQ7\r\n"
    "Route: <sip:127.0.20.1:5060;lr>\r\n"
    "Max-Forwards: 70\r\n"
    "From: <sip:alice@lab.sipfleet.test>;tag=iOAi2771\r\n"
    "To: <sip:alice@lab.sipfleet.test>\r\n"
    "Call-ID: nfbABp2BUI5FfJ0iHHGxf6HJxVW1eEUY\r\n"
    "CSeq: 52301 REGISTER\r\n"
    "Contact: <sip:alice@127.0.20.200:36381;ob>\r\n"
    "Expires: 300\r\n"
    'Authorization: Digest username="alice", realm="lab", nonce="abc", response="0123456789abcdef"\r\n'
    "Content-Length:  0\r\n"
    "\r\n"
    "\n--end msg--"
)


def test_parse_tx_register():
    req = parse_tx_request(TX)
    assert req is not None
    assert req.method == "REGISTER"
    assert req.cseq == 52301
    assert req.transport == "udp"
    assert req.destination == "127.0.20.1:5060"
    assert req.request_uri == "sip:127.0.20.2:5060"
    assert req.route == ("sip:127.0.20.1:5060;lr",)
    assert req.call_id == "nfbABp2BUI5FfJ0iHHGxf6HJxVW1eEUY"
    assert req.from_uri == "sip:alice@lab.sipfleet.test"
    assert req.expires == 300
    assert req.tdata == "tdta0x55c266812258"


def test_parse_tx_several_route_headers_compact_forms_and_tcp():
    msg = (
        "TX 600 bytes Request msg INVITE/cseq=7 (tdta0x1) to TCP [::1]:5070:\n"
        "INVITE sip:bob@example.com SIP/2.0\r\n"
        "Route: <sip:p1.example.com;lr>, <sip:P2.example.com;LR=on>\r\n"
        "ROUTE: <sip:e.example.com;lr>\r\n"
        "f: \"Al\" <sip:alice@example.com>;tag=1\r\n"
        "i: cid-1\r\n"
        "\r\n--end msg--"
    )
    req = parse_tx_request(msg)
    assert req.method == "INVITE" and req.transport == "tcp" and req.destination == "[::1]:5070"
    assert req.route == ("sip:p1.example.com;lr", "sip:P2.example.com;LR=on", "sip:e.example.com;lr")
    assert req.from_uri == "sip:alice@example.com"
    assert req.call_id == "cid-1"


def test_non_requests_are_ignored():
    assert parse_tx_request("TX 300 bytes Response msg 200/INVITE/cseq=1 (tdta0x2) to UDP 1.2.3.4:5060:\nSIP/2.0 200 OK\r\n") is None
    assert parse_tx_request("pjsua_acc.c Registration sent") is None
    assert parse_tx_request("") is None


def test_parse_rx_response_with_service_route():
    msg = (
        "RX 450 bytes Response msg 200/REGISTER/cseq=52302 (rdata0x7f) from UDP 127.0.20.1:5060:\n"
        "SIP/2.0 200 OK\r\n"
        "Call-ID: nfb\r\n"
        "Service-Route: <sip:127.0.20.3:5060;lr>\r\n"
        "Service-Route: <sip:x.example;lr>, <sip:y.example;lr>\r\n"
        "\r\n--end msg--"
    )
    resp = parse_rx_response(msg)
    assert resp.code == 200 and resp.method == "REGISTER" and resp.cseq == 52302
    assert resp.source == "127.0.20.1:5060" and resp.call_id == "nfb"
    assert resp.service_route == ("sip:127.0.20.3:5060;lr", "sip:x.example;lr", "sip:y.example;lr")
    assert parse_rx_response(TX) is None


def test_service_route_from_whole_message():
    whole = "SIP/2.0 200 OK\r\nVia: x\r\nservice-route: <sip:127.0.20.3:5060;lr>\r\nContent-Length: 0\r\n\r\n"
    assert service_route_from_message(whole) == ["sip:127.0.20.3:5060;lr"]
    assert service_route_from_message("SIP/2.0 200 OK\r\n\r\n") == []


def test_scrub_removes_digest_credentials():
    out = scrub(TX)
    assert "0123456789abcdef" not in out
    assert "Authorization: <scrubbed>" in out
    assert "Route: <sip:127.0.20.1:5060;lr>" in out
    out = scrub('x\r\nproxy-authorization: Digest response="zz"\r\n')
    assert "zz" not in out
    assert scrub("nothing here") == "nothing here"
    assert "secretresp" not in scrub('Digest username="a", response="secretresp"')


def test_split_header_values_respects_brackets_and_quotes():
    assert split_header_values('<sip:a;x=1,2>, "B, c" <sip:b>') == ["<sip:a;x=1,2>", '"B, c" <sip:b>']


def test_normalize_uri():
    assert normalize_uri("SIP:127.0.20.1:5060;LR") == normalize_uri("sip:127.0.20.1;lr=on")
    assert normalize_uri("<sip:P.Example.COM;transport=tcp;lr>") == normalize_uri("sip:p.example.com;lr;transport=TCP")
    assert normalize_uri("sip:p;lr;transport=tcp", "tcp") == normalize_uri("sip:p;lr")
    assert normalize_uri("sip:p;lr;transport=tcp", "udp") != normalize_uri("sip:p;lr")
    assert normalize_uri("sips:p:5061;lr") == normalize_uri("sips:p;lr")
    assert normalize_uri("sip:p:5070;lr") != normalize_uri("sip:p;lr")
    assert normalize_uri("not a uri") == "not a uri"


def test_routes_equal():
    assert routes_equal(["sip:127.0.20.1:5060;lr"], ["<sip:127.0.20.1;LR=on>"])
    assert not routes_equal(["sip:127.0.20.3:5060;lr"], ["sip:127.0.20.1:5060;lr"])
    assert not routes_equal(["sip:a;lr", "sip:b;lr"], ["sip:b;lr", "sip:a;lr"])
    assert not routes_equal([], ["sip:a;lr"])
    assert routes_equal([], [])


def test_uri_helpers():
    assert uri_hostport("sip:127.0.20.1:5060;lr") == ("127.0.20.1", 5060)
    assert uri_hostport("sip:127.0.20.1;lr;transport=tls") == ("127.0.20.1", 5061)
    assert uri_hostport("sip:proxy.example.com;lr") is None
    assert with_transport("sip:p;lr", "tcp") == "sip:p;lr;transport=tcp"
    assert with_transport("sip:p;lr;transport=tcp", "tcp") == "sip:p;lr;transport=tcp"
    assert with_transport("sip:p;lr", "udp") == "sip:p;lr"
    assert same_aor("sip:alice@Lab.Test", "sip:alice@lab.test;transport=udp")
    assert not same_aor("sip:alice@lab.test", "sip:bob@lab.test")
