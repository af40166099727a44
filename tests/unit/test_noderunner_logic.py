"""Pure pieces of the node runner: back-off, IP allocation, $(VAR) expansion, env resolution, pod phase."""

from __future__ import annotations

import base64

import pytest

from sipfleet.localenv.noderunner.logic import (
    ConfigError,
    IPAllocator,
    backoff_delay,
    backoff_reset_after,
    expand,
    parse_pod_subnet,
    pod_phase,
    resolve_env,
    should_restart,
)


# ------------------------------------------------------------------------------------------ back-off

def test_backoff_is_kubernetes_default_10s_doubling_capped_at_5min():
    assert [backoff_delay(n) for n in range(1, 9)] == [10, 20, 40, 80, 160, 300, 300, 300]
    assert backoff_delay(0) == 0
    assert backoff_delay(10_000) == 300
    assert backoff_reset_after() == 600


def test_backoff_base_and_cap_are_configurable():
    assert [backoff_delay(n, base=0.5, cap=3) for n in range(1, 6)] == [0.5, 1, 2, 3, 3]


# ------------------------------------------------------------------------------------------ IPs

@pytest.mark.parametrize("text,cidr", [
    ("127.0.101", "127.0.101.0/24"),
    ("127.100", "127.100.0.0/16"),
    ("127.0.101.0/24", "127.0.101.0/24"),
    ("127.5.6.7/30", "127.5.6.4/30"),
])
def test_parse_pod_subnet(text, cidr):
    assert str(parse_pod_subnet(text)) == cidr


@pytest.mark.parametrize("bad", ["10.0.0", "192.168.1.0/24", "", "127.1.2.3.4"])
def test_parse_pod_subnet_rejects_non_loopback_or_garbage(bad):
    with pytest.raises(ValueError):
        parse_pod_subnet(bad)


def test_ip_allocation_is_stable_per_key_and_unique():
    a = IPAllocator("127.0.101")
    ip1 = a.allocate("ns/p1/u1")
    ip2 = a.allocate("ns/p2/u2")
    assert ip1 == "127.0.101.1" and ip2 == "127.0.101.2"
    assert a.allocate("ns/p1/u1") == ip1
    assert a.get("ns/p2/u2") == ip2


def test_ip_allocation_skips_network_broadcast_and_127_0_0_1():
    a = IPAllocator("127.0.0.0/30")  # 127.0.0.0 .. .3: .0 network, .1 is the host
    assert a.allocate("k1") == "127.0.0.2"
    assert a.allocate("k2") == "127.0.0.3"
    with pytest.raises(RuntimeError):
        a.allocate("k3")
    b = IPAllocator("127.9.0.0/23")
    ips = {b.allocate(f"k{i}") for i in range(508)}
    assert len(ips) == 508
    assert not any(ip.endswith(".0") or ip.endswith(".255") for ip in ips)


def test_freed_ips_are_reused_after_the_rest():
    a = IPAllocator("127.0.7.0/29")  # usable .1-.7
    first = [a.allocate(f"k{i}") for i in range(7)]
    assert first == [f"127.0.7.{i}" for i in range(1, 8)]
    a.release("k2")
    a.release("k4")
    assert a.allocate("n1") == "127.0.7.3"
    assert a.allocate("n2") == "127.0.7.5"
    with pytest.raises(RuntimeError):
        a.allocate("n3")


def test_freed_ip_not_handed_out_again_immediately_when_others_are_free():
    a = IPAllocator("127.0.8")
    ip = a.allocate("old")
    a.release("old")
    assert a.allocate("new") != ip


def test_reserve_adopts_a_reported_ip():
    a = IPAllocator("127.0.9")
    assert a.reserve("p", "127.0.9.50")
    assert not a.reserve("q", "127.0.9.50")  # taken
    assert not a.reserve("q", "127.0.10.1")  # outside
    assert not a.reserve("q", "127.0.9.255")
    assert a.allocate("p") == "127.0.9.50"
    assert a.allocate("q") != "127.0.9.50"
    a.release("p")
    assert a.reserve("q2", "127.0.9.50")


# ------------------------------------------------------------------------------------------ expansion

@pytest.mark.parametrize("text,expected", [
    ("$(A)", "1"),
    ("x-$(A)-$(B)-y", "x-1-two-y"),
    ("$(MISSING)", "$(MISSING)"),
    ("$$(A)", "$(A)"),
    ("$$", "$"),
    ("cost: $5", "cost: $5"),
    ("$(A", "$(A"),
    ("tail$", "tail$"),
    ("", ""),
])
def test_expand(text, expected):
    assert expand(text, {"A": "1", "B": "two"}) == expected


# ------------------------------------------------------------------------------------------ env

POD = {
    "metadata": {"name": "p", "namespace": "ns", "uid": "u-1", "labels": {"app": "x"}},
    "spec": {"nodeName": "node-a", "serviceAccountName": "sa"},
}


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


SECRETS = {("ns", "creds"): {"data": {"user": _b64("alice"), "pass": _b64("s3cret")}}}
CMS = {("ns", "cfg"): {"data": {"mode": "fast", "bad key": "skipped", "1x": "ok-start-digit?"}}}


