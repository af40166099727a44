"""The pause image as an OCI archive (an OCI image layout in a tar) holding one static binary as ``/pause``.

``write_oci_archive(binary, dest, ref)`` writes it byte-for-byte reproducibly (fixed timestamps and owners, an
uncompressed layer), ready for ``ctr -n k8s.io images import``; the image runs ``/pause`` as 65535:65535 like the
upstream image. Pure Python, no registry and no image tool involved.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

from .binsets import PAUSE_TAG

#: the reference kubelet 1.35 and containerd 2.2 default to for the sandbox image (kubeadm's PauseVersion)
DEFAULT_REF = f"registry.k8s.io/pause:{PAUSE_TAG}"

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _tar(entries: list[tuple[str, bytes, int]]) -> bytes:
    """A tar of regular files (name, content, mode) with fixed metadata, in the given order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs_done: set[str] = set()
        for name, data, mode in entries:
            parts = name.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in dirs_done:
                    dirs_done.add(d)
                    info = tarfile.TarInfo(d)
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
                    tar.addfile(info)
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def image_blobs(binary: bytes, ref: str = DEFAULT_REF, arch: str = "amd64") -> dict[str, bytes]:
    """The files of the OCI layout (path -> content): oci-layout, index.json and blobs/sha256/*."""
    layer = _tar([("pause", binary, 0o755)])
    config = _json({
        "architecture": arch,
        "os": "linux",
        "config": {"Entrypoint": ["/pause"], "User": "65535:65535", "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [_digest(layer)]},
    })
    manifest = _json({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": _digest(config), "size": len(config)},
        "layers": [{"mediaType": MEDIA_LAYER, "digest": _digest(layer), "size": len(layer)}],
    })
    tag = ref.rsplit(":", 1)[1] if ":" in ref.rsplit("/", 1)[-1] else "latest"
    index = _json({
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [{
            "mediaType": MEDIA_MANIFEST,
            "digest": _digest(manifest),
            "size": len(manifest),
            "platform": {"architecture": arch, "os": "linux"},
            # containerd's importer names the image from the first; the OCI spec's own is the tag alone
            "annotations": {"io.containerd.image.name": ref, "org.opencontainers.image.ref.name": tag},
        }],
    })
    files = {"oci-layout": _json({"imageLayoutVersion": "1.0.0"}), "index.json": index}
    for blob in (layer, config, manifest):
        files["blobs/sha256/" + _digest(blob).split(":", 1)[1]] = blob
    return files


def archive_bytes(binary: bytes, ref: str = DEFAULT_REF, arch: str = "amd64") -> bytes:
    files = image_blobs(binary, ref, arch)
    return _tar([(name, data, 0o644) for name, data in sorted(files.items())])


def write_oci_archive(binary: Path, dest: Path, ref: str = DEFAULT_REF, arch: str = "amd64") -> Path:
    """Write the archive of ``binary`` to ``dest`` (atomically) and return ``dest``."""
    data = archive_bytes(Path(binary).read_bytes(), ref, arch)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, dest)
    return dest


def manifest_digest(binary: bytes, ref: str = DEFAULT_REF, arch: str = "amd64") -> str:
    """The image's manifest digest (what ``ctr images ls`` shows for it)."""
    index = json.loads(image_blobs(binary, ref, arch)["index.json"])
    return index["manifests"][0]["digest"]
