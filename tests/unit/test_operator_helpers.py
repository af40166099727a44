"""Small pure helpers of the operator: Secret checks, pod state, settings from the environment, JSON logs."""

from __future__ import annotations

import json
import logging

from sipfleet.api import models as m
from sipfleet_operator.config import Settings
from sipfleet_operator.observed import pod_state, secret_problem
from sipfleet_operator.logs import JsonFormatter

CREDS = m.CredentialsRef(secret_name="creds", password_key="pw")


def test_secret_problem():
    assert secret_problem(None, CREDS).problem == "Secret creds not found"
    ok = secret_problem({"metadata": {"resourceVersion": "7"}, "data": {"username": "YQ==", "pw": "Yg=="}}, CREDS)
    assert ok == type(ok)("7", None)
    bad = secret_problem({"metadata": {"resourceVersion": "8"}, "data": {"username": "YQ=="}}, CREDS)
    assert bad.version == "8" and "pw" in bad.problem and "YQ" not in bad.problem
    empty = secret_problem({"metadata": {}, "data": {"username": "", "pw": "Yg=="}}, CREDS)
    assert "username" in empty.problem and empty.reason == "CredentialsMissing"


def test_secret_values_a_sip_stack_cannot_use_are_credentials_invalid():
    import base64

    def check(username: bytes, password: bytes = b"pw-Xq1"):
        return secret_problem({"metadata": {"resourceVersion": "9"}, "data": {
            "username": base64.b64encode(username).decode(), "pw": base64.b64encode(password).decode()}}, CREDS)

    for username, why in ((b"alice\r\nX-Injected: 1", "control characters (U+000A, U+000D)"),
                          (b"al\x00ice", "U+0000"), (b'al"ice', "double quote"), (b"a\\b", "backslash"),
                          (b"\xff\xfe", "not UTF-8"), (b"u" * 257, "257 bytes")):
        info = check(username)
        assert info.reason == "CredentialsInvalid" and why in info.problem, (username, info)
        assert "key username" in info.problem and username.decode("latin-1") not in info.problem
    big = check(b"alice", b"s3cret-" * 200)
    assert big.reason == "CredentialsInvalid" and "key pw is 1400 bytes" in big.problem and "s3cret" not in big.problem
    assert check("ålice".encode()).problem is None  # UTF-8 is fine
    assert check(b"alice", b"pw with\nnewline").problem is None  # the password only enters the digest
    # stringData (as a client may send it before the apiserver folds it into data) is checked the same way
    sd = secret_problem({"metadata": {}, "stringData": {"username": "a\nb", "pw": "x"}}, CREDS)
    assert sd.reason == "CredentialsInvalid"


def test_pod_state():
    pod = {
        "metadata": {"name": "p", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                   "containerStatuses": [{"restartCount": 2}]},
    }
    st = pod_state(pod, ever_ready=False)
    assert st.ready and st.ever_ready and st.restarts == 2 and not st.deleting and st.name == "p"
    pod["metadata"]["deletionTimestamp"] = "2026-01-01T00:01:00Z"
    pod["status"]["conditions"][0]["status"] = "False"
    pod["status"]["containerStatuses"][0]["restartCount"] = 0
    st = pod_state(pod, ever_ready=True)
    assert st.deleting and not st.ready and st.ever_ready
    assert not pod_state({"metadata": {"name": "q"}, "status": {"phase": "Pending"}}, False).ever_ready
    assert pod_state({"metadata": {"name": "q"}, "status": {"phase": "Pending"}}, False).unschedulable is None


def test_pod_state_carries_the_schedulers_message():
    msg = "0/1 nodes are available: 1 Insufficient memory."
    pod = {"metadata": {"name": "q"}, "status": {"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": msg}]}}
    assert pod_state(pod, False).unschedulable == msg
    pod["status"]["conditions"][0].update(status="True", reason=None)
    assert pod_state(pod, False).unschedulable is None


def test_settings_from_env():
    s = Settings.from_env({})
    assert s.agent_image == "sipfleet/agent:0.1.0" and s.standalone and s.namespaces == ()
    s = Settings.from_env({
        "SIPFLEET_AGENT_IMAGE": "x/agent:2", "SIPFLEET_WATCH_NAMESPACES": "a, b,", "SIPFLEET_METRICS_PORT": "0",
        "SIPFLEET_STANDALONE": "false", "SIPFLEET_LIVENESS_ENDPOINT": "", "SIPFLEET_WATCH_SERVER_TIMEOUT": "60",
    })
    assert (s.agent_image, s.namespaces, s.metrics_port, s.standalone) == ("x/agent:2", ("a", "b"), 0, False)
    assert s.liveness_endpoint is None and s.server_timeout == 60


