"""The supervisor <-> worker protocol: round trips, versioning, errors, and no password in a repr."""

from __future__ import annotations

import json

import pytest

from sipfleet_agent import protocol as p

SAMPLES = [
    p.Init(worker=3, agent="a", pod="pod-1", settings={"sipAddress": "10.0.0.1"}, self_heal=True, pjsip_log_level=3,
           transport="tcp", route=["sip:p.example;lr"], route_mode="prevent"),
    p.Apply(7, [p.WireAccount(spec={"name": "x"}, username="u", password="s3cret-pw", realm="r", expires_override=5)]),
    p.Apply(8, []),
    p.Request(9, "repair", "x"),
    p.Request(10, "snapshot"),
    p.Stop(0),
    p.Hello(worker=1, pid=123, sip_port=5070, version="0.1.0"),
    p.Heartbeat(4, [["sipfleet_agent_accounts", "gauge", "doc", [["sipfleet_agent_accounts", {}, 2.0]]]]),
    p.Status("ns", "x", {"registration": {"state": "Registered"}}),
    p.Reply(9, True, 1),
    p.Reply(11, False, error="boom"),
    p.Rejected("ns", "x", "RegistrarResponseRejected", "10 Service-Route URIs", 10, 8),
    p.Answer("ns", "x"),
]


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_every_message_survives_a_round_trip_as_one_line(msg):
    line = p.encode(msg)
    assert line.endswith("\n") and line.count("\n") == 1
    assert p.decode(line) == msg
    assert json.loads(line)["v"] == p.VERSION


def test_another_version_or_type_or_field_is_refused():
    line = json.loads(p.encode(p.Stop(0)))
    with pytest.raises(p.ProtocolError, match="version"):
        p.decode(json.dumps({**line, "v": p.VERSION + 1}))
    with pytest.raises(p.ProtocolError, match="unknown message type"):
        p.decode(json.dumps({**line, "type": "launch"}))
    with pytest.raises(p.ProtocolError, match="unknown fields"):
        p.decode(json.dumps({**line, "extra": 1}))
    with pytest.raises(p.ProtocolError, match="missing"):
        p.decode(json.dumps({"v": p.VERSION, "type": "hello", "worker": 1}))
    with pytest.raises(p.ProtocolError):
        p.decode("not json")
    with pytest.raises(p.ProtocolError):
        p.encode(object())  # type: ignore[arg-type]


def test_the_password_is_in_the_apply_line_only_never_in_repr_or_describe():
    msg = SAMPLES[1]
    assert "s3cret-pw" in p.encode(msg)  # it has to reach the worker
    assert "s3cret-pw" not in repr(msg)
    assert "s3cret-pw" not in p.describe(msg)
    assert p.describe(msg) == "apply#7(x)"
