"""One Prometheus server process on the host: start, readiness, queries, stop by PID.

Promise: :meth:`PrometheusServer.start` writes ``prometheus.yml`` (and the rules file) into its directory, starts
the pinned ``prometheus`` (``kubebin``) through ``procs`` (its own session; PID and start time in ``pids.json``
there, so another process can stop it: :func:`stop_recorded`) listening on ``127.0.0.1`` at a port ``procs`` picked
free, with its TSDB in that directory, and waits until ``/-/ready``. Its UI is not built (the module zip has no
web assets); the HTTP API is all it serves. It sends nothing anywhere but to the scrape targets it discovers
(no remote write, no Alertmanager, no update checks). :meth:`stop` ends it by PID (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from .. import procs
from ..waiting import wait_for

PIDS = "pids.json"


class PrometheusError(RuntimeError):
    """Prometheus did not start or answered a query with an error; one line for humans."""


class PrometheusServer:
    def __init__(self, directory: Path, *, host: str = "127.0.0.1", binary: Path | None = None,
                 die_with_parent: bool = False):
        self.dir = Path(directory)
        self.host = host
        self.binary = binary
        self.die_with_parent = die_with_parent
        self.port: int | None = None
        self.record: procs.ProcRecord | None = None
        self.proc = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, config: dict, *, rules: dict | None = None, fresh: bool = True,
              timeout: float = 60.0) -> "PrometheusServer":
        from .. import kubebin

        binary = self.binary or kubebin.ensure(["prometheus"], allow_path=False)["prometheus"]
        stop_recorded(self.dir)  # one server per directory
        self.dir.mkdir(parents=True, exist_ok=True)
        if fresh:
            shutil.rmtree(self.dir / "data", ignore_errors=True)
        if rules is not None:
            rules_file = self.dir / "rules.yml"
            rules_file.write_text(yaml.safe_dump(rules, sort_keys=False))
            config = {**config, "rule_files": [str(rules_file)]}
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        self.port = procs.free_port(self.host)
        cmd = [str(binary), f"--config.file={self.dir / 'prometheus.yml'}",
               f"--storage.tsdb.path={self.dir / 'data'}", "--storage.tsdb.retention.time=1d",
               f"--web.listen-address={self.host}:{self.port}", "--log.level=warn"]
        self.record, self.proc = procs.start("prometheus", cmd, self.dir / "prometheus.log",
                                             die_with_parent=self.die_with_parent)
        procs.write_json_atomic(self.dir / PIDS, {"url": self.url, "records": [self.record.to_json()]})
        try:
            wait_for(self.ready, timeout=timeout, interval=0.2, message="Prometheus /-/ready", ignore=(OSError,))
        except PrometheusError:
            self.stop()
            raise
        except Exception as e:  # noqa: BLE001 - any other way of not becoming ready: stop it, say why
            self.stop()
            raise PrometheusError(f"Prometheus did not become ready ({e}); log tail:\n{self.log_tail()}") from None
        return self

    def ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise PrometheusError(f"prometheus exited with {self.proc.returncode}; log tail:\n{self.log_tail()}")
        with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:  # noqa: S310 (loopback)
            return r.status == 200

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join((self.dir / "prometheus.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        try:
            with urllib.request.urlopen(url, timeout=20) as r:  # noqa: S310 (loopback)
                body = json.loads(r.read())
        except urllib.error.HTTPError as e:
            body = json.loads(e.read() or b"{}")
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        """An instant query's result vector (``[{"metric": {...}, "value": [t, "v"]}, ...]``)."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("query", **params)
        return data["result"] if data["resultType"] == "vector" else [{"metric": {}, "value": data["result"]}]

    def targets(self) -> list[dict]:
        return self.api("targets", state="active")["activeTargets"]

    def alerts(self) -> list[dict]:
        return self.api("alerts")["alerts"]

    def stop(self, grace: float = 10.0) -> None:
        if self.record is not None:
            procs.stop([self.record], grace=grace)
            if self.proc is not None:
                self.proc.wait(timeout=5)
            (self.dir / PIDS).unlink(missing_ok=True)
            self.record = None


def stop_recorded(directory: Path, grace: float = 10.0) -> bool:
    """Stop the server a previous process started in ``directory`` (by its recorded PID); True if one ran."""
    path = Path(directory) / PIDS
    if not path.exists():
        return False
    try:
        records = procs.records_from(json.loads(path.read_text()).get("records", []))
    except (ValueError, KeyError, TypeError):
        records = []
    live = [r for r in records if procs.is_alive(r)]
    procs.stop(live, grace=grace)
    path.unlink(missing_ok=True)
    return bool(live)


def wait_scraped(server: PrometheusServer, jobs: dict[str, int], timeout: float = 60.0) -> list[dict]:
    """Wait until every job has at least its count of targets up (last scrape healthy)."""
    def ok():
        ts = server.targets()
        up = {j: sum(1 for t in ts if t["labels"].get("job") == j and t["health"] == "up") for j in jobs}
        return ts if all(up[j] >= n for j, n in jobs.items()) else None

    return wait_for(ok, timeout=timeout, interval=0.5, message=f"Prometheus scraping {jobs}",
                    ignore=(OSError, PrometheusError))
