"""The scripted registrar's pure parts: answers and scripts, the sequence, responses, SIP parsing, digest, the
wire line it writes, and the lab's TLS files and Kamailio tls.cfg."""

from __future__ import annotations

import pytest

from sipfleet.localenv.siplab import LabError, parse_wire_line
from sipfleet.localenv.siplab.answers import Answer, AnswerError, Script, Sequencer, decide, make_script, parse_answer
from sipfleet.localenv.siplab.respond import Context, granted, is_unregister, render
from sipfleet.localenv.siplab.sipmsg import (SipParseError, authorization, digest_valid, frame, header_param,
                                             header_uri, md5, parse, parse_digest, split_list)
from sipfleet.localenv.siplab.wire import format_wire_line

REQ = (
    "REGISTER sip:10.213.201.4:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 10.213.201.100:5070;branch=z9hG4bKabc;rport\r\n"
    "Via: SIP/2.0/UDP 10.213.201.1:5060;branch=z9hG4bKp1\r\n"
    "From: \"A\" <sip:u@lab.sipfleet.test>;tag=1\r\n"
    "t: <sip:u@lab.sipfleet.test>\r\n"
    "i: cid-1\r\n"
    "CSeq: 7 REGISTER\r\n"
    "Contact: <sip:u@10.213.201.100:5070;transport=udp>;+sip.instance=\"<urn:x>\";expires=600\r\n"
    "Expires: 300\r\n"
    "Content-Length: 0\r\n\r\n"
)
CTX = Context("udp", "10.213.201.100", 5070, "tt", realm="lab.sipfleet.test", nonce="n1",
              targets={h: f"10.213.201.{i}:5060" for h, i in (("P", 1), ("R", 2), ("E", 3), ("S", 4))},
              tls_targets={h: f"10.213.201.{i}:5061" for h, i in (("P", 1), ("R", 2), ("E", 3), ("S", 4))},
              edge="10.213.201.3:5060")


def _resp(text: str, req: str = REQ, ctx: Context = CTX, **kw):
    return parse(render(parse(req.encode()), parse_answer(text), ctx, **kw))


# ---------------------------------------------------------------------------------------------- answers


@pytest.mark.parametrize("text", [
    "200", "200 expires=60 sr=2", "200 sr=10 sr-style=one", "403 auth=401", "200 auth=407 bad-digest=403",
    "423 min-expires=600", "503 retry-after=30", "302 contact=R", "302 contact=self", "silence", "200 delay=5000",
    "200 big-header=8192", "200 big-header=4100 big-header-at=start", "200 pad=4100", "200 bad-contact", "200 expires=0", "600", "480 count=3",
    "200 'reason=All fine' 'header=X-A: b c' sr-uri=sip:10.213.201.3;lr",
])
def test_answer_text_round_trips(text):
    a = parse_answer(text)
    assert parse_answer(a.to_text()) == a
    assert Answer(**{k: tuple(v) if isinstance(v, list) else v for k, v in a.to_dict().items()}) == a


@pytest.mark.parametrize("bad", [
    "", "ok", "99", "700", "302", "302 contact=elsewhere", "200 contact=R", "200 auth=402", "silence auth=401",
    "200 sr=65", "200 delay=-1", "200 pad=70000", "200 count=0", "200 nokey=1", "200 expires=x", "200 flag",
    "200 'header=no colon'", "200 sr-style=many", "200 big-header-at=middle",
])
def test_bad_answers_are_refused(bad):
    with pytest.raises(AnswerError):
        parse_answer(bad)


def test_script_round_trips_and_needs_a_step():
    sc = make_script(["503 retry-after=30", 200, {"code": 403, "auth": 401}], scope="aor", options="silence")
    assert Script.from_dict(sc.to_dict()) == sc
    assert Script.from_dict({}) == Script()  # the default: 200 to everything
    with pytest.raises(AnswerError):
        make_script([])
    with pytest.raises(AnswerError):
        make_script([200], scope="per-call")


def test_sequence_moves_on_and_keeps_the_last_step():
    seq = Sequencer(make_script(["503 retry-after=30", "480 count=2", "200"]))
    got = []
    for _ in range(6):
        got.append(seq.current("sip:a@d")[1].code)
        seq.consume("sip:a@d")
    assert got == [503, 480, 480, 200, 200, 200]


def test_sequence_per_aor_gives_every_account_the_whole_sequence():
    seq = Sequencer(make_script(["503", "200"], scope="aor"))
    assert seq.current("sip:a@d")[1].code == 503
    seq.consume("sip:a@d")
    assert seq.current("sip:a@d")[1].code == 200 and seq.current("sip:b@d")[1].code == 503
    glob = Sequencer(make_script(["503", "200"]))
    glob.consume("sip:a@d")
    assert glob.current("sip:b@d")[1].code == 200


def test_auth_gate_is_used_up_only_by_right_credentials():
    gate = parse_answer("200 auth=401")
    assert decide(gate, "none") == ("challenge", False)
    assert decide(gate, "wrong") == ("challenge", False)
    assert decide(gate, "right") == ("answer", True)
    assert decide(parse_answer("200 auth=401 bad-digest=403"), "wrong") == ("forbidden", False)
    assert decide(parse_answer("503"), "none") == ("answer", True)


