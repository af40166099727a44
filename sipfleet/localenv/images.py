"""The node runner's image table: which local program stands in for which container image.

There is no container runtime on this machine. The node runner (``sipfleet.localenv.noderunner``) runs each
container of a Pod as a local process, and this table says which program an image name stands for. The tag
and digest are ignored (``sipfleet/agent:0.1.0`` and ``sipfleet/agent@sha256:...`` both map to
``sipfleet/agent``). ``docs/node-runner.md`` documents the same table; keep both in step.

Two kinds of entries:

* ``entrypoint`` images behave like an image with an ENTRYPOINT: the Pod's ``command`` replaces the
  entrypoint, the Pod's ``args`` replace the image's default args (here: none) and are appended to the
  entrypoint (Kubernetes' rule).
* ``host`` images have no entrypoint: the container's ``command`` + ``args`` run directly on the host
  (``/bin/sh -c ...``, ``python3 -m http.server ...``); with ``args`` only, ``args[0]`` is the program (as
  for an image without ENTRYPOINT); a container with neither cannot run and is reported like a bad image.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Mapping, Sequence


@dataclasses.dataclass(frozen=True)
class ImageEntry:
    name: str
    #: the image's ENTRYPOINT (empty for ``host`` images)
    entrypoint: tuple[str, ...] = ()
    #: the image's default CMD (arguments appended to the entrypoint when the Pod gives no ``args``)
    cmd: tuple[str, ...] = ()
    #: the image's ENV (the Pod's env overrides it)
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: what it stands for, for humans (docs, error messages)
    description: str = ""

    @property
    def kind(self) -> str:
        return "entrypoint" if self.entrypoint else "host"


def _table() -> dict[str, ImageEntry]:
    py = sys.executable
    python_env = {"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    entries = [
        ImageEntry(
            "sipfleet/agent",
            entrypoint=(py, "-m", "sipfleet_agent.main"),
            env=python_env,
            description="the sipfleet agent (console script sipfleet-agent)",
        ),
        ImageEntry(
            "sipfleet/operator",
            entrypoint=(py, "-m", "sipfleet_operator.main"),
            env=python_env,
            description="the sipfleet operator (console script sipfleet-operator)",
        ),
        ImageEntry("busybox", description="the container's command/args run directly on the host"),
        ImageEntry("sipfleet/testbox", description="the container's command/args run directly on the host"),
    ]
    return {e.name: e for e in entries}


#: image name (without registry default, tag or digest) -> entry
IMAGE_TABLE: dict[str, ImageEntry] = _table()

#: registry prefixes that name the same image as the bare name (docker.io/library/busybox == busybox)
_DEFAULT_REGISTRY_PREFIXES = ("docker.io/library/", "docker.io/", "index.docker.io/library/", "library/")


class UnknownImage(LookupError):
    """The image is not in the table: the container cannot run (reported as ErrImagePull)."""

    def __init__(self, image: str):
        self.image = image
        known = ", ".join(sorted(IMAGE_TABLE))
        super().__init__(
            f'image "{image}" is not in the node runner\'s image table '
            f"(sipfleet/localenv/images.py, docs/node-runner.md); known images: {known}"
        )


class NoCommand(ValueError):
    """A ``host`` image without command/args: nothing to run."""

    def __init__(self, image: str):
        self.image = image
        super().__init__(
            f'image "{image}" has no entrypoint in the node runner\'s image table; '
            "the container must give command (and args) to run on the host"
        )


def normalize_image(image: str) -> str:
    """Strip digest, tag and the default registry: ``docker.io/library/busybox:1.36`` -> ``busybox``."""
    name = image.strip()
    if "@" in name:
        name = name.split("@", 1)[0]
    # a tag is a ':' after the last '/' (a ':' before it is a registry port)
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name = name[:colon]
    for prefix in _DEFAULT_REGISTRY_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    return name


def lookup(image: str) -> ImageEntry:
    """The table entry for an image reference; raises UnknownImage."""
    entry = IMAGE_TABLE.get(normalize_image(image))
    if entry is None:
        raise UnknownImage(image)
    return entry


def resolve_argv(image: str, command: Sequence[str] | None, args: Sequence[str] | None) -> list[str]:
    """The process argv for a container, with Kubernetes' command/args rules.

    * neither command nor args: entrypoint + image cmd
    * args only: entrypoint + args
    * command only: command (the image cmd is dropped)
    * both: command + args
    """
    entry = lookup(image)
    command = list(command or [])
    args = list(args or [])
    if command:
        argv = command + args
    elif args:
        argv = list(entry.entrypoint) + args
    else:
        argv = list(entry.entrypoint) + list(entry.cmd)
    if not argv:
        raise NoCommand(image)
    return argv


def image_id(image: str) -> str:
    """A stable imageID for containerStatuses (there is no digest: name the table entry)."""
    return f"sipfleet-local://{normalize_image(image)}"
