"""The pause image archive: a valid OCI layout whose digests check out, with /pause as its only file."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

from sipfleet.localenv import pauseimage


def _read_tar(data: bytes) -> dict[str, tuple[tarfile.TarInfo, bytes]]:
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar.getmembers():
            f = tar.extractfile(m) if m.isfile() else None
            out[m.name] = (m, f.read() if f else b"")
    return out


def _blob(files, digest: str) -> bytes:
    algo, hexd = digest.split(":")
    data = files[f"blobs/{algo}/{hexd}"][1]
    assert hashlib.sha256(data).hexdigest() == hexd  # content-addressed
    return data


def test_archive_is_an_oci_layout_with_only_pause(tmp_path):
    binary = tmp_path / "pause"
    binary.write_bytes(b"\x7fELF not really, but bytes")
    dest = pauseimage.write_oci_archive(binary, tmp_path / "out" / "pause.tar")
    files = _read_tar(dest.read_bytes())
    assert json.loads(files["oci-layout"][1]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(files["index.json"][1])
    (entry,) = index["manifests"]
    assert entry["annotations"]["io.containerd.image.name"] == "registry.k8s.io/pause:3.10.1"
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "3.10.1"
    assert entry["platform"] == {"architecture": "amd64", "os": "linux"}
    manifest_bytes = _blob(files, entry["digest"])
    assert entry["size"] == len(manifest_bytes)
    manifest = json.loads(manifest_bytes)
    config = json.loads(_blob(files, manifest["config"]["digest"]))
    assert config["config"]["Entrypoint"] == ["/pause"] and config["config"]["User"] == "65535:65535"
    (layer_desc,) = manifest["layers"]
    layer = _blob(files, layer_desc["digest"])
    assert layer_desc["mediaType"] == pauseimage.MEDIA_LAYER and layer_desc["size"] == len(layer)
    assert config["rootfs"]["diff_ids"] == [layer_desc["digest"]]  # uncompressed: diff id == digest
    members = _read_tar(layer)
    assert list(members) == ["pause"]
    info, content = members["pause"]
    assert content == binary.read_bytes() and info.mode == 0o755 and info.uid == 0 and info.mtime == 0
    assert pauseimage.manifest_digest(binary.read_bytes()) == entry["digest"]


def test_archive_is_reproducible_and_follows_its_inputs():
    a = pauseimage.archive_bytes(b"one")
    assert pauseimage.archive_bytes(b"one") == a
    assert pauseimage.archive_bytes(b"two") != a
    other = _read_tar(pauseimage.archive_bytes(b"one", ref="localhost/pause:test"))
    entry = json.loads(other["index.json"][1])["manifests"][0]
    assert entry["annotations"] == {"io.containerd.image.name": "localhost/pause:test",
                                    "org.opencontainers.image.ref.name": "test"}
