"""Talking to a local cluster's containerd: images in, pods out, and what tests need to see of containers.

Through ``ctr`` (images, namespace ``k8s.io``, the one the CRI uses) and ``crictl`` (pods and containers, as the
kubelet sees them), both pointed at the cluster's own socket. Image imports are recorded by digest in the
layout's ``images/`` so an unchanged archive is not imported twice.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from .layout import Layout


class ContainerRuntimeError(RuntimeError):
    pass


@dataclass(frozen=True)
class Runtime:
    ctr: Path
    crictl: Path
    layout: Layout

    def _run(self, argv: list[str], timeout: float = 120) -> str:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if res.returncode != 0:
            raise ContainerRuntimeError(f"{Path(argv[0]).name} {' '.join(argv[1:4])} failed ({res.returncode}): "
                                f"{(res.stderr or res.stdout).strip().splitlines()[-1:] or ''}")
        return res.stdout

    def ctr_argv(self, *args: str) -> list[str]:
        return [str(self.ctr), "--address", str(self.layout.containerd_socket), "-n", "k8s.io", *args]

    def crictl_argv(self, *args: str) -> list[str]:
        sock = f"unix://{self.layout.containerd_socket}"
        return [str(self.crictl), "--runtime-endpoint", sock, "--image-endpoint", sock, "--timeout", "30s", *args]

    def ready(self) -> bool:
        """containerd answers on its socket."""
        if not self.layout.containerd_socket.exists():
            return False
        try:
            self._run(self.ctr_argv("version"), timeout=10)
            return True
        except (ContainerRuntimeError, OSError, subprocess.TimeoutExpired):
            return False

    # ---- images
    def import_image(self, archive: Path) -> bool:
        """Import an OCI archive unless the images it names were last imported from this same content; True if
        imported now. Recorded per image name (``images/imported/<name>`` holds the archive's sha256), so
        archives with the same file name (every built image is an ``image.tar``) keep separate records, and
        going back to an earlier build of a name imports it again."""
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        stamps = [self.layout.images_dir / "imported" / re.sub(r"[^A-Za-z0-9._-]", "_", n)
                  for n in archive_image_names(archive) or [str(archive)]]
        if all(st.is_file() and st.read_text().strip() == digest for st in stamps) and self.has_images():
            return False
        self._run(self.ctr_argv("images", "import", "--all-platforms", str(archive)), timeout=600)
        for st in stamps:
            st.parent.mkdir(parents=True, exist_ok=True)
            st.write_text(digest + "\n")
        return True

    def has_images(self) -> bool:
        try:
            return bool(self._run(self.ctr_argv("images", "ls", "-q"), timeout=30).strip())
        except (ContainerRuntimeError, OSError, subprocess.TimeoutExpired):
            return False

    def images(self) -> list[str]:
        return [ln.strip() for ln in self._run(self.ctr_argv("images", "ls", "-q"), timeout=30).splitlines() if ln.strip()]

    # ---- pods and containers
    def remove_all_pods(self) -> str:
        """Stop and remove every pod sandbox (containers, their mounts, their network via CNI DEL)."""
        return self._run(self.crictl_argv("rmp", "--all", "--force"), timeout=180)

    def containers(self, namespace: str, pod: str) -> list[dict]:
        out = self._run(self.crictl_argv("ps", "--all", "-o", "json", "--label",
                                         f"io.kubernetes.pod.namespace={namespace}", "--label",
                                         f"io.kubernetes.pod.name={pod}"), timeout=30)
        return list(json.loads(out).get("containers") or [])

    def container_pid(self, namespace: str, pod: str, container: str | None = None) -> int:
        """The host PID of a running container of a pod (its first container when none is named)."""
        running = [c for c in self.containers(namespace, pod) if c.get("state") == "CONTAINER_RUNNING"
                   and (container is None or (c.get("metadata") or {}).get("name") == container)]
        if not running:
            raise ContainerRuntimeError(f"no running container{' ' + container if container else ''} in pod {namespace}/{pod}")
        info = json.loads(self._run(self.crictl_argv("inspect", "-o", "json", running[0]["id"]), timeout=30))
        pid = int((info.get("info") or {}).get("pid") or 0)
        if pid <= 0:
            raise ContainerRuntimeError(f"container {running[0]['id'][:12]} of {namespace}/{pod} has no PID")
        return pid

    def pod_netns(self, namespace: str, pod: str) -> str:
        """The path of a pod's network namespace (made by containerd; enter it, never delete it)."""
        out = self._run(self.crictl_argv("pods", "-o", "json", "--namespace", namespace, "--name", pod,
                                         "--state", "ready"), timeout=30)
        items = json.loads(out).get("items") or []
        if not items:
            raise ContainerRuntimeError(f"no ready sandbox for pod {namespace}/{pod}")
        info = json.loads(self._run(self.crictl_argv("inspectp", "-o", "json", items[0]["id"]), timeout=30))
        for ns in ((info.get("info") or {}).get("runtimeSpec") or {}).get("linux", {}).get("namespaces", []):
            if ns.get("type") == "network" and ns.get("path"):
                return ns["path"]
        raise ContainerRuntimeError(f"pod {namespace}/{pod} has no network namespace path")


def archive_image_names(archive: Path) -> list[str]:
    """The image names an OCI archive's ``index.json`` gives its manifests (empty when it names none)."""
    try:
        with tarfile.open(archive) as tar:
            member = tar.extractfile("index.json")
            index = json.load(member) if member else {}
    except (OSError, KeyError, ValueError, tarfile.TarError):
        return []
    names = []
    for m in index.get("manifests") or []:
        ann = m.get("annotations") or {}
        name = ann.get("io.containerd.image.name") or ann.get("org.opencontainers.image.ref.name")
        if name and name not in names:
            names.append(name)
    return names


def container_log_path(layout: Layout, namespace: str, pod: str, uid: str, container: str, restart: int) -> Path:
    """Where the kubelet writes a container's log (``podLogsDir``/<ns>_<pod>_<uid>/<container>/<n>.log)."""
    return layout.pod_logs_dir / f"{namespace}_{pod}_{uid}" / container / f"{restart}.log"
