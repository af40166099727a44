"""Pure pieces of the node runner's Node registration: taint syntax, Node object and status."""

from __future__ import annotations

import pytest

from sipfleet.localenv.noderunner.node import KUBELET_VERSION, node_object, node_status, parse_taint


@pytest.mark.parametrize("text,taint", [
    ("a=b:NoSchedule", {"key": "a", "value": "b", "effect": "NoSchedule"}),
    ("example.com/k:NoExecute", {"key": "example.com/k", "effect": "NoExecute"}),
    ("k=v=w:PreferNoSchedule", {"key": "k", "value": "v=w", "effect": "PreferNoSchedule"}),
])
def test_parse_taint(text, taint):
    assert parse_taint(text) == taint


@pytest.mark.parametrize("bad", ["a=b", "a=b:Sometimes", ":NoSchedule"])
def test_parse_taint_rejects(bad):
    with pytest.raises(ValueError):
        parse_taint(bad)


def test_node_object_is_untainted_unless_asked():
    n = node_object("n1")
    assert n["spec"] == {} and n["metadata"]["labels"]["kubernetes.io/hostname"] == "n1"
    assert node_object("n1", [{"key": "k", "effect": "NoSchedule"}])["spec"]["taints"][0]["key"] == "k"


def test_node_status_is_schedulable_and_ready():
    transitions: dict[str, str] = {}
    cap = {"cpu": "2", "memory": "1024Ki", "pods": "110"}
    st = node_status("n1", cap, "127.0.0.1", transitions, kubelet_port=4321)
    assert st["capacity"] == st["allocatable"] == cap
    ready = [c for c in st["conditions"] if c["type"] == "Ready"]
    assert ready[0]["status"] == "True"
    assert {c["type"]: c["status"] for c in st["conditions"]} == {
        "MemoryPressure": "False", "DiskPressure": "False", "PIDPressure": "False", "Ready": "True"}
    assert [a for a in st["addresses"] if "type" in a] == [{"type": "InternalIP", "address": "127.0.0.1"}]
    assert st["nodeInfo"]["kubeletVersion"] == KUBELET_VERSION == "v1.35.4"
    assert st["daemonEndpoints"]["kubeletEndpoint"]["Port"] == 4321
    # transition times stay put between reports
    again = node_status("n1", cap, "127.0.0.1", transitions)
    assert [c["lastTransitionTime"] for c in again["conditions"]] == [c["lastTransitionTime"] for c in st["conditions"]]
