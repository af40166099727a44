"""The Dockerfiles, the console scripts, the chart's defaults and the node runner's image table agree.

Images cannot be built here (no container engine), so this checks what can be checked statically: multi-stage,
pinned base, non-root numeric USER, no build tools in the final stage, an ENTRYPOINT that is a real console
script, and the same image names everywhere.
"""

from __future__ import annotations

import importlib
import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "images"
CHART = REPO / "charts" / "sipfleet"
COMPONENTS = {"operator": "sipfleet-operator", "agent": "sipfleet-agent"}


def scripts() -> dict[str, str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, rest) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def stages(path: Path) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instructions(path):
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def chart_values() -> dict:
    return yaml.safe_load((CHART / "values.yaml").read_text())


@pytest.mark.parametrize("component", sorted(COMPONENTS))
def test_dockerfile_shape(component):
    path = IMAGES / f"Dockerfile.{component}"
    ins = instructions(path)
    args = dict(re.match(r"(\w+)=(\S+)", rest).groups() for word, rest in ins if word == "ARG" and "=" in rest)
    base = args["PYTHON_IMAGE"]
    # pinned: an exact patch release of Python 3.11 on a named Debian release, or a digest
    assert re.fullmatch(r"python:3\.11\.\d+-slim-(bookworm|trixie)(@sha256:[0-9a-f]{64})?", base) or "@sha256:" in base, base

    st = stages(path)
    assert len(st) >= 2, "multi-stage: a builder and a final stage"
    assert st[0][0][1].endswith("AS builder")
    final = st[-1]
    assert final[0] == ("FROM", "${PYTHON_IMAGE}"), "the final stage uses the same pinned base"
    final_text = " ".join(rest for _, rest in final)
    assert not any(word == "RUN" for word, _ in final), "the final stage runs nothing (no package installs)"
    for tool in ("gcc", "build-essential", "apt-get", "pip install"):
        assert tool not in final_text
    copies = [rest for word, rest in final if word == "COPY"]
    assert copies and all(c.startswith("--from=builder ") for c in copies)

    users = [rest for word, rest in final if word == "USER"]
    assert users, "the final stage sets USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0 and (not gid or (gid.isdigit() and int(gid) > 0))

    (entry,) = [json.loads(rest) for word, rest in final if word == "ENTRYPOINT"]
    assert isinstance(entry, list) and entry == [COMPONENTS[component]], entry


@pytest.mark.parametrize("component", sorted(COMPONENTS))
def test_entrypoint_is_a_real_console_script(component):
    script = COMPONENTS[component]
    target = scripts().get(script)
    assert target, f"{script} is not in pyproject.toml [project.scripts]"
    module, _, func = target.partition(":")
    mod = importlib.import_module(module)
    assert callable(getattr(mod, func, None)), f"{target} does not exist"


def test_runtime_uid_matches_the_chart():
    values = chart_values()
    for component in COMPONENTS:
        final = stages(IMAGES / f"Dockerfile.{component}")[-1]
        uid = int([rest for word, rest in final if word == "USER"][-1].split(":")[0])
        sc = values["podSecurityContext"] if component == "operator" else values["agent"]["podSecurityContext"]
        assert sc["runAsUser"] == uid


def test_dockerignore_keeps_what_the_build_copies():
    base = (IMAGES / ".dockerignore").read_text()
    for component in COMPONENTS:
        assert (IMAGES / f"Dockerfile.{component}.dockerignore").read_text() == base
        for word, rest in stages(IMAGES / f"Dockerfile.{component}")[0]:
            if word == "COPY" and not rest.startswith("--from"):
                for src in rest.split()[:-1]:
                    assert f"!{src.rstrip('/')}" in base.replace("/\n", "\n"), f"{src} is excluded by .dockerignore"


def test_image_names_agree_with_the_node_runner_and_the_operator():
    from sipfleet.localenv import images

    values = chart_values()
    app_version = str(yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"])
    chart_images = {"operator": values["image"]["repository"], "agent": values["agent"]["image"]["repository"]}
    for component, repo in chart_images.items():
        entry = images.lookup(f"{repo}:{app_version}")
        # the node runner runs the same program the image's ENTRYPOINT names
        module = scripts()[COMPONENTS[component]].partition(":")[0]
        assert entry.entrypoint[-2:] == ("-m", module), entry.entrypoint
        assert repo == f"sipfleet/{component}"

    from sipfleet_operator.config import Settings

    assert Settings().agent_image == f"{chart_images['agent']}:{app_version}"


@pytest.mark.parametrize("component", sorted(COMPONENTS))
def test_console_script_answers_help(component):
    """The builder stage's smoke test (`sipfleet-<component> --help`) passes."""
    import subprocess
    import sys

    module = scripts()[COMPONENTS[component]].partition(":")[0]
    proc = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "usage" in proc.stdout.lower()
