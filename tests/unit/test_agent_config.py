"""Loading assignments and credentials for the standalone agent (no pjsua, no lab)."""

from __future__ import annotations

import json

import pytest

from sipfleet_agent.config import ConfigError, ResolvedAccount, file_credentials, load_assignment_file, parse_assignment
from sipfleet_agent.main import build_parser
from sipfleet_agent.netaddr import address_fingerprint, local_addresses


def _acc(name="alice", **kw):
    d = {
        "name": name,
        "aor": f"sip:{name}@lab.test",
        "registrar": "sip:127.0.20.2:5060",
        "route": ["sip:127.0.20.1:5060;lr"],
        "credentials": {"username": name, "passwordFile": f"{name}.pw"},
    }
    d.update(kw)
    return d


def test_yaml_and_json_assignments(tmp_path):
    (tmp_path / "alice.pw").write_text("s3cret\n")
    y = tmp_path / "a.yaml"
    y.write_text("agent: a1\naccounts:\n- name: alice\n  aor: sip:alice@lab.test\n  registrar: sip:127.0.20.2\n"
                 "  route: ['sip:127.0.20.1;lr']\n  credentials: {username: alice, passwordFile: alice.pw}\n")
    a = load_assignment_file(y)
    assert a.agent == "a1" and a.accounts[0].route_mode == "prevent"
    creds = file_credentials(a.accounts[0], tmp_path)
    assert creds.username == "alice" and creds.password == "s3cret"
    assert "s3cret" not in repr(creds)
    j = parse_assignment(json.dumps({"agent": "a2", "accounts": [_acc()]}))
    assert j.accounts[0].name == "alice"


def test_invalid_configs_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError):
        parse_assignment("- just a list")
    with pytest.raises(ConfigError, match="at most 64"):
        parse_assignment(json.dumps({"agent": "a", "accounts": [_acc(f"u{i}") for i in range(65)]}))
    with pytest.raises(ConfigError, match="need 9 workers"):
        parse_assignment(json.dumps({"agent": "a", "accounts": [
            _acc(f"u{i}", route=[f"sip:127.0.20.{i + 10};lr"]) for i in range(9)]}))
    with pytest.raises(ConfigError):
        load_assignment_file(tmp_path / "missing.yaml")
    a = parse_assignment(json.dumps({"agent": "a", "accounts": [_acc()]}))
    with pytest.raises(ConfigError, match="cannot read credentials"):
        file_credentials(a.accounts[0], tmp_path)


def test_resolved_account_route_and_recreate_key(tmp_path):
    (tmp_path / "alice.pw").write_text("pw-first-Xq1")
    a = parse_assignment(json.dumps({"agent": "a", "accounts": [_acc(transport="tcp")]})).accounts[0]
    r1 = ResolvedAccount(a, file_credentials(a, tmp_path))
    assert r1.applied_route() == ["sip:127.0.20.1:5060;lr;transport=tcp"]
    assert r1.expires == 300
    assert ResolvedAccount(a, r1.creds, expires_override=5).expires == 5
    (tmp_path / "alice.pw").write_text("pw-second-Zr2")
    r2 = ResolvedAccount(a, file_credentials(a, tmp_path))
    assert r1.recreate_key() != r2.recreate_key()  # a password change re-creates the account
    b = a.model_copy(update={"repair_token": "t1"})
    assert ResolvedAccount(b, r1.creds).recreate_key() == r1.recreate_key()  # tokens do not
    assert "pw-first-Xq1" not in repr(r1) and "pw-second-Zr2" not in repr(r2)


def test_cli_options():
    args = build_parser().parse_args(["run", "--config", "x.yaml", "--self-heal", "--expires-override", "5"])
    assert args.self_heal and args.expires_override == 5
    assert build_parser().parse_args(["cluster"]).cmd == "cluster"


def test_local_addresses_and_fingerprint():
    addrs = local_addresses()
    assert any(a == "127.0.0.1" for _, a, _ in addrs)
    fp = address_fingerprint("127.0.20.200")
    assert fp[0] == "covered" and fp == address_fingerprint("127.0.20.200")


def test_credentials_a_sip_stack_cannot_carry_are_refused_by_the_agent_too():
    from sipfleet_agent.config import ConfigError, Secretish, checked

    ok = Secretish(username="alice", password="pw")
    assert checked(ok, "account a:") is ok
    for creds, part in ((Secretish(username="a\r\nX-Injected: yes", password="pw"), "username"),
                        (Secretish(username='a"b', password="pw"), "username"),
                        (Secretish(username="alice", password="p" * 2000), "password")):
        with pytest.raises(ConfigError) as e:
            checked(creds, "account a:")
        assert str(e.value).startswith("CredentialsInvalid: account a: " + part)
        assert "X-Injected" not in str(e.value) and "ppp" not in str(e.value)
