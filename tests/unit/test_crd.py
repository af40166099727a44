"""The committed CRD is generated from the API models; this fails when they disagree."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from sipfleet.api import crd, models

ROOT = Path(__file__).resolve().parents[2]


def test_committed_crd_matches_models():
    assert crd.check(ROOT) is None, crd.check(ROOT)


def test_check_detects_a_stale_crd(tmp_path):
    crd.write(tmp_path)
    path = crd.crd_paths(tmp_path)[0]
    path.write_text(path.read_text().replace("maxItems: 4", "maxItems: 5"))
    assert "differs" in crd.check(tmp_path)


def test_schema_is_structural_enough():
    schema = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    text = repr(schema)
    for forbidden in ("$ref", "anyOf", "'title'", "$defs", "'const'"):
        assert forbidden not in text
    spec = schema["properties"]["spec"]
    assert spec["required"] == ["aor", "registrar", "credentials"]
    # full defaults, not {}: the apiserver checks an object default against its CEL rules as written
    assert spec["properties"]["registration"]["default"] == models.RegistrationSettings().to_api()
    assert "x-kubernetes-validations" in spec


def test_spec_defaults_and_aliases():
    spec = models.SipAccountSpec.model_validate(
        {"aor": "sip:alice@example.com", "registrar": "sip:example.com", "route": ["sip:p.example.com;lr"],
         "credentials": {"secretName": "alice"}}
    )
    wire = spec.to_api()
    assert wire["routeMode"] == "prevent"
    assert wire["registration"]["expiresSeconds"] == 300
    assert wire["credentials"] == {"secretName": "alice", "usernameKey": "username",
                                   "passwordKey": "password", "realm": "*"}


@pytest.mark.parametrize("bad", [
    {"aor": "alice@example.com"},
    {"registrar": "registrar.example.com"},
    {"route": ["sip:p.example.com;lr", "sip:p.example.com;lr"]},
    {"transport": "sctp"},
])
def test_spec_rejects_bad_values(bad):
    base = {"aor": "sip:alice@example.com", "registrar": "sip:example.com", "credentials": {"secretName": "a"}}
    with pytest.raises(ValidationError):
        models.SipAccountSpec.model_validate(base | bad)


def test_assignment_fits_the_workers_of_one_agent():
    acc = {"name": "a", "aor": "sip:a@x.test", "registrar": "sip:x.test", "route": ["sip:p.test;lr"],
           "credentials": {"secretName": "a"}}
    # routes and modes may differ: each worker key gets workers of its own
    mixed = [acc | {"name": f"n{i}", "route": [f"sip:p{i % 3}.test;lr"]} for i in range(20)]
    mixed.append(acc | {"name": "acct", "routeMode": "account"})
    a = models.AgentAssignment.model_validate({"agent": "x", "accounts": mixed})
    assert models.workers_needed(a.accounts) == 3 + 1  # 7, 7, 6 accounts of three routes, one account-mode
    models.AgentAssignment.model_validate({"agent": "x", "accounts": [acc | {"name": f"n{i}"} for i in range(64)]})
    with pytest.raises(ValidationError, match="at most 64"):
        models.AgentAssignment.model_validate({"agent": "x", "accounts": [acc | {"name": f"n{i}"} for i in range(65)]})
    with pytest.raises(ValidationError, match="need 9 workers"):
        models.AgentAssignment.model_validate({"agent": "x", "accounts": [
            acc | {"name": f"n{i}", "route": [f"sip:p{i}.test;lr"]} for i in range(9)]})
    with pytest.raises(ValidationError, match="unique"):
        models.AgentAssignment.model_validate({"agent": "x", "accounts": [acc, acc]})


def test_header_strings_refuse_control_characters_and_routes_are_loose():
    import pytest as _pytest
    from pydantic import ValidationError

    from sipfleet.api import models as m

    base = {"aor": "sip:alice@example.test", "registrar": "sip:10.213.201.2", "route": ["sip:10.213.201.1;lr"],
            "credentials": {"secretName": "s"}}
    m.SipAccountSpec.model_validate(base)
    m.SipAccountSpec.model_validate({**base, "route": ["sip:p;transport=tcp;lr", "sip:q;lr=on"]})
    for bad in ({**base, "credentials": {"secretName": "s", "realm": "a\r\nb"}},
                {**base, "credentials": {"secretName": "s", "realm": 'x"y'}},
                {**base, "aor": "sip:a\x00b@example.test"},
                {**base, "registrar": "sip:r;x=\x7f"},
                {**base, "route": ["sip:p"]},
                {**base, "route": ["sip:p;lrx"]},
                {**base, "route": ["sip:p;lr;x=a\nb"]}):
        with _pytest.raises(ValidationError):
            m.SipAccountSpec.model_validate(bad)
