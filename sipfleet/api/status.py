"""``SipAccountStatus``: what agents and the operator report (registration, the route measured on the wire, repairs,
the ladder, TLS, conditions). The agent owns ``registration/route/agent/tls``, the operator the rest."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from .base import ApiModel, RouteMode


ConditionType = Literal["Ready", "Registered", "RouteInSync", "RouteFlapping", "AgentReady", "Degraded"]


class Condition(ApiModel):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", max_length=1024)
    message: str = Field("", max_length=32768)
    observed_generation: int | None = Field(None, ge=0)
    last_transition_time: str = Field(description="RFC 3339 time of the last status change.")


RegistrationState = Literal["Registering", "Registered", "Failed", "Unregistered"]


class RegistrationStatus(ApiModel):
    """Written by the agent on state changes only (not on every refresh)."""

    state: RegistrationState
    code: int | None = Field(None, description="Last final SIP response code to REGISTER (0: no response).")
    reason: str | None = Field(None, max_length=1024, description="Reason phrase or local error.")
    expires_seconds: int | None = Field(None, description="Expiry granted by the registrar.")
    registered_since: str | None = Field(None, description="When the current registration was first granted.")
    last_failure: str | None = Field(None, description="When the last failed attempt ended.")
    failure_reason: str | None = Field(
        None, pattern=r"^[A-Za-z][A-Za-z0-9]*$", max_length=64,
        description="Machine-readable reason of the failure (sipfleet.api.reasons), e.g. RegistrarResponseRejected.")
    expires_at: str | None = Field(
        None, description="When the binding granted by the last 2xx lapses unless refreshed (from the granted expiry).")
    next_attempt_at: str | None = Field(
        None, description="When the agent sends the next REGISTER after this failure (its own retry timer).")
    next_attempt_reason: str | None = Field(
        None, pattern=r"^[A-Za-z][A-Za-z0-9]*$", max_length=64,
        description=("Why the next attempt comes then: Backoff, RetryAfter, AuthFailed, PermanentFailure, "
                     "TransportLost, Redirect (sipfleet.api.reasons)."))
    failures: int | None = Field(None, ge=0, description="Consecutive failed attempts (the back-off's n).")
    flow_timer_seconds: int | None = Field(
        None, ge=0, description=("RFC 5626: the Flow-Timer of the last 2xx (the registrar offers outbound, "
                                 "spec.registration.outbound): the flow is kept alive and watched at that interval."))
    redirected_to: str | None = Field(
        None, max_length=256, description="The registrar URI a followed 3xx sent the REGISTER to.")


class SentRequest(ApiModel):
    """One request as the agent really put it on the wire (from pjsip's transmit log)."""

    method: str
    transport: str = Field(description="udp, tcp or tls, as sent.")
    destination: str = Field(description="ip:port the request was sent to.")
    request_uri: str
    route: list[str] = Field(default_factory=list, description="Route header values, in order.")
    at: str


RepairMethod = Literal["recreate-account", "restart-pod"]
RepairTrigger = Literal["self-heal", "operator", "user", "reregister"]


class RepairRecord(ApiModel):
    method: RepairMethod
    trigger: RepairTrigger
    token: str | None = None
    drift_seen_at: str | None = None
    started_at: str
    completed_at: str | None = None
    duration_ms: float | None = Field(None, description="From drift seen (or start) to the first REGISTER via the route.")
    result: Literal["repaired", "failed", "in-progress"] = "in-progress"


class ActiveRoute(ApiModel):
    """Written by the agent for an account with fallback routes: which route it registers through and why."""

    index: int = Field(0, ge=0, le=3, description="0: the primary (spec.route); n: spec.fallbackRoutes[n-1].")
    route: list[str] = Field(default_factory=list, description="The active route's URIs.")
    reason: str | None = Field(
        None, pattern=r"^[A-Za-z][A-Za-z0-9]*$", max_length=64,
        description=("Why this route is active: Primary, or what failed on the previous one (FirstHopUnanswered, "
                     "FirstHopUnreachable, DeadFlow; sipfleet.api.reasons)."))
    message: str | None = Field(None, max_length=1024, description="What happened, for people.")
    since: str | None = Field(None, description="When this route became active.")
    failovers: int = Field(0, ge=0, description="Failovers of this account since its agent took it.")


class RouteStatus(ApiModel):
    """Desired and effective route. Written by the agent; ``effective`` is measured, never copied from config."""

    mode: RouteMode
    desired: list[str] = Field(default_factory=list, description="Configured route, then Service-Route (RFC 3608).")
    effective: list[str] = Field(
        default_factory=list, description="Route header values of the last REGISTER actually sent."
    )
    service_route: list[str] = Field(default_factory=list, description="Service-Route of the last 2xx to REGISTER.")
    first_hop: str | None = Field(None, description="proto:ip:port the last REGISTER was sent to.")
    response_from: str | None = Field(None, description="ip:port the last final response to REGISTER came from.")
    request_uri: str | None = None
    in_sync: bool | None = Field(None, description="Whether the effective route matches the desired one.")
    observed_at: str | None = None
    last_drift_at: str | None = None
    drift_count: int = Field(0, ge=0, description="Drifts the hosting agent measured since it took the account.")
    self_heal_count: int = Field(0, ge=0, description="Drifts the hosting agent repaired on its own (self-heal).")
    last_repair: RepairRecord | None = None
    active: ActiveRoute | None = Field(
        None, description="Accounts with fallbackRoutes: the route meant to be active; desired and inSync are about it.")
    repair_history: list[RepairRecord] = Field(default_factory=list, max_length=10)


class AgentRef(ApiModel):
    """Written by the agent: who hosts this account and which requests it has acknowledged."""

    name: str | None = Field(None, description="Agent (workload) name.")
    pod: str | None = None
    version: str | None = None
    repair_token_ack: str | None = Field(None, description="Last repair token the agent carried out.")
    reregister_token_ack: str | None = Field(None, description="Last re-registration token the agent carried out.")


class LadderStatus(ApiModel):
    """Written by the operator: where the drift repair ladder stands for this account."""

    phase: Literal["Idle", "RepairRequested", "PodRestarted", "Degraded"] = "Idle"
    attempts: int = 0
    token: str | None = None
    requested_at: str | None = None
    next_attempt_at: str | None = None
    last_method: RepairMethod | None = None
    last_duration_ms: float | None = None
    cause: Literal["Drift", "Flapping"] | None = Field(None, description="What started the current escalation.")
    flapping: bool = Field(False, description="More than spec.drift.flapThreshold drifts within flapWindowSeconds.")
    drift_count_seen: int | None = Field(None, description="The agent's route.driftCount last counted.")
    recent_drifts: list[str] = Field(default_factory=list, max_length=101,
                                     description="When the drifts within spec.drift.flapWindowSeconds were seen.")


class TlsStatus(ApiModel):
    """Written by the agent (transport tls): what the TLS layer of the account's worker reported last. pjsua2
    exposes the negotiated cipher but not the negotiated version, only the versions enabled: ``protocol`` is set
    when exactly one is enabled (``minVersion: TLSv1.2``, the default, with a library that has no TLS 1.3)."""

    state: Literal["Connected", "Failed", "Disconnected"]
    remote: str | None = Field(None, description="ip:port of the TLS peer (the first hop).")
    protocol: str | None = Field(None, description="Negotiated TLS version when it is determined (see above).")
    enabled_protocols: list[str] = Field(default_factory=list, description="TLS versions the agent offered.")
    cipher: str | None = Field(None, description="Negotiated cipher suite (OpenSSL name).")
    verified: bool | None = Field(None, description="Whether the server's certificate and name were verified.")
    verify_messages: list[str] = Field(default_factory=list, max_length=16,
                                       description="pjsip's verification result (e.g. 'The certificate is untrusted').")
    library: str | None = Field(None, description="The agent's TLS library (e.g. OpenSSL 1.0.2k-fips).")
    at: str | None = Field(None, description="When the TLS layer reported this.")


class SipAccountStatus(ApiModel):
    """Status. Field ownership: the agent writes registration/route/agent, the operator everything else."""

    model_config = ApiModel.model_config | ConfigDict(extra="ignore")

    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    registration: RegistrationStatus | None = None
    route: RouteStatus | None = None
    agent: AgentRef | None = None
    ladder: LadderStatus | None = None
    tls: TlsStatus | None = None
