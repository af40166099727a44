"""The SIP lab against itself: real Kamailio P/R/E nodes driven by real SIPp (no SIP mocks).

Every SIPp run is bounded in calls (``-m``) and time (``timeout`` + SIPp's own ``-timeout``/``-recv_timeout``).
Nothing here asserts how fast anything is; waits poll conditions with generous deadlines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from sipfleet.localenv.waiting import wait_for

pytestmark = pytest.mark.lab

RECV_TIMEOUT_FAIL_MS = 3000  # how long SIPp waits for an answer that must not come


def _register(lab, user, via="P", transport="udp", **kw):
    """REGISTER (401 challenge, then digest) sent to node ``via`` with Route: <via;lr>."""
    route_uri = lab.proxy_uri(transport) if via == "P" else lab.edge_uri(transport) if via == "E" else None
    kw.setdefault("timeout", 60)
    return lab.sipp(
        "register",
        via,
        users=[user],
        route=f"<{route_uri}>" if route_uri else None,
        transport=transport,
        **kw,
    )


def _only_call(result):
    assert len(result.final_codes) == 1, (result.final_codes, result.errors[:3], result.stdout_tail[-1500:])
    return next(iter(result.final_codes.items()))


def _records(lab, call_id, node=None, timeout=30.0, min_count=1):
    return wait_for(
        lambda: (lambda recs: recs if len(recs) >= min_count else None)(lab.wire(call_id=call_id, node=node)),
        timeout=timeout,
        interval=0.05,
        message=f">= {min_count} wire records for {call_id} at {node or 'any node'}",
    )


# ------------------------------------------------------------------------------------------------ topology


def test_addresses(lab):
    sub = lab.subnet
    assert sub == f"10.213.{200 + lab.slot}" and 1 <= lab.slot <= 49
    assert lab.proxy_uri() == f"sip:{sub}.1:5060;lr"
    assert lab.proxy_uri("tcp") == f"sip:{sub}.1:5060;lr;transport=tcp"
    assert lab.registrar_uri() == f"sip:{sub}.2:5060"
    assert lab.edge_uri() == f"sip:{sub}.3:5060;lr"
    for name, octet in (("P", 1), ("R", 2), ("E", 3)):
        node = lab.node(name)
        assert node.ip == f"{sub}.{octet}" and node.port == 5060
        assert node.running and node.pid
        assert node.netns == f"sipfleet-l-{lab.name}-{name}"
        assert os.stat(f"/proc/{node.pid}/ns/net").st_ino == os.stat(f"/run/netns/{node.netns}").st_ino
    st = lab.status()
    assert st["up"] and set(st["nodes"]) == {"P", "R", "E"}
    assert json.dumps(st)  # plain data


def test_up_is_idempotent(lab):
    before = {n: lab.node(n).pid for n in "PRE"}
    lab.up()
    assert {n: lab.node(n).pid for n in "PRE"} == before


# ------------------------------------------------------------------------------------------------ REGISTER


def test_register_via_proxy_gets_challenge_then_service_route(lab, lab_user):
    user = lab_user("via-p-")
    since = time.time() - 1
    res = _register(lab, user, via="P")
    call_id, code = _only_call(res)
    assert code == 200, (res.final_codes, res.errors[:3])
    assert res.returncode == 0
    # the scenario only reaches the 200 after a 401 with a challenge it answered; the 200 named E
    assert any(f"service-route={lab.edge_uri()}" in line for line in res.logs), res.logs

    recs = _records(lab, call_id, min_count=4)
    p1 = [r for r in recs if r.node == "P" and r.cseq == 1]
    r1 = [r for r in recs if r.node == "R" and r.cseq == 1]
    p2 = [r for r in recs if r.node == "P" and r.cseq == 2]
    r2 = [r for r in recs if r.node == "R" and r.cseq == 2]
    assert p1 and r1 and p2 and r2, recs
    assert not [r for r in recs if r.node == "E"]
    # P receives the REGISTER with Route: <P;lr> and the Request-URI naming R; P pops itself before R
    assert p1[0].route == [lab.proxy_uri()] and p1[0].ruri == lab.registrar_uri()
    assert r1[0].route == [] and r1[0].src == lab.node("P").hostport
    assert p1[0].at <= r1[0].at <= p2[0].at <= r2[0].at
    assert not p1[0].has_auth and not r1[0].has_auth
    assert p2[0].has_auth and r2[0].has_auth
    assert p1[0].transport == "udp" and p1[0].method == "REGISTER"
    assert p1[0].from_uri == p1[0].to_uri == lab.aor(user[0])
    assert all(r.at >= since for r in recs)

    contacts = lab.contacts(user[0])
    assert len(contacts) == 1 and contacts[0].startswith(f"sip:{user[0]}@{lab.subnet}.10:"), contacts


def test_register_directly_to_edge(lab, lab_user):
    user = lab_user("via-e-")
    res = _register(lab, user, via="E")
    call_id, code = _only_call(res)
    assert code == 200, (res.final_codes, res.errors[:3])
    recs = _records(lab, call_id, min_count=4)
    e = [r for r in recs if r.node == "E"]
    r = [x for x in recs if x.node == "R"]
    assert e and r and not [x for x in recs if x.node == "P"], recs
    assert e[0].route == [lab.edge_uri()]
    assert r[0].src == lab.node("E").hostport and r[0].route == []
    assert e[0].at <= r[0].at


def test_register_over_tcp(lab, lab_user):
    user = lab_user("tcp-")
    res = _register(lab, user, via="P", transport="tcp")
    call_id, code = _only_call(res)
    assert code == 200, (res.final_codes, res.errors[:3])
    p = [x for x in _records(lab, call_id, node="P", min_count=2)]
    assert {x.transport for x in p} == {"tcp"}
    assert p[0].route == [lab.proxy_uri("tcp")]
    assert any(c.lower().endswith("transport=tcp") for c in lab.contacts(user[0]))
    # a TCP client is told to route through E over TCP too
    assert lab.service_route("tcp") == lab.edge_uri("tcp")
    assert any(f"service-route={lab.edge_uri('tcp')}" in line for line in res.logs), res.logs


def test_unregister_removes_contact(lab, lab_user):
    user = lab_user("unreg-")
    assert _only_call(_register(lab, user))[1] == 200
    wait_for(lambda: lab.contacts(user[0]), timeout=30, message="contact registered")
    res = lab.sipp("unregister", "P", users=[user], route=f"<{lab.proxy_uri()}>", timeout=60)
    call_id, code = _only_call(res)
    assert code == 200, (res.final_codes, res.errors[:3])
    recs = _records(lab, call_id, node="R", min_count=2)
    assert recs[-1].expires == "0" and recs[-1].contact == "*"
    wait_for(lambda: lab.contacts(user[0]) == [], timeout=30, message="contact removed")


def test_wrong_password_is_rejected(lab, lab_user):
    username, _ = lab_user("badpw-")
    res = _register(lab, (username, "not-the-password"), recv_timeout_ms=RECV_TIMEOUT_FAIL_MS)
    _, code = _only_call(res)
    assert code != 200
    assert lab.contacts(username) == []


def test_add_user_takes_effect_without_restart(lab):
    import uuid

    username = f"late-{uuid.uuid4().hex[:8]}"
    pid_before = lab.node("R").pid
    lab.add_user(username, "first-pw")
    assert _only_call(_register(lab, (username, "first-pw")))[1] == 200
    lab.add_user(username, "second-pw")  # changed password: the old one no longer works
    assert _only_call(_register(lab, (username, "first-pw"), recv_timeout_ms=RECV_TIMEOUT_FAIL_MS))[1] != 200
    assert _only_call(_register(lab, (username, "second-pw")))[1] == 200
    assert lab.node("R").pid == pid_before


def test_wire_log_never_holds_credentials(lab, lab_user):
    username, password = lab_user("secret-")
    assert _only_call(_register(lab, (username, password)))[1] == 200
    for n in "PRE":
        text = lab.log_path(n).read_text(errors="replace")
        assert password not in text
        assert "Authorization" not in text and "response=" not in text and "Digest " not in text
    assert password not in json.dumps(lab.status())


# ------------------------------------------------------------------------------------------------ injection


@pytest.mark.parametrize("node", ["R", "P"])
@pytest.mark.parametrize("code", ["503", "408"])
def test_inject_error_answer(clean_lab, lab_user, node, code):
    lab = clean_lab
    user = lab_user(f"inj{code}-")
    lab.inject(node, code)
    assert lab.injection(node) == code
    res = _register(lab, user, recv_timeout_ms=RECV_TIMEOUT_FAIL_MS)
    call_id, got = _only_call(res)
    assert got == int(code), (res.final_codes, res.errors[:3])
    recs = _records(lab, call_id, node="P")
    assert recs[0].cseq == 1
    at_r = lab.wire(call_id=call_id, node="R")
    if node == "R":
        assert at_r and all(not r.has_auth for r in at_r)
    else:
        assert at_r == []  # P answered itself
    assert lab.contacts(user[0]) == []

    lab.inject(node, "normal")
    assert _only_call(_register(lab, user))[1] == 200


def test_inject_blackhole_at_registrar(clean_lab, lab_user):
    lab = clean_lab
    user = lab_user("bhr-")
    lab.inject("R", "blackhole")
    res = _register(lab, user, recv_timeout_ms=RECV_TIMEOUT_FAIL_MS)
    call_id, got = _only_call(res)
    assert got == "timeout", (res.final_codes, res.errors[:3])
    assert _records(lab, call_id, node="R")  # R received it (and said nothing)
    assert lab.contacts(user[0]) == []


def test_inject_blackhole_at_proxy(clean_lab, lab_user):
    lab = clean_lab
    user = lab_user("bhp-")
    lab.inject("P", "blackhole")
    res = _register(lab, user, recv_timeout_ms=RECV_TIMEOUT_FAIL_MS)
    call_id, got = _only_call(res)
    assert got == "timeout", (res.final_codes, res.errors[:3])
    # UDP retransmissions reach P (logged as received) and go no further
    assert len(_records(lab, call_id, node="P", min_count=2)) >= 2
    assert lab.wire(call_id=call_id, node="R") == []


def test_inject_delay_still_registers(clean_lab, lab_user):
    lab = clean_lab
    user = lab_user("delay-")
    lab.inject("R", "delay:1200")
    assert lab.injection("R") == "delay:1200"
    res = _register(lab, user, recv_timeout_ms=20000)
    call_id, got = _only_call(res)
    assert got == 200, (res.final_codes, res.errors[:3])
    # longer than T1 (500 ms): P retransmitted to R while R held the REGISTER, and R still answered once
    at_r = [r for r in _records(lab, call_id, node="R", min_count=3) if r.cseq == 1]
    assert len(at_r) >= 2
    assert res.rtts_ms and max(res.rtts_ms) >= 1000  # a lower bound only: the sleep cannot be shorter


def test_injection_survives_node_restart(clean_lab, lab_user):
    lab = clean_lab
    lab.inject("R", "503")
    lab.stop_node("R")
    lab.start_node("R")
    user = lab_user("persist-")
    assert _only_call(_register(lab, user, recv_timeout_ms=RECV_TIMEOUT_FAIL_MS))[1] == 503


# ------------------------------------------------------------------------------------------------ node control


def test_stop_and_start_proxy(clean_lab, lab_user):
    lab = clean_lab
    user = lab_user("stop-")
    old = lab.node("P")
    r_pid = lab.node("R").pid
    lab.stop_node("P")
    stopped = lab.node("P")
    assert not stopped.running and stopped.pid is None
    assert not os.path.exists(f"/proc/{old.pid}") or _is_zombie(old.pid)
    t = time.time()
    res = _register(lab, user, recv_timeout_ms=RECV_TIMEOUT_FAIL_MS)
    assert res.count(200) == 0 and res.successful == 0, res.final_codes
    assert [r for r in lab.wire(since=t) if user[0] in r.from_uri] == []  # nobody received it

    new = lab.start_node("P")
    assert new.running and new.pid != old.pid and (new.ip, new.port) == (old.ip, old.port)
    assert lab.node("R").pid == r_pid
    assert _only_call(_register(lab, user))[1] == 200


def test_contacts_survive_proxy_restart_but_not_registrar_restart(clean_lab, lab_user):
    lab = clean_lab
    user = lab_user("mem-")
    assert _only_call(_register(lab, user))[1] == 200
    lab.stop_node("P")
    lab.start_node("P")
    assert lab.contacts(user[0])
    lab.stop_node("R")
    lab.start_node("R")
    assert lab.contacts(user[0]) == []  # usrloc is in memory
    assert _only_call(_register(lab, user))[1] == 200  # users are kept


def test_hard_stop_kills_every_process_of_the_node(clean_lab, lab_user):
    lab = clean_lab
    old = lab.node("E")
    group = [p for p in _group(old.pid)]
    assert len(group) > 1  # main + workers
    lab.stop_node("E", hard=True)
    assert not lab.node("E").running
    wait_for(lambda: not _group(old.pid), timeout=60, message="all E processes gone")
    new = lab.start_node("E")
    assert new.running and new.pid != old.pid
    user = lab_user("hard-")
    assert _only_call(_register(lab, user, via="E"))[1] == 200


def _group(pgid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    rest = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(rest[2]) == pgid and rest[0] != "Z":
                out.append(int(d))
    return out


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


# ------------------------------------------------------------------------------------------------ calls


def test_call_through_proxy_and_registrar_to_registered_user(lab, lab_user):
    user = lab_user("callee-")
    callee_ip = lab.sipp_ip(1)  # a second SIPp address, so the UAS is not the registering client's
    assert callee_ip == f"{lab.subnet}.11"
    callee_port = lab.free_port(callee_ip)
    # the callee's contact is the SIPp UAS address
    reg = _register(lab, user, local_ip=callee_ip, local_port=callee_port)
    assert _only_call(reg)[1] == 200
    assert lab.contacts(user[0]) == [f"sip:{user[0]}@{callee_ip}:{callee_port};transport=UDP"]

    with lab.sipp_uas(callee_ip, callee_port, calls=2, timeout=60) as uas:
        res = lab.sipp(
            "uac_call",
            "P",
            ruri=lab.aor(user[0]),
            route=f"<{lab.proxy_uri()}>",
            calls=2,
            concurrency=2,
            pause_ms=100,
            timeout=60,
        )
        assert res.returncode == 0, (res.final_codes, res.errors[:3], res.stdout_tail[-1500:])
        assert len(res.final_codes) == 2 and set(res.final_codes.values()) == {200}
        assert res.count(200) == 2 and res.successful == 2 and res.failed == 0
        uas_res = uas.wait()
    assert uas_res.returncode == 0 and uas_res.count(200) == 2, (uas_res.final_codes, uas_res.errors[:3])
    for call_id in res.final_codes:
        recs = _records(lab, call_id, min_count=2)
        invites = [r for r in recs if r.method == "INVITE"]
        assert [r.node for r in invites] == ["P", "R"]
        assert invites[0].route == [lab.proxy_uri()] and invites[0].ruri == lab.aor(user[0])


def test_call_to_unknown_user_gets_404(lab):
    res = lab.sipp(
        "uac_call",
        "R",
        ruri=f"sip:nobody-here@{lab.domain}",
        timeout=60,
        recv_timeout_ms=10000,
    )
    _, code = _only_call(res)
    assert code == 404, (res.final_codes, res.errors[:3])


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_status_and_inject(clean_lab):
    lab = clean_lab
    base = [sys.executable, "-m", "sipfleet.cli", "lab", "--name", lab.name, "--state-dir", str(lab.state_dir)]
    out = subprocess.run(base + ["--json", "status"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    st = json.loads(out.stdout)
    assert st["subnet"] == lab.subnet
    assert {n: st["nodes"][n]["pid"] for n in "PRE"} == {n: lab.node(n).pid for n in "PRE"}
    out = subprocess.run(base + ["inject", "E", "delay:50"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert lab.injection("E") == "delay:50"
    out = subprocess.run(base + ["inject", "E", "bogus"], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    out = subprocess.run(base + ["wire", "--last", "3"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for line in out.stdout.splitlines():
        assert set(json.loads(line)) >= {"node", "at", "method", "route", "has_auth"}