def _resolve(container, pod=POD, **kw):
    return resolve_env(
        pod, container,
        get_secret=lambda ns, n: SECRETS.get((ns, n)),
        get_configmap=lambda ns, n: CMS.get((ns, n)),
        pod_ip=kw.pop("pod_ip", "127.0.101.5"),
        **kw,
    )


def test_env_literals_refs_and_downward_api():
    f = lambda p: {"valueFrom": {"fieldRef": {"fieldPath": p}}}  # noqa: E731
    env = _resolve({
        "name": "c",
        "env": [
            {"name": "LIT", "value": "v"},
            {"name": "USER", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "user"}}},
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
            {"name": "N", **f("metadata.name")},
            {"name": "NS", **f("metadata.namespace")},
            {"name": "UID", **f("metadata.uid")},
            {"name": "IP", **f("status.podIP")},
            {"name": "HOST", **f("status.hostIP")},
            {"name": "NODE", **f("spec.nodeName")},
            {"name": "SA", **f("spec.serviceAccountName")},
            {"name": "APP", **f("metadata.labels['app']")},
            {"name": "COMBO", "value": "$(USER)@$(IP) $(NOPE)"},
        ],
    }, service_env={"KUBERNETES_SERVICE_HOST": "127.0.0.1"})
    assert env == {
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "LIT": "v", "USER": "alice", "MODE": "fast", "N": "p", "NS": "ns", "UID": "u-1",
        "IP": "127.0.101.5", "HOST": "127.0.0.1", "NODE": "node-a", "SA": "sa", "APP": "x",
        "COMBO": "alice@127.0.101.5 $(NOPE)",
    }


def test_env_from_with_prefix_skips_invalid_names_and_env_overrides():
    env = _resolve({
        "name": "c",
        "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}, {"secretRef": {"name": "creds"}}],
        "env": [{"name": "user", "value": "override"}],
    })
    assert env["CFG_mode"] == "fast"
    assert env["CFG_1x"] == "ok-start-digit?"  # prefixed name is valid
    assert "CFG_bad key" not in env
    assert env["pass"] == "s3cret"
    assert env["user"] == "override"


def test_env_missing_secret_is_a_config_error_unless_optional():
    with pytest.raises(ConfigError, match='secret "gone" not found'):
        _resolve({"name": "c", "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k"}}}]})
    with pytest.raises(ConfigError, match="couldn't find key nokey in Secret ns/creds"):
        _resolve({"name": "c", "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "nokey"}}}]})
    with pytest.raises(ConfigError, match='configmap "gone" not found'):
        _resolve({"name": "c", "envFrom": [{"configMapRef": {"name": "gone"}}]})
    env = _resolve({"name": "c", "env": [
        {"name": "X", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k", "optional": True}}},
        {"name": "Y", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "nokey", "optional": True}}},
    ], "envFrom": [{"secretRef": {"name": "gone", "optional": True}}]})
    assert env == {}


def test_env_unsupported_field_path_is_a_config_error():
    with pytest.raises(ConfigError):
        _resolve({"name": "c", "env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.nope"}}}]})


def test_env_resource_field_ref_uses_container_value_or_node_capacity():
    env = _resolve({"name": "c", "resources": {"limits": {"memory": "64Mi"}}, "env": [
        {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory"}}},
        {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
    ]}, node_capacity={"cpu": "2"})
    assert env == {"MEM": "64Mi", "CPU": "2"}


# ------------------------------------------------------------------------------------------ phase

def S(state, code=0, ever=False):
    return {"state": state, "exitCode": code, "ever_started": ever or state != "waiting"}


@pytest.mark.parametrize("policy,states,phase", [
    ("Always", [S("waiting")], "Pending"),
    ("Always", [S("running"), S("waiting")], "Pending"),  # one container not created yet
    ("Always", [S("running")], "Running"),
    ("Always", [S("waiting", ever=True)], "Running"),  # CrashLoopBackOff
    ("Always", [S("terminated", 0)], "Running"),
    ("OnFailure", [S("terminated", 0)], "Succeeded"),
    ("OnFailure", [S("terminated", 0), S("waiting", ever=True)], "Running"),
    ("Never", [S("terminated", 0), S("terminated", 0)], "Succeeded"),
    ("Never", [S("terminated", 0), S("terminated", 3)], "Failed"),
    ("Never", [S("terminated", 1), S("running")], "Running"),
    ("Never", [], "Pending"),
])
def test_pod_phase(policy, states, phase):
    assert pod_phase(policy, states) == phase


def test_pod_phase_pending_until_initialized():
    assert pod_phase("Always", [S("running")], initialized=False) == "Pending"


@pytest.mark.parametrize("policy,code,restart", [
    ("Always", 0, True), ("Always", 1, True), ("OnFailure", 0, False), ("OnFailure", 2, True),
    ("Never", 0, False), ("Never", 1, False),
])
def test_should_restart(policy, code, restart):
    assert should_restart(policy, code) is restart
