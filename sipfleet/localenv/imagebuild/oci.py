"""OCI image layouts and archives: write a one-layer image from a directory, read what an archive holds,
unpack an image's layers into a root filesystem.

Promises:

- ``write_image(rootfs, layout_dir, ...)`` writes an OCI image layout (``oci-layout``, ``index.json``,
  ``blobs/sha256/...``) whose single gzip layer is ``rootfs`` as a tar: entries sorted, numeric owners without
  names, gzip header without name or time, so the same tree gives the same digests. File times are kept (Python
  checks ``.pyc`` files against their sources' mtimes). The contents of ``dev``, ``proc``, ``sys``, ``run`` and
  ``tmp`` are left out (the runtime mounts its own there); sockets are skipped.
- ``read_archive(path)`` reads an OCI archive (a tar of a layout, as BuildKit's ``type=oci`` exporter writes)
  and returns its image reference, manifest digest, config and layer descriptors, without unpacking layers.
- ``unpack(source, dest)`` applies an image's layers in order into ``dest``, honouring whiteouts
  (``.wh.NAME`` and ``.wh..wh..opq``) and refusing entries that would land outside ``dest``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterator

MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"

#: top-level directories whose contents never go into a layer (the runtime mounts its own)
RUNTIME_DIRS = ("dev", "proc", "sys", "run", "tmp")


_TRUSTED: dict[str, Any] = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}


class OCIError(RuntimeError):
    """An image layout or archive is not what we expect; the message says what."""


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Descriptor":
        return cls(str(data["mediaType"]), str(data["digest"]), int(data["size"]), dict(data.get("annotations") or {}))


@dataclass(frozen=True)
class ImageInfo:
    """What an OCI archive or layout holds (its first image)."""

    ref: str  # the image name annotation, "" if none
    manifest: Descriptor
    config: dict[str, Any]
    layers: tuple[Descriptor, ...]

    @property
    def digest(self) -> str:
        return self.manifest.digest

    @property
    def compressed_size(self) -> int:
        """Bytes a registry would store: manifest, config and (compressed) layers."""
        return self.manifest.size + sum(layer.size for layer in self.layers) + len(canonical(self.config))


def member_path(name: str) -> str:
    """A tar member's name without a leading ``./`` (only that: ``.hidden`` and ``.wh.x`` keep their dot)."""
    while name.startswith("./"):
        name = name[2:]
    return "" if name == "." else name


