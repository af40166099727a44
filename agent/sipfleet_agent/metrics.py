"""Prometheus metrics of one agent process (its own registry, served on /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.registrations = Gauge(
            "sipfleet_agent_registrations", "Accounts by registration state", ["state"], registry=r
        )
        self.registration_failures = Counter(
            "sipfleet_agent_registration_failures", "Failed REGISTER outcomes by final code", ["code"], registry=r
        )
        self.registers_sent = Counter(
            "sipfleet_agent_registers_sent", "REGISTER requests put on the wire (retransmissions included)", registry=r
        )
        self.drift_seen = Counter("sipfleet_agent_drift_seen", "REGISTERs sent off the configured route", registry=r)
        self.drift_repaired = Counter("sipfleet_agent_drift_repaired", "Repairs that brought the route back", registry=r)
        self.repairs = Counter("sipfleet_agent_repairs", "Repairs started, by trigger", ["trigger"], registry=r)
        self.self_heal_deferred = Counter(
            "sipfleet_agent_self_heal_deferred",
            "Self-heal repairs held back because the account keeps drifting (back-off)", registry=r)
        self.repair_latency = Histogram(
            "sipfleet_agent_repair_latency_seconds",
            "From repair start to the first REGISTER via the configured route",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.calls = Counter("sipfleet_agent_calls", "Incoming calls by result", ["result"], registry=r)
        self.active_calls = Gauge("sipfleet_agent_active_calls", "Calls not yet disconnected", registry=r)
        self.ip_changes = Counter("sipfleet_agent_ip_changes", "handleIpChange() calls", registry=r)
        self.accounts = Gauge("sipfleet_agent_accounts", "Accounts created in pjsua", registry=r)
        self.tls_connected = Gauge(
            "sipfleet_agent_tls_connected_accounts",
            "Accounts whose first hop's TLS connection is up, by negotiated version and cipher", ["protocol", "cipher"],
            registry=r)
        self.tls_failures = Counter(
            "sipfleet_agent_tls_failures", "TLS connections that failed, by cause (verify, handshake)", ["reason"],
            registry=r)
        for state in ("Registering", "Registered", "Failed", "Unregistered"):
            self.registrations.labels(state=state).set(0)
