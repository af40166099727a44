"""Prometheus metrics of one agent worker process (its own registry; the supervisor serves their sum on /metrics).

Names, labels and their cardinality: docs/operations.md ("Metrics"). The registration measurements follow RFC 6076
(:mod:`.worker.regattempts`): attempts, re-registrations, Ineffective Registration Attempts (IRA) and the
Registration Request Delay (RRD). The per-account registration state gauge is the supervisor's
(:mod:`.supervisor.metricsagg`), from the status documents it passes on.
"""

from __future__ import annotations

from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from sipfleet.api.models import RepairTrigger


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
        self.registration_attempts = Counter(
            "sipfleet_agent_registration_attempts",
            "Registration attempts begun (RFC 6076: first REGISTER of an attempt; challenges and retransmissions "
            "included in it, un-REGISTERs not)", registry=r)
        self.reregistrations = Counter(
            "sipfleet_agent_reregistrations",
            "Registration attempts begun while the account held a binding (refreshes of it)", registry=r)
        self.ineffective_registration_attempts = Counter(
            "sipfleet_agent_ineffective_registration_attempts",
            "RFC 6076 Ineffective Registration Attempts: attempts whose final answer was no 2xx, by reason "
            "(timeout: 408, failure: any other)", ["reason"], registry=r)
        self.register_request_delay = Histogram(
            "sipfleet_agent_register_request_delay_seconds",
            "RFC 6076 Registration Request Delay: from an attempt's first REGISTER to its final 2xx",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 32),
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
        self.dead_flows = Counter(
            "sipfleet_agent_udp_dead_flows", "UDP paths to the first hop called dead (OPTIONS probes unanswered)",
            registry=r)
        self.answers_truncated = Counter(
            "sipfleet_agent_registrar_answers_truncated",
            "Answers to REGISTER cut at pjsip's 4000-byte UDP receive buffer (PJSIP_MAX_PKT_LEN)", registry=r)
        for state in ("Registering", "Registered", "Failed", "Unregistered"):
            self.registrations.labels(state=state).set(0)
        # exported at 0 from the start: a series born at 1 is never counted by increase()/rate()
        for trigger in get_args(RepairTrigger):
            self.repairs.labels(trigger=trigger)
        for reason in ("timeout", "failure"):
            self.ineffective_registration_attempts.labels(reason=reason)
