"""The Prometheus runner (sipfleet/localenv/prometheus/server.py) with the real binary built from the pinned
module: it listens on loopback at a port of its own, loads the chart's rules, scrapes a target, answers queries,
and is stopped by its PID, also from another process's view (``stop_recorded``) so a second server in the same
directory never runs next to the first. Against a local target only (an agent registry served on loopback)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prometheus_client import generate_latest

from sipfleet.localenv import procs
from sipfleet.localenv.prometheus import rules as promrules
from sipfleet.localenv.prometheus.server import PrometheusError, PrometheusServer, stop_recorded, wait_scraped
from sipfleet.localenv.waiting import wait_for


@pytest.fixture(scope="module")
def bins():
    from sipfleet.localenv import kubebin

    return kubebin.ensure(["helm", "prometheus"], allow_path=False)


@pytest.fixture
def target():
    from sipfleet_agent.metrics import Metrics

    m = Metrics()
    m.registration_attempts.inc(3)
    m.register_request_delay.observe(0.004)

    class H(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = generate_latest(m.registry)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield m, f"127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_runs_on_loopback_with_the_charts_rules_scrapes_and_stops_by_pid(bins, target, tmp_path):
    m, addr = target
    spec = promrules.chart_rules(bins["helm"])
    cfg = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
           "scrape_configs": [{"job_name": "sipfleet-agents", "static_configs": [{"targets": [addr]}]}]}
    server = PrometheusServer(tmp_path / "p", binary=bins["prometheus"], die_with_parent=True).start(cfg, rules=spec)
    try:
        assert server.url.startswith("http://127.0.0.1:")
        rec = json.loads((tmp_path / "p" / "pids.json").read_text())
        assert rec["url"] == server.url and rec["records"][0]["pid"] == server.proc.pid
        groups = server.api("rules")["groups"]
        assert {r["name"] for g in groups for r in g["rules"]} == {r["alert"] for r in promrules.alerts(spec)}
        wait_scraped(server, {"sipfleet-agents": 1}, timeout=30)
        got = wait_for(lambda: server.query("sipfleet_agent_registration_attempts_total"), timeout=30)
        assert float(got[0]["value"][1]) == 3.0
        with pytest.raises(PrometheusError, match="parse"):
            server.query("sum(")
        # a second server in the same directory first stops the one running there, by its recorded PID
        first = server.record
        second = PrometheusServer(tmp_path / "p", binary=bins["prometheus"], die_with_parent=True).start(cfg)
        assert not procs.is_alive(first) and second.port
        server = second
    finally:
        server.stop()
    assert not procs.is_alive(first) and server.proc.poll() is not None and server.record is None
    assert not (tmp_path / "p" / "pids.json").exists()
    assert stop_recorded(tmp_path / "p") is False  # nothing left to stop


def test_a_bad_config_is_a_clear_error_and_leaves_nothing_running(bins, tmp_path):
    server = PrometheusServer(tmp_path / "p", binary=bins["prometheus"], die_with_parent=True)
    with pytest.raises(PrometheusError, match="exited"):
        server.start({"global": {"scrape_interval": "soon"}}, timeout=20)
    assert server.record is None