def canonical(obj: Any) -> bytes:
    """The JSON bytes we hash: sorted keys, no whitespace."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class _HashingWriter(io.RawIOBase):
    """A write-only stream that hashes and counts what passes through to ``target``."""

    def __init__(self, target: IO[bytes]):
        self.target = target
        self.hash = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # type: ignore[override]
        data = bytes(b)
        self.hash.update(data)
        self.size += len(data)
        self.target.write(data)
        return len(data)


def walk_sorted(root: Path) -> Iterator[str]:
    """Relative paths under ``root`` in a stable order (parents before children), runtime dirs' contents
    left out."""
    def rec(rel: str) -> Iterator[str]:
        full = root / rel if rel else root
        for name in sorted(os.listdir(full)):
            child = f"{rel}/{name}" if rel else name
            yield child
            path = root / child
            if path.is_dir() and not path.is_symlink() and child not in RUNTIME_DIRS:
                yield from rec(child)
    yield from rec("")


def _normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uname = ""
    info.gname = ""
    info.pax_headers = {}
    return info


def write_layer(rootfs: Path, blobs: Path, level: int = 6) -> tuple[Descriptor, str]:
    """Write ``rootfs`` as a gzip layer blob into ``blobs``; returns (descriptor, diff_id)."""
    blobs.mkdir(parents=True, exist_ok=True)
    tmp = blobs / f".layer.{os.getpid()}.tmp"
    with open(tmp, "wb") as raw:
        outer = _HashingWriter(raw)
        with gzip.GzipFile(filename="", mode="wb", fileobj=outer, compresslevel=level, mtime=0) as gz:
            inner = _HashingWriter(gz)  # type: ignore[arg-type]
            with tarfile.open(fileobj=inner, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[arg-type]
                for rel in walk_sorted(rootfs):
                    info = tar.gettarinfo(str(rootfs / rel), arcname=rel)
                    if info is None:  # a socket or another kind tar cannot hold
                        continue
                    info = _normalise(info)
                    if info.isreg():
                        with open(rootfs / rel, "rb") as f:
                            tar.addfile(info, f)
                    else:
                        tar.addfile(info)
    digest = "sha256:" + outer.hash.hexdigest()
    os.replace(tmp, blobs / digest.split(":", 1)[1])
    return Descriptor(MT_LAYER_GZIP, digest, outer.size), "sha256:" + inner.hash.hexdigest()


def _write_blob(blobs: Path, data: bytes) -> Descriptor:
    digest = sha256_digest(data)
    (blobs / digest.split(":", 1)[1]).write_bytes(data)
    return Descriptor("", digest, len(data))


def image_config(diff_ids: list[str], *, env: list[str], cmd: list[str], labels: dict[str, str],
                 history: str, architecture: str = "amd64") -> dict[str, Any]:
    """An OCI image config for a linux image (no creation time: the digest depends on the contents only)."""
    return {
        "architecture": architecture,
        "os": "linux",
        "config": {"Env": list(env), "Cmd": list(cmd), "Labels": dict(labels)},
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        "history": [{"created_by": history}],
    }


def write_image(rootfs: Path, layout_dir: Path, *, ref: str, env: list[str], cmd: list[str],
                labels: dict[str, str], history: str, architecture: str = "amd64") -> ImageInfo:
    """Write ``rootfs`` as a one-layer image into a fresh OCI layout at ``layout_dir``, tagged ``ref``."""
    if layout_dir.exists():
        shutil.rmtree(layout_dir)
    blobs = layout_dir / "blobs" / "sha256"
    layer, diff_id = write_layer(rootfs, blobs)
    config = image_config([diff_id], env=env, cmd=cmd, labels=labels, history=history, architecture=architecture)
    config_desc = _write_blob(blobs, canonical(config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": config_desc.digest, "size": config_desc.size},
        "layers": [layer.to_json()],
    }
    m = _write_blob(blobs, canonical(manifest))
    manifest_desc = Descriptor(MT_MANIFEST, m.digest, m.size, {REF_NAME: ref})
    index = {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": [manifest_desc.to_json()]}
    (layout_dir / "index.json").write_bytes(canonical(index))
    (layout_dir / "oci-layout").write_bytes(canonical({"imageLayoutVersion": "1.0.0"}))
    return ImageInfo(ref, manifest_desc, config, (layer,))


class _Store:
    """Blob access to a layout directory or an archive (tar) of one."""

    def __init__(self, source: Path):
        self.source = source
        self.tar: tarfile.TarFile | None = None
        if source.is_file():
            self.tar = tarfile.open(source, "r:")
            self.names = {member_path(m.name): m for m in self.tar.getmembers() if m.isfile()}

    def __enter__(self) -> "_Store":
        return self

    def __exit__(self, *exc) -> None:
        if self.tar is not None:
            self.tar.close()

    def open(self, rel: str) -> IO[bytes]:
        if self.tar is None:
            return open(self.source / rel, "rb")
        member = self.names.get(rel)
        if member is None:
            raise OCIError(f"{self.source}: no {rel} in the archive")
        f = self.tar.extractfile(member)
        assert f is not None
        return f

    def read(self, rel: str) -> bytes:
        with self.open(rel) as f:
            return f.read()

    def blob(self, digest: str) -> IO[bytes]:
        algo, _, hexd = digest.partition(":")
        return self.open(f"blobs/{algo}/{hexd}")


def _select(store: _Store) -> ImageInfo:
    index = json.loads(store.read("index.json"))
    manifests = index.get("manifests") or []
    if not manifests:
        raise OCIError(f"{store.source}: index.json lists no image")
    desc = Descriptor.from_json(manifests[0])
    body = json.loads(store.blob(desc.digest).read())
    if body.get("mediaType") == MT_INDEX or "manifests" in body:  # a nested index: take its linux/amd64 entry
        nested = [Descriptor.from_json(d) for d in body["manifests"]]
        desc = next((d for d in nested if d.media_type in (MT_MANIFEST, DOCKER_MANIFEST)), nested[0])
        desc = Descriptor(desc.media_type, desc.digest, desc.size,
                          {**Descriptor.from_json(manifests[0]).annotations, **desc.annotations})
        body = json.loads(store.blob(desc.digest).read())
    config = json.loads(store.blob(body["config"]["digest"]).read())
    layers = tuple(Descriptor.from_json(layer) for layer in body.get("layers") or [])
    ref = desc.annotations.get(CONTAINERD_NAME) or desc.annotations.get(REF_NAME, "")
    return ImageInfo(ref, desc, config, layers)


def read_archive(source: Path) -> ImageInfo:
    """The first image of an OCI archive (tar) or layout directory."""
    if not source.exists():
        raise OCIError(f"{source} does not exist")
    with _Store(source) as store:
        return _select(store)


def _inside(dest: Path, rel: str) -> Path:
    """``dest/rel``, refusing absolute names, ``..`` and parents that resolve outside ``dest``."""
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if rel.startswith("/") or ".." in parts:
        raise OCIError(f"layer entry {rel!r} escapes the root")
    target = dest.joinpath(*parts) if parts else dest
    parent = os.path.realpath(target.parent)
    if parent != str(dest) and not parent.startswith(str(dest) + os.sep):
        raise OCIError(f"layer entry {rel!r} would be written through a link outside the root")
    return target


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _apply_layer(tar: tarfile.TarFile, dest: Path) -> int:
    """Apply one layer; returns the bytes of regular files written."""
    written = 0
    for member in tar:
        rel = member_path(member.name)
        base = os.path.basename(rel)
        if base == ".wh..wh..opq":
            d = _inside(dest, os.path.dirname(rel))
            for child in list(d.iterdir()) if d.is_dir() else []:
                _remove(child)
            continue
        if base.startswith(".wh."):
            _remove(_inside(dest, os.path.join(os.path.dirname(rel), base[4:])))
            continue
        if not rel:
            continue
        target = _inside(dest, rel)
        if target.exists() or target.is_symlink():
            if not (member.isdir() and target.is_dir() and not target.is_symlink()):
                _remove(target)
        member.name = rel
        if member.islnk():
            member.linkname = member_path(member.linkname)
            _inside(dest, member.linkname)
        # our own checks above replace tarfile's filters (which refuse device nodes and absolute links)
        tar.extract(member, str(dest), set_attrs=True, numeric_owner=True, **_TRUSTED)
        if member.isreg():
            written += member.size
    return written


def unpack(source: Path, dest: Path) -> int:
    """Unpack the first image of ``source`` (archive or layout) into the empty directory ``dest``; returns the
    unpacked size in bytes (regular files)."""
    dest = Path(os.path.realpath(dest))
    dest.mkdir(parents=True, exist_ok=True)
    total = 0
    with _Store(source) as store:
        info = _select(store)
        for layer in info.layers:
            with store.blob(layer.digest) as raw:
                mode = "r|gz" if layer.media_type.endswith("gzip") else "r|"
                with tarfile.open(fileobj=raw, mode=mode) as tar:
                    total += _apply_layer(tar, dest)
    return total
