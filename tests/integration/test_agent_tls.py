"""The agent's TLS policy against the lab (standalone agents, real pjsua2 and Kamailio): an account with
``transport: tls`` registers through P's TLS listener verified against the lab CA, and status, metrics and P's wire
log agree on the TLS version and cipher; the wrong CA and a name mismatch end in ``failureReason: TlsVerifyFailed``
with pjsip's verification message, nothing reaches P's SIP layer, and the worker is not restarted (no crash loop).
"""

from __future__ import annotations

import time

import pytest

from tests.fixtures.agent import registers

pytestmark = pytest.mark.lab


@pytest.fixture
def tls_account(lab, agent_account):
    assert lab.tls_enabled, "Kamailio's tls module is missing: run ./scripts/setup (kamailio-tls-modules)"

    def make(prefix: str, cert: str = "good", ca=None, **tls):
        acc, user = agent_account(prefix, transport="tls", routeMode="prevent")
        acc["route"] = [lab.proxy_uri("tls", cert)]
        acc["tls"] = {"caFile": str(ca or lab.tls.ca_crt), **tls}
        return acc, user

    return make


def _tls_failed(agent, user: str, timeout: float = 30.0) -> dict:
    return agent.wait_status(user, lambda s: (s["registration"].get("failureReason") == "TlsVerifyFailed"
                                              and (s.get("tls") or {}).get("state") == "Failed"), timeout,
                             "Failed with TlsVerifyFailed")


def test_registers_over_tls_verified_and_reports_version_and_cipher(lab, agent_factory, tls_account):
    acc, user = tls_account("tlsok")
    t0 = time.time()
    agent = agent_factory([acc])
    st = agent.wait_status(user, lambda s: s["registration"]["state"] == "Registered"
                           and (s.get("tls") or {}).get("state") == "Connected", 60, "Registered over TLS")
    tls = st["tls"]
    assert tls["verified"] is True and tls["verifyMessages"] == ["OK"], tls
    assert tls["remote"] == lab.tls_hostport("P")
    assert tls["enabledProtocols"] == ["TLSv1.2"] and tls["protocol"] == "TLSv1.2"
    assert tls["library"].startswith("OpenSSL 1.0.2k"), tls
    assert st["route"]["firstHop"] == f"tls:{lab.tls_hostport('P')}"
    # P's wire log: the REGISTERs came over TLS, with the version and cipher the agent reports
    recs = registers(lab, user, node="P", since=t0)
    assert recs and {r.transport for r in recs} == {"tls"}
    assert {(r.tls_version, r.tls_cipher) for r in recs} == {("TLSv1.2", tls["cipher"])}, recs
    assert agent.metric("sipfleet_agent_tls_connected_accounts",
                        f'cipher="{tls["cipher"]}",protocol="TLSv1.2"') == 1.0


@pytest.mark.parametrize("case", ["wrong-ca-trusted", "wrong-ca-served", "name-mismatch"])
def test_wrong_ca_and_name_mismatch_fail_with_the_reason_and_no_crash(lab, agent_factory, tls_account, case):
    cert, ca, msg = {
        "wrong-ca-trusted": ("good", lab.tls.wrong_ca_crt, "untrusted"),
        "wrong-ca-served": ("wrong-ca", None, "untrusted"),
        "name-mismatch": ("wrong-name", None, "identity does not match"),
    }[case]
    acc, user = tls_account("tlsbad", cert=cert, ca=ca)
    t0 = time.time()
    agent = agent_factory([acc])
    st = _tls_failed(agent, user)
    reg = st["registration"]
    assert reg["state"] == "Failed" and reg["code"] == 503, reg
    assert "PJSIP_TLS_ECERTVERIF" in reg["reason"] and msg in reg["reason"], reg
    assert st["tls"]["verified"] is False and any(msg in m for m in st["tls"]["verifyMessages"]), st["tls"]
    assert agent.metric("sipfleet_agent_tls_failures_total", 'reason="verify"') >= 1.0
    # retried at the account's retry interval (5 s here), not in a loop, by the same worker
    time.sleep(6)
    assert agent.proc.poll() is None
    snap = agent.snapshot()
    assert [w["restarts"] for w in snap["workers"]] == [0], snap["workers"]
    assert "WorkerRestarted" not in agent.stderr_text()
    assert agent.metric("sipfleet_agent_tls_failures_total", 'reason="verify"') <= 4.0
    assert not registers(lab, user, node="P", since=t0)  # nothing reached P's SIP layer


def test_without_verification_it_registers_and_says_unverified(lab, agent_factory, tls_account):
    acc, user = tls_account("tlsnv", cert="wrong-name")
    acc["tls"] = {"verifyServer": False}
    agent = agent_factory([acc])
    st = agent.wait_status(user, lambda s: s["registration"]["state"] == "Registered"
                           and (s.get("tls") or {}).get("state") == "Connected", 60, "Registered over TLS")
    assert st["tls"]["verified"] is False and st["tls"]["cipher"], st["tls"]


def test_a_tls13_only_server_is_a_handshake_failure(lab, agent_factory, tls_account, tmp_path):
    """The wheel's OpenSSL 1.0.2k has no TLS 1.3: against a server that accepts only TLS 1.3 (Python's ssl on a lab
    address, a certificate from the lab CA for that address) the account fails with TlsHandshakeFailed."""
    import socket
    import ssl
    import threading

    from cryptography.hazmat.primitives import serialization

    from sipfleet.localenv import pki

    ip = lab.client_address()
    ca = x509_load(lab.tls.ca_crt.read_bytes())
    ca_key = serialization.load_pem_private_key(lab.tls.key("ca").read_bytes(), password=None)
    cert, key = pki.issue(ca, ca_key, ip, server=True, ips=[ip])
    (tmp_path / "s.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "s.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(tmp_path / "s.crt", tmp_path / "s.key")
    srv = socket.socket()
    srv.bind((ip, 0))
    srv.listen(8)
    srv.settimeout(0.5)
    port = srv.getsockname()[1]
    errors: list[str] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            try:
                with ctx.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError) as e:
                errors.append(str(e))

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        acc, user = tls_account("tls13")
        acc["route"] = [f"sip:{ip}:{port};lr;transport=tls"]
        agent = agent_factory([acc])
        st = agent.wait_status(user, lambda s: s["registration"].get("failureReason") == "TlsHandshakeFailed",
                               30, "Failed with TlsHandshakeFailed")
        assert st["registration"]["state"] == "Failed" and st["registration"]["code"] == 503, st["registration"]
        assert "protocol version" in st["registration"]["reason"], st["registration"]  # OpenSSL's alert
        assert st["tls"]["state"] == "Failed" and st["tls"]["verified"] is False, st["tls"]
        assert any("unsupported protocol" in e.lower() for e in errors), errors  # the server saw no TLS 1.3 offered
        assert agent.metric("sipfleet_agent_tls_failures_total", 'reason="handshake"') >= 1.0
        assert agent.proc.poll() is None
    finally:
        stop.set()
        t.join(5)
        srv.close()
        lab.release_client_address(ip)


def x509_load(data: bytes):
    from cryptography import x509

    return x509.load_pem_x509_certificate(data)
