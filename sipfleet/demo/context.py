"""The demo's shared state and tools: its cluster and lab objects, the deadline, waiting, kubectl and helm with
the cluster's kubeconfig, and the small record of what a run left in place (``demo.json``, so ``--down`` can undo a
crashed run's fault). Every step module takes a :class:`Demo`."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from .output import Output

DEFAULT_NAME = "demo"
DEFAULT_NAMESPACE = "default"
RELEASE = "sipfleet"
RELEASE_NAMESPACE = "sipfleet-system"


class DemoError(RuntimeError):
    """The demo could not go on; the message says what did not happen."""


class Demo:
    def __init__(self, args: argparse.Namespace, out: Output):
        from ..localenv.cluster import LocalCluster
        from ..localenv.siplab import SipLab

        self.args = args
        self.out = out
        self.state_root = Path(args.state_dir).expanduser().resolve() if args.state_dir else None
        # Kept, the processes must outlive this command; with --no-keep they die with it even if it is killed.
        dwp = not args.keep and not args.down
        root = self.state_root
        self.cluster = LocalCluster(args.name, state_dir=root / "clusters" / args.name if root else None,
                                    die_with_parent=dwp)
        self.lab = SipLab(args.name, state_dir=root / "labs" / args.name if root else None, slot=args.lab_slot,
                          die_with_parent=dwp)
        self.namespace = args.namespace
        self.deadline = time.monotonic() + float(args.timeout)
        #: set by the environment step: the images were (re)imported, pods started earlier run older ones
        self.images_changed = False
        self.drift_name = "dave"

    # ------------------------------------------------------------------ time
    def remaining(self, cap: float) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise DemoError(f"--timeout {self.args.timeout:.0f} s reached")
        return min(cap, left)

    def restart_clock(self) -> None:
        """A build of binaries does not count against --timeout."""
        self.deadline = time.monotonic() + float(self.args.timeout)

    def wait(self, pred: Callable[[], Any], cap: float, what: str, on_timeout: Callable[[], str] | None = None,
             interval: float = 0.25):
        from ..localenv.waiting import WaitTimeout, wait_for

        try:
            return wait_for(pred, timeout=self.remaining(cap), interval=interval, message=what)
        except WaitTimeout as e:
            detail = ""
            if on_timeout is not None:
                with contextlib.suppress(Exception):
                    detail = "\n" + on_timeout()
            raise DemoError(f"{e}{detail}") from None

    # ------------------------------------------------------------------ clients
    @property
    def ns_flag(self) -> str:
        """`` -n <namespace>`` for printed kubectl commands, empty for the default namespace."""
        return "" if self.namespace == "default" else f" -n {self.namespace}"

    @contextlib.contextmanager
    def api(self) -> Iterator[Any]:
        api = self.cluster.api_client()
        try:
            yield api
        finally:
            api.close()

    def kubectl(self, *args: str, check: bool = True, timeout: float = 120, input: str | None = None):
        from ..localenv.cluster import ClusterError

        try:
            return self.cluster.kubectl(*args, check=check, timeout=timeout, input=input)
        except ClusterError as e:
            raise DemoError(str(e)) from None
        except subprocess.TimeoutExpired:
            raise DemoError(f"kubectl {' '.join(args)} did not finish within {timeout:.0f} s") from None

    def helm(self, helm_bin: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        env = dict(os.environ)
        for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):  # nothing in ~/.config
            env[var] = str(self.cluster.dir / "helm" / var.lower().removeprefix("helm_").removesuffix("_home"))
        cmd = [str(helm_bin), "--kubeconfig", str(self.cluster.kubeconfig), *args]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DemoError(f"helm {' '.join(args[:2])} did not finish within {timeout:.0f} s") from None
        if res.returncode != 0:
            raise DemoError(f"helm {' '.join(args[:2])} failed ({res.returncode}):\n{res.stdout}{res.stderr}")
        return res

    def pod_logs(self, core, namespace: str, selector: str, lines: int = 30) -> str:
        """The last lines of each matching pod's container log (diagnostics for a failure message)."""
        text = []
        for p in core.list_namespaced_pod(namespace, label_selector=selector).items:
            try:
                path = self.cluster.container_log(p.metadata.name, namespace)
                tail = "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
            except Exception as e:  # noqa: BLE001 - diagnostics only
                tail = f"(no log: {e})"
            text.append(f"pod {p.metadata.name} ({p.status.phase}):\n{tail}")
        return "\n".join(text) or f"(no pods match {selector} in {namespace})"

    # ------------------------------------------------------------------ demo.json
    @property
    def record_path(self) -> Path:
        return self.cluster.dir / "demo.json"

    def read_record(self) -> dict[str, Any]:
        with contextlib.suppress(OSError, ValueError):
            return json.loads(self.record_path.read_text())
        return {}

    def record(self, **kw: Any) -> None:
        data = self.read_record()
        data.update(kw)
        self.record_path.parent.mkdir(parents=True, exist_ok=True)
        self.record_path.write_text(json.dumps(data, indent=2) + "\n")

    def down_command(self) -> str:
        return ("sipfleet demo --down" + (f" --name {self.cluster.name}" if self.cluster.name != DEFAULT_NAME else "")
                + (f" --state-dir {self.state_root}" if self.state_root else ""))
