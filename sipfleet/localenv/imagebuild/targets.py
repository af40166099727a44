"""Which images sipfleet builds, and from what: one ``Target`` per image (operator, agent).

Names and tags come from the chart (``charts/sipfleet/values.yaml`` repositories, ``Chart.yaml`` appVersion
unless a tag is set), so what is built is what the chart deploys. The product files an image is built from are
the allow-list of its Dockerfile's ``.dockerignore`` (the only files BuildKit sends), so the cache key and the
build context cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

REPO = Path(__file__).resolve().parents[3]
COMPONENTS = ("operator", "agent")


@dataclass(frozen=True)
class Target:
    component: str  # "operator" | "agent"
    repository: str  # e.g. sipfleet/agent
    tag: str  # e.g. 0.1.0
    repo: Path = REPO  # the source tree (the build context)

    @property
    def name(self) -> str:
        """``repository:tag`` as the chart and the operator write it."""
        return f"{self.repository}:{self.tag}"

    @property
    def full_name(self) -> str:
        """The fully qualified name containerd records (and the kubelet looks up) for ``name``."""
        return normalise_ref(self.name)

    @property
    def dockerfile(self) -> Path:
        return self.repo / "images" / f"Dockerfile.{self.component}"

    @property
    def dockerignore(self) -> Path:
        return self.repo / "images" / f"Dockerfile.{self.component}.dockerignore"

    @property
    def product_dir(self) -> Path:
        """Its product-only packaging: pyproject.toml and constraints.txt."""
        return self.repo / "images" / self.component

    @property
    def entrypoint(self) -> str:
        return f"sipfleet-{self.component}"

    def context_paths(self) -> list[Path]:
        """The repository paths the build context holds (the ``.dockerignore`` allow-list)."""
        return [self.repo / p for p in allowed_paths(self.dockerignore.read_text())]


def normalise_ref(ref: str) -> str:
    """Docker's normalisation: ``name:tag`` -> ``docker.io/[library/]name:tag`` (what containerd stores)."""
    first, sep, rest = ref.partition("/")
    if not sep:
        return f"docker.io/library/{ref}"
    if "." in first or ":" in first or first == "localhost":
        return ref
    return f"docker.io/{ref}"


def allowed_paths(dockerignore: str) -> list[str]:
    """The ``!path`` re-inclusions of a deny-all (``**``) .dockerignore, in order."""
    lines = [ln.strip() for ln in dockerignore.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    if not lines or lines[0] != "**":
        raise ValueError(".dockerignore must start with '**' (deny everything, then allow the product)")
    return [ln[1:].rstrip("/") for ln in lines[1:] if ln.startswith("!")]


def targets_from(values: Mapping[str, Any], app_version: str, repo: Path = REPO) -> dict[str, Target]:
    """The images the chart deploys, from its values and appVersion (pure)."""
    images = {"operator": values["image"], "agent": values["agent"]["image"]}
    return {c: Target(c, str(images[c]["repository"]), str(images[c].get("tag") or app_version), repo)
            for c in COMPONENTS}


def targets(repo: Path = REPO) -> dict[str, Target]:
    chart = repo / "charts" / "sipfleet"
    values = yaml.safe_load((chart / "values.yaml").read_text())
    app_version = str(yaml.safe_load((chart / "Chart.yaml").read_text())["appVersion"])
    return targets_from(values, app_version, repo)