def test_json_log_lines():
    rec = logging.LogRecord("sipfleet.operator", logging.INFO, __file__, 1, "placed %s", ("ns/a",), None)
    rec.k8s_ref = {"namespace": "ns", "name": "a"}
    doc = json.loads(JsonFormatter().format(rec))
    assert doc["msg"] == "placed ns/a" and doc["level"] == "info" and doc["object"] == "ns/a"


def test_accounts_per_agent_and_sizing_from_env():
    s = Settings.from_env({"SIPFLEET_ACCOUNTS_PER_AGENT": "8",
                           "SIPFLEET_AGENT_SIZING": '{"requests": {"memory": {"base": 100}}}'})
    assert s.accounts_per_agent == 8
    assert s.agent_sizing.memory_request.base == 100
    assert s.agent_sizing.memory_request.per_worker == Settings().agent_sizing.memory_request.per_worker
    assert Settings.from_env({}).accounts_per_agent == m.MAX_ACCOUNTS_PER_AGENT == 64


def test_the_agents_dead_flow_bound_from_env_reaches_their_assignment():
    from sipfleet_operator import builders as b
    from sipfleet_operator import placement as p

    s = Settings.from_env({"SIPFLEET_AGENT_DEAD_FLOW_SECONDS": "12"})
    assert s.agent_dead_flow_seconds == 12 and Settings.from_env({}).agent_dead_flow_seconds == 30
    agent = p.Agent(name="sipfleet-agent-x-0", key=p.GroupKey(namespace="ns"))
    assert b.build_assignment(agent, [], s).settings.dead_flow_seconds == 12
    udp = Settings.from_env({"SIPFLEET_AGENT_UDP_DEAD_FLOW_SECONDS": "9"})
    assert b.build_assignment(agent, [], udp).settings.udp_dead_flow_seconds == 9
    assert b.build_assignment(agent, [], s).settings.udp_dead_flow_seconds == 0  # off unless asked for


def test_agent_overrides_from_env_reach_the_deployment():
    from sipfleet_operator import builders as b
    from sipfleet_operator import placement as p

    s = Settings.from_env({
        "SIPFLEET_AGENT_RESOURCES": '{"limits": {"memory": "1Gi"}}',
        "SIPFLEET_AGENT_POD_SECURITY_CONTEXT": '{"runAsNonRoot": true, "runAsUser": 1000}',
        "SIPFLEET_AGENT_SECURITY_CONTEXT": '{"readOnlyRootFilesystem": true}',
    })
    spec = m.SipAccountSpec(aor="sip:a@b.c", registrar="sip:r", route=["sip:p;lr"], credentials={"secretName": "s"})
    agent = p.place({}, p.GroupKey.for_spec("ns", "a", spec), "a", p.worker_key(spec))
    agent = agent.fleet[agent.agent]
    d = b.build_deployment(agent, [b.HostedAccount("a", "ns", "u", 1, spec)], s)
    pod = d["spec"]["template"]["spec"]
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 1000}
    assert pod["containers"][0]["resources"] == {"limits": {"memory": "1Gi"}}
    assert pod["containers"][0]["securityContext"] == {"readOnlyRootFilesystem": True}


def test_namespace_patterns():
    from sipfleet_operator.observed import namespace_matches

    assert namespace_matches((), "anything")
    assert namespace_matches(("op-*",), "op-x") and not namespace_matches(("op-*",), "default")
    assert namespace_matches(("a", "b"), "b") and not namespace_matches(("a", "b"), "c")
    assert not namespace_matches(("op-*", "!op-skip"), "op-skip")


def test_inputs_digest_sees_user_annotations_and_ladder_token():
    from sipfleet_operator.observed import inputs_digest

    body = {"metadata": {"annotations": {}}, "spec": {"aor": "sip:a@b"}, "status": {}}
    d0 = inputs_digest(body)
    assert inputs_digest({**body, "metadata": {"annotations": {"unrelated": "x"}}}) == d0
    assert inputs_digest({**body, "metadata": {"annotations": {"sipfleet.io/reregister": "1"}}}) != d0
    assert inputs_digest({**body, "metadata": {"annotations": {"sipfleet.io/repair": "1"}}}) != d0
    assert inputs_digest({**body, "metadata": {"annotations": {"sipfleet.io/paused": "true"}}}) != d0
    assert inputs_digest({**body, "status": {"ladder": {"token": "t"}}}) != d0
    assert inputs_digest({**body, "status": {"conditions": [{"type": "Ready"}]}}) == d0