# ---------------------------------------------------------------------------------------------- responses


def test_200_echoes_contacts_with_the_granted_expiry_and_fills_in_via():
    r = _resp("200 sr=2")
    assert r.status == 200 and r.reason == "OK"
    vias = r.all("via")
    assert vias[0] == "SIP/2.0/UDP 10.213.201.100:5070;branch=z9hG4bKabc;rport=5070;received=10.213.201.100"
    assert vias[1].endswith("z9hG4bKp1")
    assert r.get("to").endswith(";tag=tt") and r.get("call-id") == "cid-1" and r.get("cseq") == "7 REGISTER"
    assert r.all("contact") == ['<sip:u@10.213.201.100:5070;transport=udp>;+sip.instance="<urn:x>";expires=600']
    assert r.get("expires") == "600"  # the Contact's expires wins over the header (and is below 3600)
    assert r.all("service-route") == ["<sip:10.213.201.3:5060;lr;srn=1>", "<sip:10.213.201.3:5060;lr;srn=2>"]
    assert _resp("200 expires=1").get("expires") == "1"
    assert _resp("200 expires=0").all("contact")[0].endswith(";expires=0")


def test_service_routes_in_one_header_and_the_hostile_sizes():
    one = _resp("200 sr=16 sr-style=one").all("service-route")
    assert len(one) == 1 and len(split_list(one[0])) == 16
    assert len(_resp("200 sr=10").all("service-route")) == 10
    assert len(_resp("200 big-header=8192").get("x-siplab-big")) == 8192
    assert len(render(parse(REQ.encode()), parse_answer("200 pad=4100"), CTX)) == 4100
    # the big header first: a cut at 4000 bytes takes Contact, Expires and Service-Route with it
    first = render(parse(REQ.encode()), parse_answer("200 big-header=4100 big-header-at=start sr=2"), CTX)
    assert not parse(first[:4000] + b"\r\n\r\n").get("expires")
    last = render(parse(REQ.encode()), parse_answer("200 big-header=4100 sr=2"), CTX)
    assert parse(last[:4000] + b"\r\n\r\n").get("expires") == "600"


def test_failure_answers_carry_their_headers():
    assert _resp("503 retry-after=30").get("retry-after") == "30"
    assert not _resp("503").has("retry-after")
    r = _resp("423 min-expires=600")
    assert r.status == 423 and r.get("min-expires") == "600" and not r.has("contact")
    assert _resp("302 contact=R").all("contact") == ["<sip:10.213.201.2:5060>"]
    assert _resp("302 contact=self").all("contact") == ["<sip:10.213.201.4:5060>"]
    tls = Context(**{**CTX.__dict__, "transport": "tls"})
    assert _resp("302 contact=E", ctx=tls).all("contact") == ["<sip:10.213.201.3:5061;transport=tls>"]
    assert _resp("603").reason == "Decline"


def test_bad_contact_is_not_parsable():
    data = render(parse(REQ.encode()), parse_answer("200 bad-contact"), CTX)
    line = next(x for x in data.decode().split("\r\n") if x.startswith("Contact:"))
    assert line == "Contact: <sip:siplab-bad-contact@10.213.201.4:5060;expires=300"  # '<' never closed


def test_challenge_and_unregister():
    r = _resp("200 auth=401", code=401, reason="Unauthorized")
    assert r.status == 401 and parse_digest(r.get("www-authenticate"))["nonce"] == "n1"
    assert _resp("200 auth=407", code=407).has("proxy-authenticate")
    unreg = REQ.replace(";expires=600", "").replace("Expires: 300", "Expires: 0")
    req = parse(unreg.encode())
    assert is_unregister(req) and granted(req, parse_answer("200")) == 0
    assert _resp("200", req=unreg).all("contact") == []


# ---------------------------------------------------------------------------------------------- SIP and digest


def test_parse_and_frame():
    m = parse(REQ.encode())
    assert m.method == "REGISTER" and m.get("call-id") == "cid-1" and m.get("TO").startswith("<sip:u@")
    assert header_uri(m.get("from")) == "sip:u@lab.sipfleet.test" and header_param(m.get("from"), "tag") == "1"
    assert header_param(m.get("contact"), "expires") == "600"
    for bad in (b"nonsense", b"REGISTER sip:x\r\n\r\n", b"SIP/2.0 abc\r\n\r\n", b"INVITE sip:x SIP/2.0\r\nno colon\r\n\r\n"):
        with pytest.raises(SipParseError):
            parse(bad)
    body = REQ.replace("Content-Length: 0", "Content-Length: 3") + "abc"
    stream = b"\r\n\r\n" + body.encode() + REQ.encode()[:20]
    ping, rest = frame(stream)
    assert ping == b"\r\n\r\n"
    msg, rest = frame(rest)
    assert parse(msg).body == b"abc" and rest == REQ.encode()[:20]
    assert frame(rest) == (None, rest)
    assert frame(b"\r\n") == (None, b"\r\n")


