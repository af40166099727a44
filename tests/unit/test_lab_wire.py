"""The SIP lab's pure parsers: wire-log lines, Route headers, Kamailio inject modes, SIPp outputs."""

from __future__ import annotations

import hashlib

import pytest

from sipfleet.localenv.siplab import LabError, parse_inject_mode, parse_wire_line, split_route_header
from sipfleet.localenv.siplab.kamailio import render_cfg, users_init
from sipfleet.localenv.siplab.sipp import resolve_target
from sipfleet.localenv.siplab.sipp_results import parse_final_codes, parse_rtts, parse_sipp_errors, parse_stats
from sipfleet.localenv.siplab.users import digest_ha1, hashed_entries, parse_ul_lookup


def test_parse_inject_mode():
    assert parse_inject_mode("normal") == ("normal", 0)
    assert parse_inject_mode("503") == ("503", 0)
    assert parse_inject_mode("blackhole") == ("blackhole", 0)
    assert parse_inject_mode("delay:250") == ("delay", 250_000)
    for bad in ("404", "delay:x", "delay:-1", ""):
        with pytest.raises(LabError):
            parse_inject_mode(bad)


def test_split_route_header():
    assert split_route_header("") == []
    assert split_route_header("<sip:10.213.201.1:5060;lr>") == ["sip:10.213.201.1:5060;lr"]
    assert split_route_header("<sip:a;lr>, <sip:b;lr;transport=tcp>,<sip:c>") == [
        "sip:a;lr",
        "sip:b;lr;transport=tcp",
        "sip:c",
    ]
    assert split_route_header('"x,y" <sip:a;lr>') == ["sip:a;lr"]


def test_parse_wire_line():
    line = (
        ' 2(123) NOTICE: <script>: SIPLAB-WIRE node="P" at="1700000000.123456" method="REGISTER" '
        'ruri="sip:10.213.201.2:5060" route="<sip:10.213.201.1:5060;lr>, <sip:x;lr>" src="10.213.201.100:5070" '
        'dst="10.213.201.1:5060" transport="udp" call_id="a\\"b" cseq="7" from_uri="sip:u@d" to_uri="sip:u@d" '
        'contact="" expires="300" auth="1" end="1"'
    )
    rec = parse_wire_line(line)
    assert rec is not None
    assert rec.node == "P" and rec.method == "REGISTER" and rec.cseq == 7 and rec.has_auth
    assert rec.route == ["sip:10.213.201.1:5060;lr", "sip:x;lr"]
    assert rec.call_id == 'a"b' and rec.src == "10.213.201.100:5070" and rec.dst == "10.213.201.1:5060"
    assert rec.at == pytest.approx(1700000000.123456)
    assert parse_wire_line(line.replace(' end="1"', "")) is None  # a torn line is not a record
    assert parse_wire_line("some other log line") is None
    assert parse_wire_line(line.replace('route="<sip:10.213.201.1:5060;lr>, <sip:x;lr>"', 'route="<null>"')).route == []


def test_render_cfg_replaces_every_token_and_sets_the_role():
    text = "#!KAMAILIO\nlisten=udp:@@IP@@:@@PORT@@\n"
    out = render_cfg(text, "R", {"IP": "10.213.201.2", "PORT": "5060"}, registrar=True, service_route_auto=True)
    assert out.splitlines()[:4] == ["#!KAMAILIO", "#!define ROLE_REGISTRAR", "#!define NODE_R", "#!define SR_AUTO"]
    assert "listen=udp:10.213.201.2:5060" in out
    with pytest.raises(LabError, match="unrendered"):
        render_cfg(text, "P", {"IP": "x"}, registrar=False, service_route_auto=False)
    assert users_init({"b": "h2", "a": "h1"}) == '\t$sht(users=>a) = "h1";\n\t$sht(users=>b) = "h2";'


def test_the_real_template_renders_without_loopback_addresses():
    from sipfleet.localenv.siplab.kamailio import CFG_TEMPLATE

    keys = ["NODE", "IP", "PORT", "DOMAIN", "CTL", "MODE", "DELAY_US", "WIRE", "CHILDREN", "TCP_CHILDREN",
            "FR_TIMER_MS", "MPATH", "REGISTRAR_URI", "EDGE_URI", "EDGE_URI_TCP", "EDGE_URI_FIXED", "USERS_INIT",
            "TLS_PORT", "TLS_PORT_WRONG_NAME", "TLS_PORT_WRONG_CA", "TLS_CFG", "EDGE_URI_TLS", "ONWARD_URI", "R_IP"]
    for defines in ((), ("WITH_TLS",)):
        out = render_cfg(CFG_TEMPLATE.read_text(), "P", {k: "10.213.201.1" for k in keys}, registrar=False,
                         service_route_auto=True, defines=defines)
        assert "@@" not in out and "127.0." not in out
        assert ("#!define WITH_TLS" in out) == bool(defines)


def test_users_are_stored_as_ha1_only():
    assert digest_ha1("alice", "lab.sipfleet.test", "pw") == hashlib.md5(b"alice:lab.sipfleet.test:pw").hexdigest()
    entries = hashed_entries([("alice", "pw")], "realm")
    assert entries == [("alice", digest_ha1("alice", "realm", "pw"))] and "pw" not in entries[0][1]
    for bad in ([("bad user", "x")], [("ok", "")]):
        with pytest.raises(LabError):
            hashed_entries(bad, "realm")
    out = "AoR: alice\n\tContact:\n\t\tAddress: sip:alice@10.213.201.10:5070;transport=UDP\n\t\tExpires: 300\n"
    assert parse_ul_lookup(out) == ["sip:alice@10.213.201.10:5070;transport=UDP"]


def test_sipp_targets_stay_in_the_sipfleet_network():
    nodes = {"P": "10.213.201.1", "R": "10.213.201.2", "E": "10.213.201.3"}
    assert resolve_target("p", nodes, 5060) == ("10.213.201.1", 5060)
    assert resolve_target("10.213.201.150:5070", nodes, 5060) == ("10.213.201.150", 5070)
    assert resolve_target("sip:bob@10.213.3.20:5080;transport=udp", nodes, 5060) == ("10.213.3.20", 5080)
    for bad in ("127.0.0.1:5060", "192.0.2.1", "sip:x@8.8.8.8"):
        with pytest.raises(LabError, match="sipfleet network"):
            resolve_target(bad, nodes, 5060)


def test_sipp_outputs():
    final = parse_final_codes(["x FINAL call-1 200 service-route=sip:e", "noise", "FINAL call-2 503"])
    assert final == {"call-1": 200, "call-2": 503}
    errs = ("2024-01-01\t10:00:00.000\t1\tAborting call on unexpected message for Call-Id '3-1@x': while expecting "
            "'200' response, received 'SIP/2.0 403 Forbidden'\n"
            "2024-01-01\t10:00:01.000\t2\tCall-Id '4-1@x' timeout on max UDP retrans for message 1\n")
    events = parse_sipp_errors(errs, final)
    assert len(events) == 2 and final["3-1@x"] == 403 and final["4-1@x"] == "timeout"
    rtts, by_rtd = parse_rtts("Date_ms;response_time;rtd_no\n1;0.5;1\n2;1.5;2\n3;2.0;2\n")
    assert rtts == [0.5, 1.5, 2.0] and by_rtd == {"1": [0.5], "2": [1.5, 2.0]}
    assert parse_stats("A;B;\n1;2;\n3;4;\n") == {"A": "3", "B": "4"}
