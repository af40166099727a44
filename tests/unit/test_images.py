"""The Dockerfiles, the console scripts, the chart's defaults and the image build agree.

Statically: multi-stage, pinned base, the two stages a local build replaces (``base``, ``wheelhouse``), no
``# syntax`` line (it would pull a frontend image), non-root numeric USER, no build tools in the final stage, an
ENTRYPOINT that is a real console script of the image's own packaging, and the same image names everywhere.
Building and running the images: tests/integration/test_images_build.py.
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


def product_scripts(component: str) -> dict[str, str]:
    return tomllib.loads((IMAGES / component / "pyproject.toml").read_text())["project"]["scripts"]


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
    assert not re.search(r"(?im)^#\s*syntax\s*=", path.read_text()), "a syntax line makes BuildKit pull a frontend"
    ins = instructions(path)
    args = dict(re.match(r"(\w+)=(\S+)", rest).groups() for word, rest in ins if word == "ARG" and "=" in rest)
    base = args["PYTHON_IMAGE"]
    # pinned: an exact patch release of Python 3.11 on a named Debian release, or a digest
    assert re.fullmatch(r"python:3\.11\.\d+-slim-(bookworm|trixie)(@sha256:[0-9a-f]{64})?", base) or "@sha256:" in base, base

    st = stages(path)
    heads = [s[0][1] for s in st]
    # the stages a local build replaces with named contexts, then the builder, then the final stage
    assert heads[:3] == ["${PYTHON_IMAGE} AS base", "scratch AS wheelhouse", "base AS builder"], heads
    assert [word for word, _ in st[1]] == ["FROM"], "the wheelhouse stage is empty (pip then uses the index)"
    final = st[-1]
    assert final[0] == ("FROM", "base"), "the final stage uses the same base as the builder"
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

    builder_runs = " ".join(rest for word, rest in st[2] if word == "RUN")
    assert "--mount=type=bind,from=wheelhouse,target=/wheelhouse" in builder_runs
    # every pinned dependency, then the product alone against them
    assert "pip install --find-links /wheelhouse --requirement constraints.txt" in builder_runs
    assert "pip install --find-links /wheelhouse --no-deps ." in builder_runs
    assert "pip check" in builder_runs
    assert "PIP_NO_INDEX" in [rest.split("=")[0] for word, rest in st[2] if word == "ARG"]


@pytest.mark.parametrize("component", sorted(COMPONENTS))
def test_entrypoint_is_a_real_console_script(component):
    script = COMPONENTS[component]
    target = product_scripts(component).get(script)
    assert target, f"{script} is not in images/{component}/pyproject.toml [project.scripts]"
    assert target == scripts().get(script), "the image and the development install run the same function"
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


@pytest.mark.parametrize("component", sorted(COMPONENTS))
def test_dockerignore_sends_exactly_what_the_build_copies(component):
    from sipfleet.localenv.imagebuild.targets import allowed_paths

    allowed = set(allowed_paths((IMAGES / f"Dockerfile.{component}.dockerignore").read_text()))
    copied = set()
    for word, rest in stages(IMAGES / f"Dockerfile.{component}")[2]:
        if word == "COPY" and not rest.startswith("--from"):
            copied.update(src.rstrip("/") for src in rest.split()[:-1])
    assert copied == allowed
    for path in allowed:
        assert (REPO / path).exists(), path


def test_image_names_agree_with_the_build_and_the_operator():
    from sipfleet.localenv.imagebuild.targets import targets

    values = chart_values()
    app_version = str(yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"])
    chart_images = {"operator": values["image"]["repository"], "agent": values["agent"]["image"]["repository"]}
    built = targets()
    for component, repo in chart_images.items():
        assert repo == f"sipfleet/{component}"
        assert built[component].name == f"{repo}:{app_version}"  # what is built is what the chart runs

    from sipfleet_operator.config import Settings

    assert Settings().agent_image == f"{chart_images['agent']}:{app_version}"


@pytest.mark.parametrize("component", sorted(COMPONENTS))
def test_console_script_answers_help(component):
    """The builder stage's smoke test (`sipfleet-<component> --help`) passes."""
    import subprocess
    import sys

    module = product_scripts(component)[COMPONENTS[component]].partition(":")[0]
    proc = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "usage" in proc.stdout.lower()
