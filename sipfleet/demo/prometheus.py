"""``--with-prometheus``: a real Prometheus next to the demo (built from the pinned module, on the host, loopback
only, started and stopped by PID through ``procs``; its directory ``<cluster dir>/prometheus``). It discovers the
operator through the chart's metrics Service and the agent pods through the API, scrapes every second and runs
the chart's own alerts. After the fault the demo prints what every dashboard query and alert showed, and waits
for SipRouteDrift to fire. Kept running with the cluster; ``--no-keep`` and ``--down`` stop it."""

from __future__ import annotations

from pathlib import Path

from .context import RELEASE, RELEASE_NAMESPACE, Demo, DemoError

INTERVAL_S = 1.0


def prometheus_dir(d: Demo) -> Path:
    return d.cluster.dir / "prometheus"


def wanted(d: Demo) -> bool:
    return bool(getattr(d.args, "with_prometheus", False))


def step_prometheus(d: Demo) -> tuple | None:
    """Start it once the accounts are Registered: (server, the chart's rules); None without ``--with-prometheus``."""
    if not wanted(d):
        return None
    from ..localenv import kubebin
    from ..localenv.prometheus import config, rules
    from ..localenv.prometheus.server import PrometheusError, PrometheusServer, wait_scraped

    bins = kubebin.ensure(["helm", "prometheus"], allow_path=False)
    spec = rules.chart_rules(bins["helm"], release=RELEASE, namespace=RELEASE_NAMESPACE)
    server = PrometheusServer(prometheus_dir(d), binary=bins["prometheus"], die_with_parent=not d.args.keep)
    try:
        server.start(config.build(kubeconfig=d.cluster.kubeconfig, operator_namespace=RELEASE_NAMESPACE,
                                  agent_namespaces=[d.namespace], release=RELEASE, interval_s=INTERVAL_S), rules=spec)
        wait_scraped(server, {f"{RELEASE}-metrics": 1, config.AGENT_JOB: 1}, timeout=d.remaining(60))
    except (PrometheusError, TimeoutError) as e:
        server.stop()
        raise DemoError(f"Prometheus: {e}") from None
    n = len(server.targets())
    d.out.line(f"Prometheus {server.url} (loopback only; API, no web UI): {n} targets (operator via Service "
               f"{RELEASE}-metrics, agent pods), every {INTERVAL_S:g} s, with the chart's {len(rules.alerts(spec))} "
               "alerts")
    return server, spec


def report(d: Demo, started: tuple | None) -> None:
    """After the fault: SipRouteDrift firing, then every dashboard query and alert as they are now."""
    if started is None:
        return
    from ..localenv.prometheus import check

    server, spec = started
    d.wait(lambda: [a for a in server.alerts() if a["labels"]["alertname"] == "SipRouteDrift"
                    and a["state"] == "firing"], 30, "Prometheus: alert SipRouteDrift firing")
    d.out.line(f"Prometheus {server.url}: SipRouteDrift firing; every dashboard query and alert now:")
    d.out.block("\n".join(check.table(check.run_all(server, spec, rate_interval="5m"))))
    states = {a["labels"]["alertname"]: a["state"] for a in server.alerts()}
    d.out.line("alerts: " + (", ".join(f"{k} {v}" for k, v in sorted(states.items())) or "none"))


def stop(d: Demo) -> bool:
    """Stop a Prometheus a demo left running (by its recorded PID); True if one ran."""
    from ..localenv.prometheus.server import stop_recorded

    return stop_recorded(prometheus_dir(d))