def test_peering_crds_and_objects(capsys):
    import yaml

    from sipfleet_operator.main import main

    assert main(["peering-crds", "-n", "a", "-n", "b"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    kinds = [(d["kind"], d["metadata"].get("namespace")) for d in docs]
    assert kinds == [("CustomResourceDefinition", None), ("CustomResourceDefinition", None),
                     ("KopfPeering", "a"), ("KopfPeering", "b")]
    assert main(["peering-crds"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert docs[-1] == {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "sipfleet"}}


def test_bad_settings_name_the_variable():
    import pytest

    for env, needle in [({"SIPFLEET_METRICS_PORT": "90x"}, "SIPFLEET_METRICS_PORT='90x' is not an integer"),
                        ({"SIPFLEET_LADDER_TICK_SECONDS": "soon"}, "SIPFLEET_LADDER_TICK_SECONDS='soon' is not a number"),
                        ({"SIPFLEET_AGENT_RESOURCES": "{"}, "SIPFLEET_AGENT_RESOURCES is not JSON"),
                        ({"SIPFLEET_AGENT_RESOURCES": "[1]"}, "SIPFLEET_AGENT_RESOURCES must be a JSON object"),
                        ({"SIPFLEET_ACCOUNTS_PER_AGENT": "0"}, "SIPFLEET_ACCOUNTS_PER_AGENT=0 is not within 1..64"),
                        ({"SIPFLEET_ACCOUNTS_PER_AGENT": "65"}, "SIPFLEET_ACCOUNTS_PER_AGENT=65 is not within 1..64"),
                        ({"SIPFLEET_ACCOUNTS_PER_AGENT": "many"}, "SIPFLEET_ACCOUNTS_PER_AGENT='many' is not an integer"),
                        ({"SIPFLEET_AGENT_DEAD_FLOW_SECONDS": "-1"},
                         "SIPFLEET_AGENT_DEAD_FLOW_SECONDS=-1 is not within 0..3600"),
                        ({"SIPFLEET_AGENT_UDP_DEAD_FLOW_SECONDS": "3601"},
                         "SIPFLEET_AGENT_UDP_DEAD_FLOW_SECONDS=3601 is not within 0..3600"),
                        ({"SIPFLEET_AGENT_SIZING": '{"limits": {"cpu": {"base": -5}}}'},
                         "SIPFLEET_AGENT_SIZING: sizing.limits.cpu.base must be a non-negative number")]:
        with pytest.raises(ValueError) as e:
            Settings.from_env(env)
        assert needle in str(e.value)


def test_own_identity_needs_no_passwd_entry():
    from sipfleet_operator.main import own_identity

    assert own_identity({"POD_NAME": "sipfleet-7d9-x2"}, 65532, "h") == "sipfleet-7d9-x2"
    assert own_identity({"POD_ID": "explicit", "POD_NAME": "p"}, 65532, "h") == "explicit"
    assert own_identity({}, 65532, "h") == "uid65532@h"  # kopf's default would raise KeyError (getpwuid)
    assert own_identity({"USER": "dev"}, 1000, "laptop") == "dev@laptop"


def test_settings_are_built_once_from_env_and_options_without_writing_the_env():
    import argparse
    import os

    from sipfleet_operator.main import settings_from

    before = dict(os.environ)
    args = argparse.Namespace(namespace=["a", "b", "a"], metrics_port=0, liveness="", peering=True,
                              agent_image="img:1")
    s = settings_from(args, {"SIPFLEET_WATCH_NAMESPACES": "x", "SIPFLEET_METRICS_PORT": "9999",
                             "SIPFLEET_AGENT_IMAGE": "img:0", "POD_NAME": "op-0"})
    assert (s.namespaces, s.metrics_port, s.liveness_endpoint, s.standalone, s.agent_image, s.instance) == (
        ("a", "b"), 0, None, False, "img:1", "op-0")
    none = argparse.Namespace(namespace=[], metrics_port=None, liveness=None, peering=False, agent_image=None)
    assert settings_from(none, {"SIPFLEET_WATCH_NAMESPACES": "x"}).namespaces == ("x",)
    assert dict(os.environ) == before


def test_the_indexes_kopf_keeps():
    import asyncio

    from sipfleet_operator import handlers as h

    run = asyncio.run

    pod = {"metadata": {"name": "p1", "uid": "u1", "labels": {"sipfleet.io/agent": "ag"}},
           "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    memo: dict = {}
    (st,) = run(h.agent_pods(body=pod, labels=pod["metadata"]["labels"], memo=memo)).values()
    assert st.ready and st.ever_ready and memo["ever_ready"]
    pod["status"]["conditions"][0]["status"] = "False"  # Ready once, not now: remembered in the pod's memo
    assert run(h.agent_pods(body=pod, labels=pod["metadata"]["labels"], memo=memo))["ag"].ever_ready
    assert not run(h.agent_pods(body=pod, labels=pod["metadata"]["labels"], memo={}))["ag"].ever_ready
    assert run(h.agent_pods(body=pod, labels={}, memo={})) is None
    assert run(h.accounts_by_secret(namespace="ns", name="a", spec={"credentials": {"secretName": "s"}})) == {
        ("ns", "s"): "a"}
    assert h._referenced_secret(name="s", namespace="ns", accounts_by_secret={("ns", "s"): ["a"]})
    assert not h._referenced_secret(name="s", namespace="other", accounts_by_secret={("ns", "s"): ["a"]})
