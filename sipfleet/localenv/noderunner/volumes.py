"""Materialise a Pod's volumes as files under its directory, and keep the changing ones fresh.

Every volume is a directory ``<pod-dir>/volumes/<name>/``; the container's mount namespace bind-mounts it
(or a file in it, for ``subPath``) at the ``mountPath``. Files are replaced atomically (write + rename inside the
directory) so a running process never reads a half-written file, and the bind mount, which pins the
directory, stays valid.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from .logic import ConfigError, configmap_data, decode_secret_data, field_ref_value, resource_field_value

log = logging.getLogger("sipfleet.noderunner.volumes")


class VolumeError(Exception):
    """A volume cannot be set up (yet): the pod's containers wait in ContainerCreating; retried."""


class UnsupportedVolume(VolumeError):
    pass


def _write_file(directory: Path, rel: str, data: bytes, mode: int | None) -> str:
    rel = rel.lstrip("/")
    if ".." in Path(rel).parts:
        raise VolumeError(f"volume item path {rel!r} must not contain '..'")
    target = directory / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        if target.is_file() and target.read_bytes() == data:
            if mode is not None:
                os.chmod(target, mode)
            return rel
    except OSError:
        pass
    tmp = target.with_name(f".{target.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    if mode is not None:
        os.chmod(tmp, mode)
    os.replace(tmp, target)
    return rel


def _prune(directory: Path, keep: set[str]) -> None:
    """Remove files that are no longer projected (a key removed from a Secret)."""
    for root, dirs, files in os.walk(directory, topdown=False):
        for fn in files:
            rel = os.path.relpath(os.path.join(root, fn), directory)
            if rel not in keep and not fn.startswith("."):
                try:
                    os.unlink(os.path.join(root, fn))
                except OSError:
                    pass
        for d in dirs:
            try:
                os.rmdir(os.path.join(root, d))  # only if empty
            except OSError:
                pass


class VolumeManager:
    """Builds and refreshes one pod's volumes.

    ``api`` provides ``get_secret(ns, name)``, ``get_configmap(ns, name)`` (None when missing),
    ``request_token(ns, sa, audiences, expiration_seconds, pod_name, pod_uid)`` -> (token, expiry_epoch) and
    ``cluster_ca()`` -> bytes (the CA from the kubeconfig, used when kube-root-ca.crt is not published yet).
    """

    #: re-read Secrets/ConfigMaps/downward API of running pods this often (the kubelet's sync period is ~1 min)
    REFRESH_SECONDS = 60.0

    def __init__(self, pod_dir: Path, api: Any, node_capacity: Mapping[str, str]):
        self.root = pod_dir / "volumes"
        self.api = api
        self.node_capacity = node_capacity
        self.paths: dict[str, Path] = {}
        #: volumes the kubelet always mounts read-only (secret, configMap, projected, downwardAPI)
        self.read_only: set[str] = set()
        # token file -> (refresh at epoch)
        self._token_refresh: dict[tuple[str, str], float] = {}
        self._last_full = 0.0

    # ---------------------------------------------------------------- building

    def setup(self, pod: Mapping[str, Any], pod_ip: str | None) -> dict[str, Path]:
        """Create or refresh every volume; returns name -> host directory. Raises VolumeError."""
        self.root.mkdir(parents=True, exist_ok=True)
        for vol in (pod.get("spec") or {}).get("volumes") or []:
            name = vol["name"]
            d = self.root / name
            if "hostPath" in vol and vol["hostPath"] is not None:
                path = Path(vol["hostPath"]["path"])
                typ = vol["hostPath"].get("type") or ""
                if typ in ("DirectoryOrCreate",) and not path.exists():
                    path.mkdir(parents=True, exist_ok=True)
                if typ == "FileOrCreate" and not path.exists():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.touch()
                if not path.exists():
                    raise VolumeError(f'hostPath "{path}" of volume "{name}" does not exist')
                self.paths[name] = path
                continue
            d.mkdir(parents=True, exist_ok=True)
            self.paths[name] = d
            if any(vol.get(k) is not None for k in ("secret", "configMap", "projected", "downwardAPI")):
                self.read_only.add(name)
            if vol.get("emptyDir") is not None:
                continue
            if vol.get("secret") is not None:
                self._secret(pod, d, vol["secret"], name)
            elif vol.get("configMap") is not None:
                self._configmap(pod, d, vol["configMap"], name)
            elif vol.get("projected") is not None:
                self._projected(pod, d, vol["projected"], name, pod_ip)
            elif vol.get("downwardAPI") is not None:
                keep: set[str] = set()
                mode = vol["downwardAPI"].get("defaultMode", 0o644)
                self._downward(pod, d, vol["downwardAPI"].get("items") or [], mode, keep, pod_ip)
                _prune(d, keep)
            else:
                kinds = sorted(k for k in vol if k != "name")
                raise UnsupportedVolume(
                    f'volume "{name}" of type {kinds} is not supported by the node runner '
                    "(supported: secret, configMap, projected, downwardAPI, emptyDir, hostPath)"
                )
        self._last_full = time.monotonic()
        return dict(self.paths)

    def needs_refresh(self) -> bool:
        if time.monotonic() - self._last_full >= self.REFRESH_SECONDS:
            return True
        now = time.time()
        return any(t <= now for t in self._token_refresh.values())

    def _items(self, data: Mapping[str, bytes], items: list | None, default_mode: int) -> list[tuple[str, bytes, int]]:
        if not items:
            return [(k, v, default_mode) for k, v in data.items()]
        out = []
        for it in items:
            key = it["key"]
            if key not in data:
                raise KeyError(key)
            out.append((it.get("path") or key, data[key], it.get("mode", default_mode)))
        return out

    def _secret(self, pod, d: Path, src: Mapping[str, Any], vol_name: str) -> None:
        name = src.get("secretName", "")
        obj = self.api.get_secret(pod["metadata"]["namespace"], name)
        self._keyed(d, src, vol_name, "secret", name, obj, decode_secret_data)

    def _configmap(self, pod, d: Path, src: Mapping[str, Any], vol_name: str) -> None:
        name = src.get("name", "")
        obj = self.api.get_configmap(pod["metadata"]["namespace"], name)
        self._keyed(d, src, vol_name, "configmap", name, obj, configmap_data)

    def _keyed(self, d: Path, src: Mapping[str, Any], vol_name: str, kind: str, name: str, obj, data_of) -> None:
        """Materialise a Secret or ConfigMap volume (all keys, or ``items``) and drop files no longer in it."""
        keep: set[str] = set()
        items = self._key_files(vol_name, kind, name, obj, data_of, src, src.get("defaultMode", 0o644),
                                missing_prefix="MountVolume.SetUp failed for ")
        for rel, data, mode in items or []:
            keep.add(_write_file(d, rel, data, mode))
        _prune(d, keep)

    def _key_files(self, vol_name: str, kind: str, name: str, obj, data_of, ref: Mapping[str, Any],
                   default_mode: int, *, missing_prefix: str = "", skip_missing_keys: bool = False):
        """The (path, bytes, mode) files a Secret/ConfigMap reference yields; None when it is optional and absent."""
        if obj is None:
            if ref.get("optional"):
                return None
            raise VolumeError(f'{missing_prefix}volume "{vol_name}": {kind} "{name}" not found')
        try:
            return self._items(data_of(obj), ref.get("items"), default_mode)
        except KeyError as e:
            if skip_missing_keys and ref.get("optional"):
                return None
            raise VolumeError(f'volume "{vol_name}": key {e.args[0]} not found in {kind} "{name}"') from None

    def _downward(self, pod, d: Path, items: list, default_mode: int, keep: set[str], pod_ip) -> None:
        for it in items:
            mode = it.get("mode", default_mode)
            try:
                if it.get("fieldRef"):
                    value = field_ref_value(pod, it["fieldRef"]["fieldPath"], pod_ip)
                elif it.get("resourceFieldRef"):
                    cname = it["resourceFieldRef"].get("containerName")
                    containers = pod["spec"].get("containers") or []
                    c = next((c for c in containers if c["name"] == cname), containers[0] if containers else {})
                    value = resource_field_value(c, it["resourceFieldRef"]["resource"], self.node_capacity)
                else:
                    continue
            except ConfigError as e:
                raise VolumeError(str(e)) from None
            keep.add(_write_file(d, it["path"], value.encode(), mode))

    def _projected(self, pod, d: Path, src: Mapping[str, Any], vol_name: str, pod_ip) -> None:
        ns = pod["metadata"]["namespace"]
        default_mode = src.get("defaultMode", 0o644)
        keep: set[str] = set()
        for source in src.get("sources") or []:
            if source.get("serviceAccountToken") is not None:
                sat = source["serviceAccountToken"]
                rel = sat.get("path", "token")
                key = (vol_name, rel)
                target = d / rel
                if key in self._token_refresh and time.time() < self._token_refresh[key] and target.exists():
                    keep.add(rel)
                    continue
                sa = pod["spec"].get("serviceAccountName") or "default"
                aud = [sat["audience"]] if sat.get("audience") else []
                exp = int(sat.get("expirationSeconds") or 3600)
                try:
                    token, expiry = self.api.request_token(ns, sa, aud, exp, pod["metadata"]["name"], pod["metadata"]["uid"])
                except Exception as e:  # noqa: BLE001
                    raise VolumeError(f'volume "{vol_name}": cannot get a token for service account "{sa}": {e}') from None
                keep.add(_write_file(d, rel, token.encode(), default_mode))
                # the kubelet refreshes at 80% of the lifetime, or after 24 h
                lifetime = max(60.0, expiry - time.time())
                self._token_refresh[key] = time.time() + min(0.8 * lifetime, 86400)
            elif source.get("configMap") is not None:
                cm = source["configMap"]
                name = cm.get("name", "")
                obj = self.api.get_configmap(ns, name)
                if obj is None and name == "kube-root-ca.crt":
                    ca = self.api.cluster_ca()
                    if ca:
                        obj = {"data": {"ca.crt": ca.decode()}}
                items = self._key_files(vol_name, "configmap", name, obj, configmap_data, cm, default_mode,
                                        skip_missing_keys=True)
                for rel, data, mode in items or []:
                    keep.add(_write_file(d, rel, data, mode))
            elif source.get("secret") is not None:
                sc = source["secret"]
                name = sc.get("name", "")
                items = self._key_files(vol_name, "secret", name, self.api.get_secret(ns, name), decode_secret_data,
                                        sc, default_mode, skip_missing_keys=True)
                for rel, data, mode in items or []:
                    keep.add(_write_file(d, rel, data, mode))
            elif source.get("downwardAPI") is not None:
                self._downward(pod, d, source["downwardAPI"].get("items") or [], default_mode, keep, pod_ip)
            else:
                raise UnsupportedVolume(f'volume "{vol_name}": unsupported projected source {sorted(source)}')
        _prune(d, keep)

    # ---------------------------------------------------------------- mounts

    def mounts_for(self, container: Mapping[str, Any]) -> list[tuple[str, str, bool]]:
        """(host source, mountPath, read-only) for each volumeMount of a container. Raises VolumeError."""
        out = []
        for vm in container.get("volumeMounts") or []:
            name = vm["name"]
            if name not in self.paths:
                raise VolumeError(f'container "{container["name"]}" mounts unknown volume "{name}"')
            src = self.paths[name]
            sub = vm.get("subPath") or ""
            if sub:
                if ".." in Path(sub).parts:
                    raise VolumeError(f'subPath {sub!r} must not contain ".."')
                src = src / sub
                if not src.exists():
                    src.mkdir(parents=True, exist_ok=True)
            out.append((str(src), vm["mountPath"], bool(vm.get("readOnly")) or name in self.read_only))
        return out

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
