"""The scripted registrar S against real clients: the lab's raw-socket client and SIPp, directly and through
Kamailio P, over UDP, TCP and TLS. Every answer is checked twice: in what the client received and in S's
SIPLAB-WIRE records (what S saw and what it says it answered).

Nothing here asserts how fast anything is (a delayed answer is only checked not to come before its delay).
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time

import pytest

from sipfleet.localenv.siplab import LabError
from sipfleet.localenv.siplab.sipclient import SipClient
from sipfleet.localenv.siplab.sipmsg import split_list
from sipfleet.localenv.waiting import wait_for

pytestmark = pytest.mark.lab

NO_ANSWER_S = 2.0  # how long a client waits for an answer that must not come


@pytest.fixture
def me(clean_lab):
    ip = clean_lab.client_address()
    yield ip
    clean_lab.release_client_address(ip)


def _client(lab, me, transport="udp", node="S", **kw):
    if transport == "tls":
        ctx = ssl.create_default_context(cafile=str(lab.tls.ca_crt))
        return SipClient(me, (lab.ip(node), lab.tls_port), "tls", ssl_context=ctx,
                         server_hostname=lab.tls_name(node), **kw)
    return SipClient(me, (lab.ip(node), lab.port), transport, **kw)


def _s_record(lab, call_id, cseq=None, min_count=1):
    def get():
        recs = [r for r in lab.scripted.requests(call_id=call_id) if cseq is None or r.cseq == cseq]
        return recs if len(recs) >= min_count else None

    return wait_for(get, timeout=10, interval=0.05, message=f"S's wire record of {call_id}")


def _register_s(lab, me, transport, user="alice", **kw):
    with _client(lab, me, transport) as c:
        [(req, resp)] = c.register(lab.scripted.uri(transport), user=user, domain=lab.domain, **kw)
    return req, resp


# ---------------------------------------------------------------------------------------------- the host


def test_s_is_a_lab_host_of_its_own(clean_lab):
    lab = clean_lab
    s = lab.node("S")
    assert s.running and s.ip == f"{lab.subnet}.4" and s.netns == f"sipfleet-l-{lab.name}-S"
    assert os.stat(f"/proc/{s.pid}/ns/net").st_ino == os.stat(f"/run/netns/{s.netns}").st_ino
    st = lab.status()
    assert st["scripted"]["running"] and st["scripted"]["script"] == ["200"] and st["registrar"] == "R"
    assert lab.scripted.uri() == f"sip:{lab.subnet}.4:5060" and lab.scripted.uri("tls") == f"sip:{lab.subnet}.4:5061;transport=tls"
    assert lab.scripted.route_uri("tcp") == f"sip:{lab.subnet}.4:5060;lr;transport=tcp"
    with pytest.raises(LabError, match="scripted"):
        lab.inject("S", "503")
    assert json.dumps(st)


# ---------------------------------------------------------------------------------------------- each answer


ANSWERS = {
    # answer text: (status, checks on the response)
    "200 expires=60": (200, lambda r, req: r.get("expires") == "60" and r.all("contact")[0].endswith(";expires=60")),
    "200 sr=3": (200, lambda r, req: len(r.all("service-route")) == 3),
    "200 sr=3 sr-style=one": (200, lambda r, req: len(r.all("service-route")) == 1
                              and len(split_list(r.get("service-route"))) == 3),
    "403": (403, lambda r, req: not r.has("contact")),
    "404": (404, None),
    "423 min-expires=600": (423, lambda r, req: r.get("min-expires") == "600"),
    "480": (480, None),
    "500": (500, lambda r, req: not r.has("retry-after")),
    "503": (503, lambda r, req: not r.has("retry-after")),
    "503 retry-after=30": (503, lambda r, req: r.get("retry-after") == "30"),
    "480 retry-after=5": (480, lambda r, req: r.get("retry-after") == "5"),
    "302 contact=R": (302, None),  # checked per transport below
    "302 contact=self": (302, None),
    "600": (600, None),
    "603": (603, lambda r, req: r.reason == "Decline"),
    # issue 13's hostile answers
    "200 sr=10": (200, lambda r, req: len(r.all("service-route")) == 10),
    "200 sr=16": (200, lambda r, req: len(r.all("service-route")) == 16),
    "200 big-header=8192": (200, lambda r, req: len(r.get("x-siplab-big")) == 8192),
    "200 pad=4100": (200, lambda r, req: len(r.raw) >= 4100),
    "200 bad-contact": (200, lambda r, req: r.get("contact").startswith("<sip:siplab-bad-contact@")
                        and ">" not in r.get("contact")),
    "200 expires=0": (200, lambda r, req: r.get("expires") == "0"),
    "200 expires=1": (200, lambda r, req: r.get("expires") == "1"),
}


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("text", list(ANSWERS))
def test_each_scripted_answer_on_the_wire(clean_lab, me, text, transport):
    lab = clean_lab
    lab.scripted.script(text)
    code, check = ANSWERS[text]
    req, resp = _register_s(lab, me, transport, expires=300)
    assert resp is not None, f"no answer to {text!r} over {transport}"
    assert resp.status == code and resp.get("call-id") == req.call_id and resp.get("cseq") == f"{req.cseq} REGISTER"
    assert resp.all("via")[0].endswith(f";rport={req.local[1]};received={me}")
    if check is not None:
        assert check(resp, req), (text, resp.headers)
    if text.startswith("302"):
        target = lab.ip("R" if text.endswith("=R") else "S")
        suffix = "" if transport == "udp" else ";transport=tcp"
        assert resp.all("contact") == [f"<sip:{target}:{lab.port}{suffix}>"]
    [rec] = _s_record(lab, req.call_id)
    assert rec.node == "S" and rec.method == "REGISTER" and rec.transport == transport and rec.cseq == req.cseq
    assert rec.answer == str(code) and rec.expires == "300" and rec.contact.startswith(f"<sip:alice@{me}:")
    assert rec.src.startswith(f"{me}:") and rec.dst == lab.scripted.uri().removeprefix("sip:")
    assert not rec.has_auth and rec.route == [] and rec.from_uri == rec.to_uri == lab.aor("alice")
    assert lab.scripted.state()["answers"] == {str(code): 1}


def test_silence_and_delay(clean_lab, me):
    lab = clean_lab
    lab.scripted.script("silence")
    req, resp = _register_s(lab, me, "udp", timeout=NO_ANSWER_S)
    assert resp is None
    assert _s_record(lab, req.call_id)[0].answer == "silence"
    lab.scripted.script("200 delay=1500")
    with _client(lab, me, "tcp") as c:
        req = c.build("REGISTER", lab.scripted.uri("tcp"), user="alice", domain=lab.domain)
        c.send(req.data)
        assert c.recv(timeout=0.5) is None  # not before its delay
        resp = c.recv(timeout=30)
    assert resp is not None and resp.status == 200 and resp.get("call-id") == req.call_id
    assert _s_record(lab, req.call_id)[0].answer == "200"


def test_retransmissions_get_the_same_answer_and_use_no_step(clean_lab, me):
    lab = clean_lab
    lab.scripted.script("503 retry-after=30", "200")
    with _client(lab, me, "udp") as c:
        req = c.build("REGISTER", lab.scripted.uri(), user="alice", domain=lab.domain)
        first = c.request(req)
        again = c.request(req)  # the very same bytes: a retransmission
        nxt = c.request(c.build("REGISTER", lab.scripted.uri(), user="alice", domain=lab.domain,
                                call_id=req.call_id, cseq=2))
    assert first.status == again.status == 503 and first.get("to") == again.get("to")  # same To tag
    assert nxt.status == 200
    recs = _s_record(lab, req.call_id, min_count=3)
    assert [r.answer for r in recs] == ["503", "retransmit:503", "200"]


# ---------------------------------------------------------------------------------------------- sequences, auth


def test_a_scripted_sequence_then_the_last_answer_forever(clean_lab, me):
    lab = clean_lab
    lab.scripted.script("503 retry-after=30", "480 count=2", "200 expires=60")
    got = []
    with _client(lab, me, "udp") as c:
        for i in range(5):
            [(_, r)] = c.register(lab.scripted.uri(), user="alice", domain=lab.domain)
            got.append((r.status, r.get("retry-after") or r.get("expires")))
    assert got == [(503, "30"), (480, ""), (480, ""), (200, "60"), (200, "60")]
    assert lab.scripted.state()["answers"] == {"503": 1, "480": 2, "200": 2}
    assert [r.answer for r in lab.scripted.requests(since=time.time() - 60) if r.from_uri == lab.aor("alice")][-5:] == [
        "503", "480", "480", "200", "200"]


def test_per_aor_scope_gives_each_account_the_whole_sequence(clean_lab, me):
    lab = clean_lab
    lab.scripted.script("503 retry-after=30", "200", scope="aor")
    out = {}
    with _client(lab, me, "tcp") as c:
        for user in ("ann", "bob", "ann", "bob"):
            [(_, r)] = c.register(lab.scripted.uri("tcp"), user=user, domain=lab.domain)
            out.setdefault(user, []).append(r.status)
    assert out == {"ann": [503, 200], "bob": [503, 200]}


def test_digest_challenge_right_and_wrong_password(clean_lab, lab_user, me):
    lab = clean_lab
    user, password = lab_user("sauth-")
    lab.scripted.script("200 auth=401")
    with _client(lab, me, "udp") as c:
        ok = c.register(lab.scripted.uri(), user=user, domain=lab.domain, password=password)
        bad = c.register(lab.scripted.uri(), user=user, domain=lab.domain, password="not-the-password")
    assert [r.status for _, r in ok] == [401, 200] and [r.status for _, r in bad] == [401, 401]
    assert 'realm="lab.sipfleet.test"' in ok[0][1].get("www-authenticate")
    recs = _s_record(lab, ok[0][0].call_id, min_count=2)
    assert [(r.has_auth, r.answer) for r in recs] == [(False, "401"), (True, "200")]
    # "wrong password" behaviour: even the right credentials get 403; and wrong ones 403 at once if told so
    lab.scripted.script("403 auth=401")
    with _client(lab, me, "tcp") as c:
        assert [r.status for _, r in c.register(lab.scripted.uri("tcp"), user=user, domain=lab.domain,
                                                 password=password)] == [401, 403]
    lab.scripted.script("200 auth=407 bad-digest=403")
    with _client(lab, me, "udp") as c:
        wrong = c.register(lab.scripted.uri(), user=user, domain=lab.domain, password="nope")
        right = c.register(lab.scripted.uri(), user=user, domain=lab.domain, password=password)
    assert [r.status for _, r in wrong] == [407, 403] and [r.status for _, r in right] == [407, 200]
    assert password not in lab.log_path("S").read_text()


def test_options_keepalives_and_other_methods(clean_lab, me):
    lab = clean_lab
    lab.scripted.script("503", options="silence")
    with _client(lab, me, "udp") as c:
        assert c.request(c.build("OPTIONS", lab.scripted.uri(), user="alice", domain=lab.domain), NO_ANSWER_S) is None
    lab.scripted.script("503")
    with _client(lab, me, "tcp") as c:
        assert c.request(c.build("OPTIONS", lab.scripted.uri("tcp"), user="alice", domain=lab.domain)).status == 200
        assert c.request(c.build("INVITE", lab.scripted.uri("tcp"), user="alice", domain=lab.domain)).status == 405
        t0 = time.time()
        c.send(b"\r\n\r\n")
        c.sock.settimeout(10)
        assert c.sock.recv(10) == b"\r\n"  # RFC 5626 pong
    ka = wait_for(lambda: lab.scripted.requests(since=t0, method="KEEPALIVE"), timeout=10, message="keepalive record")
    assert ka[0].transport == "tcp" and ka[0].src.startswith(f"{me}:") and ka[0].answer == "pong"
    assert lab.scripted.state()["answers"].get("503") is None  # OPTIONS and INVITE used no REGISTER step


# ---------------------------------------------------------------------------------------------- behind P


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_through_p_to_s_by_request_uri(clean_lab, me, transport):
    lab = clean_lab
    lab.scripted.script("503 retry-after=30", "302 contact=E", "200 sr=2")
    got = []
    with _client(lab, me, transport, node="P") as c:
        for _ in range(3):
            [(req, r)] = c.register(lab.scripted.uri(), user="alice", domain=lab.domain,
                                    route=f"<{lab.proxy_uri(transport)}>")
            got.append(r)
    assert [r.status for r in got] == [503, 302, 200]
    assert got[0].get("retry-after") == "30"  # P passes the 503 on with its Retry-After
    assert got[1].all("contact") == [f"<sip:{lab.ip('E')}:{lab.port}>"]  # S saw P's UDP
    assert len(got[2].all("service-route")) == 2
    p = [r for r in lab.wire(node="P", call_id=req.call_id)]
    s = _s_record(lab, req.call_id)
    assert p and p[0].transport == transport and p[0].route == [lab.proxy_uri(transport)]
    assert s[0].src == lab.hostport("P") and s[0].route == [] and s[0].transport == "udp"
    if transport == "tls":
        assert p[0].tls_version.startswith("TLSv1.") and p[0].tls_cipher


def test_set_registrar_sends_a_running_route_to_s_and_back(clean_lab, lab_user):
    lab = clean_lab
    user = lab_user("onward-")
    route = f"<{lab.proxy_uri()}>"
    lab.scripted.script("403")
    lab.set_registrar("S")
    assert lab.registrar() == "S" and lab.status()["registrar"] == "S"
    res = lab.sipp("register", "P", users=[user], route=route, timeout=60, recv_timeout_ms=3000)
    assert res.codes == [403], (res.final_codes, res.errors[:3])
    call_id = next(iter(res.final_codes))
    assert [r.answer for r in _s_record(lab, call_id)] == ["403"] and not lab.wire(node="R", call_id=call_id)
    lab.scripted.script("200 auth=401")  # SIPp's digest, checked by S
    res = lab.sipp("register", "P", users=[user], route=route, timeout=60)
    assert res.codes == [200], (res.final_codes, res.errors[:3])
    assert [r.answer for r in _s_record(lab, next(iter(res.final_codes)), min_count=2)] == ["401", "200"]
    lab.set_registrar("R")
    res = lab.sipp("register", "P", users=[user], route=route, timeout=60)
    assert res.codes == [200] and lab.wire(node="R", call_id=next(iter(res.final_codes)))
    assert not lab.scripted.requests(call_id=next(iter(res.final_codes)))
    assert lab.contacts(user[0])  # R holds the binding


# ---------------------------------------------------------------------------------------------- faults, restarts


def test_s_stops_starts_and_keeps_its_script(clean_lab, me):
    lab = clean_lab
    lab.scripted.script("503", "200")
    pid = lab.node("S").pid
    lab.stop_node("S")
    assert not lab.node("S").running and not lab.is_up()
    with pytest.raises(ConnectionRefusedError):
        _client(lab, me, "tcp").connect()
    lab.start_node("S")
    assert lab.node("S").pid != pid and lab.is_up()
    assert [a.code for a in lab.scripted.current().steps] == [503, 200]
    assert _register_s(lab, me, "udp")[1].status == 503  # positions start over with the process


def test_network_faults_apply_to_s(clean_lab, me):
    lab = clean_lab
    lab.partition("S")
    assert _register_s(lab, me, "udp", timeout=NO_ANSWER_S)[1] is None
    assert lab.fault_counters("S").get("input", 0) >= 1
    lab.heal("S")
    assert _register_s(lab, me, "udp")[1].status == 200


def test_cli_script_and_registrar(clean_lab):
    lab = clean_lab
    base = [sys.executable, "-m", "sipfleet.cli", "lab", "--name", lab.name, "--state-dir", str(lab.state_dir)]
    out = subprocess.run(base + ["script", "503 retry-after=30", "200 expires=60", "--scope", "aor"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "1. 503 retry-after=30" in out.stdout and "2. 200 expires=60" in out.stdout and "scope aor" in out.stdout
    assert [a.to_text() for a in lab.scripted.current().steps] == ["503 retry-after=30", "200 expires=60"]
    out = subprocess.run(base + ["--json", "script"], capture_output=True, text=True, timeout=60)
    assert json.loads(out.stdout)["script"]["scope"] == "aor"
    bad = subprocess.run(base + ["script", "302"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "contact" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    out = subprocess.run(base + ["registrar", "S"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and lab.registrar() == "S", out.stderr
    out = subprocess.run(base + ["status"], capture_output=True, text=True, timeout=60)
    assert "REGISTERs meant for R go to S" in out.stdout and f"S  {lab.ip('S')}:5060" in out.stdout
