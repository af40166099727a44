"""Import built images into a containerd, where a kubelet finds them (pods use ``imagePullPolicy: Never`` or
``IfNotPresent``): ``ctr -n k8s.io images import <archive>`` against a given containerd socket.

``import_images(archives, address=...)`` imports each OCI archive and returns the names containerd now holds
for them (``docker.io/sipfleet/agent:0.1.0``: the name the kubelet looks up for ``sipfleet/agent:0.1.0``);
``import_built(address)`` builds what is missing first (``build.build_images``) and imports the chart's images.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from .. import kubebin
from . import oci

NAMESPACE = "k8s.io"  # the namespace the kubelet's CRI plugin uses


def import_cmd(ctr: Path, address: str, archive: Path, namespace: str = NAMESPACE) -> list[str]:
    return [str(ctr), "--address", address, "--namespace", namespace, "images", "import", str(archive)]


def list_cmd(ctr: Path, address: str, namespace: str = NAMESPACE) -> list[str]:
    return [str(ctr), "--address", address, "--namespace", namespace, "images", "list", "--quiet"]


def image_names(ctr: Path, address: str, namespace: str = NAMESPACE) -> set[str]:
    proc = subprocess.run(list_cmd(ctr, address, namespace), capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"ctr images list failed: {proc.stderr.strip()}")
    return {line.strip() for line in proc.stdout.splitlines() if line.strip()}


def import_images(archives: list[Path], *, address: str | Path, ctr: Path | None = None,
                  namespace: str = NAMESPACE, timeout: float = 300) -> list[str]:
    """Import each archive into the containerd at ``address`` (its socket path); returns the image names."""
    ctr = ctr or kubebin.ensure(["ctr"], allow_path=False)["ctr"]
    address = str(address)
    names = []
    for archive in archives:
        name = oci.read_archive(archive).ref
        proc = subprocess.run(import_cmd(ctr, address, archive, namespace), capture_output=True, text=True,
                              timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"ctr images import {archive} failed: {proc.stderr.strip() or proc.stdout.strip()}")
        names.append(name)
    present = image_names(ctr, address, namespace)
    missing = [n for n in names if n not in present]
    if missing:
        raise RuntimeError(f"containerd at {address} does not list {missing} after the import")
    return names


def import_built(address: str | Path, components: list[str] | None = None, *, ctr: Path | None = None) -> list[str]:
    """Build the chart's images if needed and import them into the containerd at ``address``."""
    from .build import build_images

    built = build_images(components)
    return import_images([Path(b.archive) for b in built], address=address, ctr=ctr)
