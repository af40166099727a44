"""The node runner's image table (sipfleet/localenv/images.py) and Kubernetes' command/args rules."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sipfleet.localenv import images


@pytest.mark.parametrize("ref,name", [
    ("busybox", "busybox"),
    ("busybox:1.36", "busybox"),
    ("docker.io/library/busybox:1.36", "busybox"),
    ("docker.io/library/busybox@sha256:abcd", "busybox"),
    ("sipfleet/agent:0.1.0", "sipfleet/agent"),
    ("docker.io/sipfleet/agent:latest", "sipfleet/agent"),
    ("localhost:5000/sipfleet/agent:1", "localhost:5000/sipfleet/agent"),
    ("sipfleet/testbox", "sipfleet/testbox"),
])
def test_normalize(ref, name):
    assert images.normalize_image(ref) == name


def test_agent_and_operator_run_their_python_modules():
    assert images.resolve_argv("sipfleet/agent:0.1.0", None, None) == [sys.executable, "-m", "sipfleet_agent.main"]
    assert images.resolve_argv("sipfleet/operator", None, None) == [sys.executable, "-m", "sipfleet_operator.main"]
    assert images.lookup("sipfleet/agent").env["PYTHONUNBUFFERED"] == "1"


def test_args_append_to_entrypoint_and_command_replaces_it():
    assert images.resolve_argv("sipfleet/agent", None, ["run", "--x"]) == [
        sys.executable, "-m", "sipfleet_agent.main", "run", "--x"]
    assert images.resolve_argv("sipfleet/agent", ["sipfleet-agent"], None) == ["sipfleet-agent"]
    assert images.resolve_argv("sipfleet/agent", ["sipfleet-agent"], ["a"]) == ["sipfleet-agent", "a"]


def test_host_images_run_command_and_args_directly():
    assert images.resolve_argv("busybox", ["/bin/sh", "-c"], ["echo hi"]) == ["/bin/sh", "-c", "echo hi"]
    assert images.resolve_argv("docker.io/library/busybox", ["/bin/sh", "-c", "x"], None) == ["/bin/sh", "-c", "x"]
    assert images.resolve_argv("sipfleet/testbox", None, ["/bin/true"]) == ["/bin/true"]
    with pytest.raises(images.NoCommand, match="must give command"):
        images.resolve_argv("busybox", None, None)


def test_unknown_image_message_names_image_and_table():
    with pytest.raises(images.UnknownImage) as e:
        images.resolve_argv("nginx:1.27", None, None)
    msg = str(e.value)
    assert '"nginx:1.27"' in msg and "image table" in msg and "sipfleet/agent" in msg


def test_image_id_is_stable():
    assert images.image_id("busybox:1.2") == images.image_id("docker.io/library/busybox:9") == "sipfleet-local://busybox"


def test_docs_list_every_image():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "node-runner.md").read_text()
    for name in images.IMAGE_TABLE:
        assert f"`{name}`" in doc, f"docs/node-runner.md does not document image {name}"
