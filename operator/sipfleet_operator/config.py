"""Operator settings, read from the environment (pure: ``from_env`` takes the mapping).

Built once, by ``main`` (command-line options override the environment there), and handed to kopf's operator
``memo``; nothing in the operator writes the environment."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Mapping

from sipfleet.api import models as m

from .sizing import Sizing


def _bool(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _json(env: Mapping[str, str], name: str) -> dict | None:
    value = env.get(name)
    if not value or not value.strip():
        return None
    try:
        parsed = json.loads(value)
    except ValueError as e:
        raise ValueError(f"{name} is not JSON ({e})") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"{name} must be a JSON object, not {value[:80]!r}")
    return parsed or None


def _number(env: Mapping[str, str], name: str, default, kind=int):
    value = env.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"{name}={value[:80]!r} is not {'an integer' if kind is int else 'a number'}") from None


@dataclass(frozen=True)
class Settings:
    agent_image: str = "sipfleet/agent:0.1.0"
    agent_image_pull_policy: str = "IfNotPresent"
    agent_args: tuple[str, ...] = ("cluster",)
    #: lab and test aid, off by default: the agents serve POST /debug/* (agent --debug-hooks)
    agent_debug_hooks: bool = False
    agent_http_port: int = 8080
    #: accounts one shared agent pod takes at most (1..MAX_ACCOUNTS_PER_AGENT); lowering it moves nobody
    accounts_per_agent: int = m.MAX_ACCOUNTS_PER_AGENT
    #: agent pod requests/limits from what it hosts (sizing.py); ``agent_resources`` replaces them when set
    agent_sizing: Sizing = field(default_factory=Sizing)
    agent_log_level: str = "info"
    #: TCP/TLS dead-flow bound of the agents (AgentSettings.dead_flow_seconds; 0: the kernel's defaults)
    agent_dead_flow_seconds: int = 30
    #: UDP dead-flow probing of the agents (AgentSettings.udp_dead_flow_seconds; 0: off)
    agent_udp_dead_flow_seconds: int = 0
    #: REGISTERs per second any one registrar gets from this operator's accounts (sipfleet.api.budget; 0: no
    #: budget), and the agents' probe interval while a registrar does not answer (AgentSettings)
    register_rate_limit: float = 0.0
    agent_registrar_probe_seconds: float = 5.0
    #: JSON overrides (the Helm chart passes them): fixed container resources (no sizing), pod and container
    #: securityContext
    agent_resources: dict | None = None
    agent_pod_security_context: dict | None = None
    agent_security_context: dict | None = None
    #: empty: watch every namespace (cluster-wide)
    namespaces: tuple[str, ...] = ()
    metrics_port: int = 9090  # 0 disables
    metrics_address: str = "127.0.0.1"
    liveness_endpoint: str | None = "http://127.0.0.1:8081/healthz"
    standalone: bool = True
    peering_name: str = "sipfleet"
    #: kopf peering priority; None: derived from ``identity`` (SIPFLEET_PRIORITY=auto, what the chart sets: two
    #: replicas of equal priority would both pause)
    priority: int | None = 0
    #: seconds after its last keep-alive a replica that stopped is given up (kopf's default is 60)
    peering_lifetime: int = 15
    #: this replica's kopf identity (main: the pod's name, else user@host)
    identity: str = ""
    server_timeout: int = 300
    client_timeout: int = 330
    connect_timeout: int = 10
    #: the longest the background task sleeps between looks at its clock (the ladder's wake-ups come at their own
    #: time, wakeups.py; this bounds how late the periodic sweeps run)
    ladder_tick_seconds: float = 1.0
    degraded_backoff_cap_seconds: int = 600
    #: a new agent's first Deployment waits until no account joined it for this long (or it is full), at most
    #: ``first_deploy_wait_seconds`` after its first account (sizing.first_deploy_wait: no pod replaced during
    #: a bulk create)
    first_deploy_settle_seconds: float = 1.0
    first_deploy_wait_seconds: float = 3.0
    log_format: str = "json"
    log_level: str = "INFO"
    #: who posts the operator's events (``reportingInstance``): the pod's name in a cluster (POD_NAME)
    instance: str = ""
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        d = cls()
        namespaces = tuple(n.strip() for n in env.get("SIPFLEET_WATCH_NAMESPACES", "").split(",") if n.strip())
        liveness = env.get("SIPFLEET_LIVENESS_ENDPOINT", d.liveness_endpoint or "")
        per_agent = _number(env, "SIPFLEET_ACCOUNTS_PER_AGENT", d.accounts_per_agent)
        if not 1 <= per_agent <= m.MAX_ACCOUNTS_PER_AGENT:
            raise ValueError(f"SIPFLEET_ACCOUNTS_PER_AGENT={per_agent} is not within 1..{m.MAX_ACCOUNTS_PER_AGENT}")
        dead_flow = _number(env, "SIPFLEET_AGENT_DEAD_FLOW_SECONDS", d.agent_dead_flow_seconds)
        udp_dead_flow = _number(env, "SIPFLEET_AGENT_UDP_DEAD_FLOW_SECONDS", d.agent_udp_dead_flow_seconds)
        for name, value in (("SIPFLEET_AGENT_DEAD_FLOW_SECONDS", dead_flow),
                            ("SIPFLEET_AGENT_UDP_DEAD_FLOW_SECONDS", udp_dead_flow)):
            if not 0 <= value <= 3600:
                raise ValueError(f"{name}={value} is not within 0..3600")
        limit = _number(env, "SIPFLEET_REGISTER_RATE_LIMIT", d.register_rate_limit, float)
        probe = _number(env, "SIPFLEET_AGENT_REGISTRAR_PROBE_SECONDS", d.agent_registrar_probe_seconds, float)
        if not 0 <= limit <= 1e6:
            raise ValueError(f"SIPFLEET_REGISTER_RATE_LIMIT={limit} is not within 0..1000000 (0: no budget)")
        if not 0 < probe <= 600:
            raise ValueError(f"SIPFLEET_AGENT_REGISTRAR_PROBE_SECONDS={probe} is not within 0 (exclusive)..600")
        try:
            sizing = Sizing.from_api(_json(env, "SIPFLEET_AGENT_SIZING"))
        except ValueError as e:
            raise ValueError(f"SIPFLEET_AGENT_SIZING: {e}") from None
        return cls(
            accounts_per_agent=per_agent,
            agent_sizing=sizing,
            agent_image=env.get("SIPFLEET_AGENT_IMAGE", d.agent_image),
            agent_image_pull_policy=env.get("SIPFLEET_AGENT_IMAGE_PULL_POLICY", d.agent_image_pull_policy),
            agent_log_level=env.get("SIPFLEET_AGENT_LOG_LEVEL", d.agent_log_level),
            agent_dead_flow_seconds=dead_flow,
            agent_udp_dead_flow_seconds=udp_dead_flow,
            register_rate_limit=limit,
            agent_registrar_probe_seconds=probe,
            agent_debug_hooks=_bool(env.get("SIPFLEET_AGENT_DEBUG_HOOKS"), d.agent_debug_hooks),
            agent_resources=_json(env, "SIPFLEET_AGENT_RESOURCES"),
            agent_pod_security_context=_json(env, "SIPFLEET_AGENT_POD_SECURITY_CONTEXT"),
            agent_security_context=_json(env, "SIPFLEET_AGENT_SECURITY_CONTEXT"),
            namespaces=namespaces,
            metrics_port=_number(env, "SIPFLEET_METRICS_PORT", d.metrics_port),
            metrics_address=env.get("SIPFLEET_METRICS_ADDRESS", d.metrics_address),
            liveness_endpoint=liveness or None,
            standalone=_bool(env.get("SIPFLEET_STANDALONE"), d.standalone),
            peering_name=env.get("SIPFLEET_PEERING_NAME", d.peering_name),
            priority=None if env.get("SIPFLEET_PRIORITY", "").strip().lower() == "auto"
            else _number(env, "SIPFLEET_PRIORITY", d.priority),
            peering_lifetime=_number(env, "SIPFLEET_PEERING_LIFETIME_SECONDS", d.peering_lifetime),
            server_timeout=_number(env, "SIPFLEET_WATCH_SERVER_TIMEOUT", d.server_timeout),
            client_timeout=_number(env, "SIPFLEET_WATCH_CLIENT_TIMEOUT", d.client_timeout),
            connect_timeout=_number(env, "SIPFLEET_WATCH_CONNECT_TIMEOUT", d.connect_timeout),
            ladder_tick_seconds=_number(env, "SIPFLEET_LADDER_TICK_SECONDS", d.ladder_tick_seconds, float),
            degraded_backoff_cap_seconds=_number(env, "SIPFLEET_DEGRADED_BACKOFF_CAP_SECONDS", d.degraded_backoff_cap_seconds),
            log_format=env.get("SIPFLEET_LOG_FORMAT", d.log_format),
            log_level=env.get("SIPFLEET_LOG_LEVEL", d.log_level).upper(),
            instance=env.get("POD_NAME", d.instance),
        )
