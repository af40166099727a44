"""Run ``sipfleet-operator`` as a child process (tests, benchmarks, the demo): start, SIGKILL, stop by PID,
liveness and metrics over loopback."""

from __future__ import annotations

import os
import signal
import sys
import urllib.request
from pathlib import Path

from . import procs
from .procs import free_port
from .waiting import wait_for

__all__ = ["OperatorProcess", "free_port"]


class OperatorProcess:
    """One ``sipfleet-operator`` subprocess at a time; every start appends to the same log file."""

    def __init__(self, kubeconfig: Path, log_path: Path, extra_env: dict[str, str] | None = None,
                 namespaces: str = ""):
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.metrics_port = free_port()
        self.liveness_port = free_port()
        self.extra_env = dict(extra_env or {})
        self.namespaces = namespaces
        self.proc = None  # the Popen of the current run
        self.record: procs.ProcRecord | None = None
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "KUBECONFIG": str(self.kubeconfig),
                "SIPFLEET_WATCH_NAMESPACES": self.namespaces,
                "SIPFLEET_METRICS_PORT": str(self.metrics_port),
                "SIPFLEET_LIVENESS_ENDPOINT": f"http://127.0.0.1:{self.liveness_port}/healthz",
                "SIPFLEET_STANDALONE": "true",
                "SIPFLEET_LOG_FORMAT": "json",
                "SIPFLEET_LOG_LEVEL": "INFO",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def start(self, wait: bool = True) -> "OperatorProcess":
        assert self.proc is None or self.proc.poll() is not None, "operator already running"
        self.starts += 1
        self.record, self.proc = procs.start("sipfleet-operator", [sys.executable, "-m", "sipfleet_operator.main"],
                                             self.log_path, env=self.env(), die_with_parent=True)
        if wait:
            self.wait_live()
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def live(self) -> bool:
        if not self.alive():
            raise AssertionError(f"sipfleet-operator exited with {self.proc.returncode}; log tail:\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def wait_live(self, timeout: float = 90) -> None:
        wait_for(self.live, timeout=timeout, interval=0.2, message="sipfleet-operator liveness", ignore=(OSError,))

    def kill(self) -> None:
        """SIGKILL (no cleanup at all), as a crash or an OOM kill would."""
        if self.alive() and self.record is not None and procs.is_alive(self.record):
            os.kill(self.record.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM (kopf's clean shutdown), SIGKILL after 20 s."""
        if self.alive() and self.record is not None:
            procs.stop([self.record], grace=20)
            self.proc.wait(timeout=10)

    def metrics(self) -> dict[str, float]:
        """Prometheus text parsed into {'name{labels}': value}."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                try:
                    out[key] = float(value)
                except ValueError:
                    pass
        return out

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def rss_bytes(self) -> int | None:
        """Resident memory of the operator process (from /proc)."""
        if not self.alive():
            return None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return None