def test_digest_round_trip():
    ha1 = md5("alice:lab.sipfleet.test:pw")
    for qop in ("", "auth"):
        cred = parse_digest(authorization("alice", "pw", "lab.sipfleet.test", "REGISTER", "sip:x", "n1", qop=qop))
        assert digest_valid(cred, ha1, "REGISTER", "lab.sipfleet.test")
        assert not digest_valid(cred, md5("alice:lab.sipfleet.test:other"), "REGISTER", "lab.sipfleet.test")
        assert not digest_valid(cred, ha1, "REGISTER", "other.realm")
        assert not digest_valid(cred, None, "REGISTER", "lab.sipfleet.test")
    assert parse_digest("Basic abc") == {}


def test_wire_line_round_trips_through_the_kamailio_parser():
    fields = {"node": "S", "at": "1700000000.123456", "method": "REGISTER", "ruri": "sip:10.213.201.4:5060",
              "route": "<sip:10.213.201.1:5060;lr>", "src": "10.213.201.100:5070", "dst": "10.213.201.4:5060",
              "transport": "tls", "call_id": 'a"b\\c', "cseq": "7", "from_uri": "sip:u@d", "to_uri": "sip:u@d",
              "contact": "<sip:u@10.213.201.100:5070>;expires=60", "expires": "60", "auth": True,
              "tls_version": "TLSv1.2", "tls_cipher": "ECDHE-ECDSA-AES256-GCM-SHA384", "tls_peer": "", "answer": "503"}
    rec = parse_wire_line("x NOTICE: " + format_wire_line(fields))
    assert rec is not None and rec.node == "S" and rec.call_id == 'a"b\\c' and rec.cseq == 7 and rec.has_auth
    assert rec.route == ["sip:10.213.201.1:5060;lr"] and rec.answer == "503" and rec.tls_version == "TLSv1.2"
    assert rec.at == pytest.approx(1700000000.123456)


# ---------------------------------------------------------------------------------------------- TLS files


def test_tls_files_name_each_host_and_the_bad_ones_do_not(tmp_path):
    from sipfleet.localenv.siplab import tlspki

    ips = {"P": "10.213.201.1", "R": "10.213.201.2", "E": "10.213.201.3", "S": "10.213.201.4"}
    tls = tlspki.ensure(tmp_path / "tls", ips, "lab.sipfleet.test")
    assert tlspki.cert_names(tls.crt("P")) == (["p.lab.sipfleet.test"], ["10.213.201.1"])
    assert tlspki.cert_names(tls.crt("R")) == (["r.lab.sipfleet.test", "lab.sipfleet.test"], ["10.213.201.2"])
    assert tlspki.cert_names(tls.crt("wrong-name")) == (["wrong.lab.sipfleet.test"], [])
    assert (tls.key("P").stat().st_mode & 0o777) == 0o600
    ca = tls.ca_crt.read_bytes()
    again = tlspki.ensure(tmp_path / "tls", {**ips, "P": "10.213.202.1"}, "lab.sipfleet.test")  # another slot
    assert again.ca_crt.read_bytes() == ca and tlspki.cert_names(again.crt("P"))[1] == ["10.213.202.1"]
    cfg = tlspki.kamailio_tls_cfg("P", "10.213.201.1", 5061, tls)
    assert "[server:10.213.201.1:5062]" in cfg and str(tls.crt("wrong-name")) in cfg
    assert "[server:10.213.201.1:5063]" in cfg and str(tls.crt("wrong-ca-P")) in cfg
    assert "method = TLSv1.2+" in cfg and "[server:10.213.201.1:506" not in tlspki.kamailio_tls_cfg(
        "R", "10.213.201.2", 5061, tls)


def test_lab_uris_for_tls_and_s():
    from sipfleet.localenv.siplab import SipLab

    class Net:
        prefix = "10.213.201"

        def host_ip(self, n):
            return f"10.213.201.{n}"

    lab = SipLab.__new__(SipLab)
    lab.port, lab.domain, lab.service_route_transport = 5060, "lab.sipfleet.test", "auto"
    lab.topology = type("T", (), {"net": Net(), "host_ip": lambda self, h: Net().host_ip({"P": 1, "R": 2, "E": 3, "S": 4}[h])})()
    assert lab.proxy_uri("tls") == "sip:10.213.201.1:5061;lr;transport=tls"
    assert lab.proxy_uri("tls", "wrong-name") == "sip:10.213.201.1:5062;lr;transport=tls"
    assert lab.proxy_uri("tls", "wrong-ca") == "sip:10.213.201.1:5063;lr;transport=tls"
    assert lab.registrar_uri("tls") == "sip:10.213.201.2:5061;transport=tls"
    assert lab.registrar_uri(node="S") == "sip:10.213.201.4:5060"
    assert lab.edge_uri("tls") == "sip:10.213.201.3:5061;lr;transport=tls"
    with pytest.raises(LabError):
        lab.proxy_uri("udp", "wrong-name")
    with pytest.raises(LabError):
        lab.lr_uri("R", "tls", "wrong-ca")
