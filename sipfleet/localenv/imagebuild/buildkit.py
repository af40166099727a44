"""BuildKit, the image builder: a ``buildkitd`` of our own, run as root for the length of a build, and the
``buildctl build`` command line that builds one of our Dockerfiles with no network.

Promises:

- Everything ``buildkitd`` keeps is under ``$SIPFLEET_CACHE/images/buildkit`` (its root with snapshots and
  build cache, its socket, its config, its log); no system path (``/var/lib/buildkit``, ``/run/buildkit``,
  ``/etc/buildkit``) is read or written: the config file we write names every path BuildKit would otherwise
  default. The OCI worker runs our runc; the containerd worker is off; CDI is off.
- Networking: every ``RUN`` gets a network namespace with only a loopback interface (the frontend option
  ``force-network-mode=none``), and the worker's default network is CNI with a configuration that holds only
  the ``loopback`` plugin, so no step can have an interface that reaches anything, whatever it asks for
  (host networking needs an entitlement this daemon does not grant).
- Nothing is pulled: the build gets a source policy that denies ``docker-image://``, ``http(s)://`` and
  ``git://`` sources; the base comes from a local OCI layout and the wheels from a local directory, and the
  Dockerfiles have no ``# syntax=`` line (which would pull a frontend image).
- Its processes: ``Daemon`` starts ``buildkitd`` in its own session, records its PID (with start time) in the
  state directory and stops it by that PID. Build containers' cgroups go under ``sipfleet-buildkit`` in each
  cgroup hierarchy (a name of ours), which ``stop()`` removes; mounts left under the state directory by a
  killed daemon are unmounted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .. import procs
from . import cache, hostfs

CGROUP_PARENT = "sipfleet-buildkit"
SOURCE_POLICY = {
    "rules": [{"action": 1, "selector": {"identifier": pattern}}  # 1 = DENY
              for pattern in ("docker-image://*", "http://*", "https://*", "git://*")],
}
LOOPBACK_ONLY_CNI = {
    "cniVersion": "1.0.0",
    "name": "sipfleet-buildkit-loopback",
    "plugins": [{"type": "loopback"}],
}


class BuildkitError(RuntimeError):
    """BuildKit could not start or a build failed; the message says why (with the log's tail)."""


@dataclass(frozen=True)
class Paths:
    state: Path

    @property
    def root(self) -> Path:
        return self.state / "root"

    @property
    def socket(self) -> Path:
        return self.state / "buildkitd.sock"

    @property
    def address(self) -> str:
        return f"unix://{self.socket}"

    @property
    def config(self) -> Path:
        return self.state / "buildkitd.toml"

    @property
    def cni_config(self) -> Path:
        return self.state / "cni-loopback.conflist"

    @property
    def policy(self) -> Path:
        return self.state / "source-policy.json"

    @property
    def log(self) -> Path:
        return self.state / "buildkitd.log"

    @property
    def pidfile(self) -> Path:
        return self.state / "buildkitd.pid.json"

    @property
    def lock(self) -> Path:
        return self.state / "lock"


def default_paths() -> Paths:
    return Paths(cache.root() / "buildkit")


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string for our paths


def daemon_config(paths: Paths, runc: Path, cni_bin_dir: Path) -> str:
    """buildkitd.toml: every path ours, the OCI worker on our runc, loopback-only CNI, no containerd worker."""
    return "\n".join([
        f"root = {_toml_str(str(paths.root))}",
        "",
        "[grpc]",
        f"  address = [{_toml_str(paths.address)}]",
        "",
        "[otel]",
        f"  socketPath = {_toml_str(str(paths.state / 'otel-grpc.sock'))}",
        "",
        "[cdi]",
        "  disabled = true",
        "",
        "[worker.oci]",
        "  enabled = true",
        f"  binary = {_toml_str(str(runc))}",
        '  snapshotter = "overlayfs"',
        "  gc = true",
        '  gckeepstorage = "4GB"',
        f"  defaultCgroupParent = {_toml_str(CGROUP_PARENT)}",
        '  networkMode = "cni"',
        f"  cniConfigPath = {_toml_str(str(paths.cni_config))}",
        f"  cniBinaryPath = {_toml_str(str(cni_bin_dir))}",
        "  cniPoolSize = 0",
        "",
        "[worker.containerd]",
        "  enabled = false",
        "",
    ])


def daemon_cmd(buildkitd: Path, paths: Paths) -> list[str]:
    return [str(buildkitd), "--config", str(paths.config), "--root", str(paths.root), "--addr", paths.address,
            "--oci-worker=true", "--containerd-worker=false", "--cdi-disabled"]


def build_cmd(buildctl: Path, paths: Paths, *, context: Path, dockerfile: Path, base_layout: Path,
              base_ref: str, output: Path, name: str | None = None, wheelhouse: Path | None = None,
              build_args: dict[str, str] | None = None, exporter: str = "oci") -> list[str]:
    """``buildctl build`` for one Dockerfile: its ``base`` stage from an OCI layout (``base_ref`` is
    ``oci-layout://<store>@sha256:...``), its ``wheelhouse`` stage from a directory, every RUN without network,
    public sources denied; an OCI archive named ``name`` out (or, ``exporter="local"``, the files)."""
    store = base_ref.removeprefix("oci-layout://").split("@")[0].split(":")[0]
    cmd = [str(buildctl), "--addr", paths.address, "build", "--progress", "plain",
           "--frontend", "dockerfile.v0",
           "--local", f"context={context}",
           "--local", f"dockerfile={dockerfile.parent}",
           "--opt", f"filename={dockerfile.name}",
           "--oci-layout", f"{store}={base_layout}",
           "--opt", f"context:base={base_ref}"]
    if wheelhouse is not None:
        cmd += ["--local", f"wheelhouse={wheelhouse}", "--opt", "context:wheelhouse=local:wheelhouse"]
    cmd += ["--opt", "force-network-mode=none", "--source-policy-file", str(paths.policy)]
    for key, value in sorted((build_args or {}).items()):
        cmd += ["--opt", f"build-arg:{key}={value}"]
    if exporter == "oci":
        if not name:
            raise ValueError("an OCI archive needs an image name")
        cmd += ["--output", f"type=oci,dest={output},name={name}"]
    elif exporter == "local":
        cmd += ["--output", f"type=local,dest={output}"]
    else:
        raise ValueError(f"unknown exporter {exporter!r}")
    return cmd


class Daemon:
    """One buildkitd for the duration of a ``with`` block (under the state directory's lock)."""

    def __init__(self, buildkitd: Path, buildctl: Path, runc: Path, cni_bin_dir: Path,
                 paths: Paths | None = None):
        self.buildkitd, self.buildctl, self.runc, self.cni_bin_dir = buildkitd, buildctl, runc, cni_bin_dir
        self.paths = paths or default_paths()
        self.record: procs.ProcRecord | None = None
        self._lock: cache.FileLock | None = None
        self.started_in = 0.0

    def __enter__(self) -> "Daemon":
        self.paths.state.mkdir(parents=True, exist_ok=True)
        self._lock = cache.FileLock(self.paths.lock)
        self._lock.__enter__()
        try:
            self._stop_leftover()
            self.start()
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.stop()
        finally:
            assert self._lock is not None
            self._lock.__exit__(None, None, None)

    def _stop_leftover(self) -> None:
        """A daemon recorded by an earlier run that was killed before it could stop it."""
        for rec in procs.read_records(self.paths.pidfile):  # is_alive checks the start time: never another process
            if procs.is_alive(rec):
                procs.stop([rec], grace=10)
        self.paths.pidfile.unlink(missing_ok=True)
        self._cleanup_mounts()

    def _cleanup_mounts(self) -> None:
        hostfs.unmount_under(self.paths.root)

    def start(self) -> None:
        p = self.paths
        p.config.write_text(daemon_config(p, self.runc, self.cni_bin_dir))
        p.cni_config.write_text(json.dumps(LOOPBACK_ONLY_CNI, indent=2) + "\n")
        p.policy.write_text(json.dumps(SOURCE_POLICY, indent=2) + "\n")
        p.socket.unlink(missing_ok=True)
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "HOME": str(p.state),
               "XDG_RUNTIME_DIR": str(p.state), "XDG_CONFIG_HOME": str(p.state), "TMPDIR": str(p.state / "tmp")}
        (p.state / "tmp").mkdir(exist_ok=True)
        t0 = time.monotonic()
        self.record, proc = procs.start("buildkitd", daemon_cmd(self.buildkitd, p), p.log, env=env,
                                        cwd=p.state, die_with_parent=True)
        procs.write_json_atomic(p.pidfile, self.record.to_json())
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise BuildkitError(f"buildkitd exited with {proc.returncode}:\n{self.log_tail()}")
            if p.socket.exists():
                check = subprocess.run([str(self.buildctl), "--addr", p.address, "debug", "workers"],
                                       capture_output=True, text=True, timeout=30)
                if check.returncode == 0 and check.stdout.count("\n") >= 2:
                    break
            if time.monotonic() > deadline:
                self.stop()
                raise BuildkitError(f"buildkitd did not answer within 60 s:\n{self.log_tail()}")
            time.sleep(0.1)
        self.started_in = time.monotonic() - t0

    def stop(self) -> None:
        if self.record is not None:
            procs.stop([self.record], grace=20)
            self.record = None
        self.paths.pidfile.unlink(missing_ok=True)
        self._cleanup_mounts()
        hostfs.remove_cgroups(hostfs.cgroup_dirs(CGROUP_PARENT))
        shutil.rmtree(self.paths.state / "tmp", ignore_errors=True)

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.paths.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def build(self, cmd: list[str], log: Path, timeout: float = 1800) -> None:
        """Run a ``buildctl build`` command line (from ``build_cmd``), its output appended to ``log``."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as f:
            f.write(f"\n==== {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(cmd)}\n".encode())
            f.flush()
            proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
        if proc.returncode != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            raise BuildkitError(f"buildctl build failed ({proc.returncode}); {log}:\n{tail}")
