"""The sipfleet API: one source of truth for the SipAccount resource and the agent contract.

Everything users write (``SipAccountSpec``), everything agents and the operator report
(``SipAccountStatus``), and what the operator hands an agent (``AgentAssignment``) is defined here.
``sipfleet.api.crd`` generates ``crds/sipaccounts.sipfleet.io.yaml`` from these models, and a test fails
when the committed CRD and the models disagree.

Conventions (Kubernetes API style): camelCase on the wire, snake_case in Python, frozen models,
unknown fields rejected. Secrets never appear in any of these models: specs name a Secret, agents
resolve it at run time and keep the password in memory only.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

GROUP = "sipfleet.io"
VERSION = "v1alpha1"
KIND = "SipAccount"
PLURAL = "sipaccounts"
API_VERSION = f"{GROUP}/{VERSION}"

#: Hard limits of the pjsua2 wheels (see shared/docs/sip-facts.md): PJSUA_MAX_ACC and PJSUA_MAX_CALLS, per
#: pjsua2 process (one Endpoint each).
MAX_ACCOUNTS_PER_WORKER = 8
MAX_CALLS_PER_WORKER = 4
#: An agent pod runs up to MAX_WORKERS_PER_AGENT pjsua2 worker processes (issue 10: the pod is the unit of packing).
MAX_WORKERS_PER_AGENT = 8
#: Accounts one agent pod hosts at most (the operator's accountsPerAgent, default and ceiling).
MAX_ACCOUNTS_PER_AGENT = MAX_ACCOUNTS_PER_WORKER * MAX_WORKERS_PER_AGENT
#: Calls one agent pod answers at once at most: each worker's PJSUA_MAX_CALLS.
MAX_CALLS_PER_AGENT = MAX_CALLS_PER_WORKER * MAX_WORKERS_PER_AGENT

# A SIP or SIPS URI with a host part. Deliberately strict enough to catch typos at admission
# (missing scheme, spaces, angle brackets) without trying to be a full RFC 3261 grammar. No control character,
# space or DEL anywhere: every one of these strings ends up in a SIP header or request line, and CR/LF there
# would be header injection. The same pattern is Python's (the models) and RE2's (the apiserver).
SIP_URI_PATTERN = r"^sips?:([^@\x00-\x20\x7f<>;]+@)?[A-Za-z0-9.\-\[\]:]+(;[^\x00-\x20\x7f<>;=]+(=[^\x00-\x20\x7f<>;]+)?)*$"
# An address of record needs a user part.
AOR_PATTERN = r"^sips?:[^@\x00-\x20\x7f<>;:]+@[A-Za-z0-9.\-\[\]]+(:[0-9]{1,5})?$"
# A digest realm goes into a quoted-string (realm="..."): printable, no quote, no backslash.
REALM_PATTERN = r'^[^\x00-\x1f\x7f"\\]+$'
# Route entries are loose-routing (RFC 3261 16.12): the lr parameter, alone or with a value.
LOOSE_ROUTE_PATTERN = r";lr(=[^;]*)?(;|$)"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

_SIP_URI_RE = re.compile(SIP_URI_PATTERN)


class ApiModel(BaseModel):
    """Base for every API model: camelCase aliases, immutable, no unknown fields."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        extra="forbid",
    )

    def to_api(self) -> dict:
        """The JSON-ready wire form (camelCase, defaults included, ``None`` dropped)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


SipUri = Annotated[str, Field(pattern=SIP_URI_PATTERN, max_length=256)]

Transport = Literal["udp", "tcp", "tls"]
RouteMode = Literal["prevent", "account"]


# --------------------------------------------------------------------------------------------------
# spec
# --------------------------------------------------------------------------------------------------


class CredentialsRef(ApiModel):
    """Where the digest credentials live: a Secret in the SipAccount's namespace."""

    secret_name: str = Field(
        pattern=DNS_SUBDOMAIN_PATTERN,
        max_length=253,
        description="Name of a Secret in the same namespace holding the digest credentials.",
    )
    username_key: str = Field(
        "username", pattern=SECRET_KEY_PATTERN, max_length=253,
        description="Key in the Secret holding the authentication user name.",
    )
    password_key: str = Field(
        "password", pattern=SECRET_KEY_PATTERN, max_length=253,
        description="Key in the Secret holding the password.",
    )
    realm: str = Field("*", min_length=1, max_length=253, pattern=REALM_PATTERN,
                       description="Digest realm; '*' answers any realm. No control characters, quotes or backslashes.")


class RegistrationSettings(ApiModel):
    """REGISTER timers and what the agent does after each kind of failed registration (the agent's own retry
    timer, never pjsua's; docs/registration-policy.md has the table). Defaults suit production; pjsua's own
    defaults wait up to 5 minutes after a failure and retry a rejected password forever."""

    model_config = ApiModel.model_config | ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.firstRetryIntervalSeconds <= self.retryIntervalSeconds",
                    "message": "firstRetryIntervalSeconds must not exceed retryIntervalSeconds",
                    "fieldPath": ".firstRetryIntervalSeconds",
                },
                {
                    "rule": "self.jitterSeconds < self.retryIntervalSeconds",
                    "message": "jitterSeconds must be smaller than retryIntervalSeconds",
                    "fieldPath": ".jitterSeconds",
                },
                {
                    "rule": "self.retryIntervalSeconds <= self.maxRetryIntervalSeconds",
                    "message": "retryIntervalSeconds must not exceed maxRetryIntervalSeconds",
                    "fieldPath": ".maxRetryIntervalSeconds",
                },
            ]
        }
    )

    expires_seconds: int = Field(300, ge=60, le=86400, description="Requested registration expiry.")
    retry_interval_seconds: int = Field(
        30, ge=1, le=3600,
        description=("Back-off base: the shortest wait before retrying after a failed registration (5xx without "
                     "Retry-After, 408, other 4xx, local errors). Each consecutive failure multiplies the "
                     "window by backoffMultiplier, up to maxRetryIntervalSeconds."),
    )
    max_retry_interval_seconds: int = Field(
        600, ge=1, le=86400, description="Back-off ceiling: no back-off wait is longer than this.",
    )
    backoff_multiplier: float = Field(
        2.0, ge=1.0, le=10.0, description="Growth of the back-off window per consecutive failure.",
    )
    backoff_jitter: Literal["full", "none"] = Field(
        "full",
        description=("full: the n-th wait is drawn uniformly between retryIntervalSeconds and "
                     "min(maxRetryIntervalSeconds, retryIntervalSeconds * backoffMultiplier^n), so a fleet that "
                     "failed together spreads out; none: exactly retryIntervalSeconds * backoffMultiplier^(n-1), "
                     "capped (labs and tests)."),
    )
    first_retry_interval_seconds: int = Field(
        2, ge=0, le=3600, description="Wait before the first REGISTER after a lost transport (TCP/TLS connection).",
    )
    jitter_seconds: int = Field(
        3, ge=0, le=600,
        description=("Random extra wait, 0 to this, added to the waits that are not back-off: the first retry "
                     "after a lost transport, Retry-After, authFailureRetrySeconds, permanentFailureRetrySeconds."),
    )
    auth_failure_retry_seconds: int = Field(
        600, ge=1, le=86400,
        description=("Wait after the registrar refused the credentials (401/407 to a REGISTER that answered its "
                     "challenge, or 403): reason AuthFailed. The registrar is not hammered with a bad password."),
    )
    retry_after_max_seconds: int = Field(
        600, ge=0, le=86400,
        description=("Retry-After of a 500/503/480 is honoured up to this many seconds (a larger value is cut "
                     "to it); 0 ignores Retry-After (back-off instead)."),
    )
    permanent_failure_retry_seconds: int = Field(
        1800, ge=1, le=86400,
        description=("Slow retry after an answer that will not change by retrying soon (404, 6xx): reason "
                     "PermanentFailure."),
    )
    redirect_policy: Literal["follow", "refuse"] = Field(
        "follow",
        description=("What a 3xx to REGISTER does: follow (REGISTER to the first Contact of the 3xx, at most "
                     "maxRedirects in a row, never a target seen before in the same chain) or refuse (reason "
                     "RedirectRefused, back-off)."),
    )
    max_redirects: int = Field(3, ge=1, le=10, description="Redirects followed in a row before refusing.")


class IncomingCallPolicy(ApiModel):
    """What the agent does with an incoming INVITE."""

    model_config = ApiModel.model_config | ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.policy == 'reject' || self.rejectCode == 486",
                    "message": "rejectCode applies only to policy 'reject'",
                    "fieldPath": ".rejectCode",
                },
                {
                    "rule": "self.policy == 'answer' || self.answerDelayMs == 0",
                    "message": "answerDelayMs applies only to policy 'answer'",
                    "fieldPath": ".answerDelayMs",
                },
            ]
        }
    )

    policy: Literal["answer", "ring", "reject"] = Field(
        "answer", description="answer (200 after answerDelayMs), ring (180 until the caller gives up), reject."
    )
    answer_delay_ms: int = Field(0, ge=0, le=60000, description="Ring this long before answering.")
    reject_code: int = Field(486, ge=400, le=699, description="Final response code for policy 'reject'.")


class DriftSettings(ApiModel):
    """How route drift is handled (see docs/architecture.md, 'Drift repair ladder')."""

    self_heal: bool = Field(
        True,
        description=("The agent re-creates a drifted account on its own at the first drifted REGISTER; the "
                     "operator's ladder is the escalation. false: the operator's ladder repairs every drift."),
    )
    repair_timeout_seconds: int = Field(
        10, ge=1, le=600,
        description="How long a drift (self-heal or repair request) may last before the next ladder step.",
    )
    max_pod_restarts: int = Field(
        2, ge=0, le=10, description="Pod restarts tried before the account is marked Degraded and backs off."
    )
    flap_threshold: int = Field(
        3, ge=1, le=100,
        description="More drifts than this within flapWindowSeconds make the route RouteFlapping (escalated).",
    )
    flap_window_seconds: int = Field(
        300, ge=10, le=86400, description="The window in which drifts are counted for RouteFlapping.",
    )


class AgentPlacement(ApiModel):
    dedicated: bool = Field(False, description="Run this account in an agent pod of its own.")


TlsMinVersion = Literal["TLSv1", "TLSv1.1", "TLSv1.2"]


class TlsCaRef(ApiModel):
    """Where the CA certificates (PEM) that verify the server live: a key of a ConfigMap or Secret in the account's
    namespace. A CA is not secret (a ConfigMap is the usual home); a Secret works too."""

    kind: Literal["ConfigMap", "Secret"] = Field("ConfigMap", description="ConfigMap or Secret.")
    name: str = Field(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253,
                      description="Name of the ConfigMap or Secret in the SipAccount's namespace.")
    key: str = Field("ca.crt", pattern=SECRET_KEY_PATTERN, max_length=253,
                     description="Key holding one or more PEM CA certificates.")


class TlsClientCertificateRef(ApiModel):
    """A client certificate for the TLS connection: a ``kubernetes.io/tls`` Secret (``tls.crt``, ``tls.key``)."""

    secret_name: str = Field(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253,
                             description="Name of a kubernetes.io/tls Secret in the SipAccount's namespace.")


class TlsSettings(ApiModel):
    """The account's TLS policy (transport tls only). The TLS transport is per pjsua2 worker process, so accounts
    share a worker only when their TLS settings are equal (docs/tls.md)."""

    model_config = ApiModel.model_config | ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!self.verifyServer || has(self.caRef)",
                    "message": "caRef is required while verifyServer is true: the CA the server's certificate is "
                               "verified against",
                    "fieldPath": ".caRef",
                },
            ]
        }
    )

    ca_ref: TlsCaRef | None = Field(None, description="CA certificates (PEM) the server's certificate is verified against.")
    client_certificate_secret_ref: TlsClientCertificateRef | None = Field(
        None, description="Present this client certificate (a kubernetes.io/tls Secret) when the server asks.")
    verify_server: bool = Field(
        True, description=("Verify the server's certificate against caRef and its name against the first hop's host "
                           "(the route's first URI, or the registrar without a route). false: encrypted, not "
                           "authenticated."))
    min_version: TlsMinVersion = Field(
        "TLSv1.2", description="Oldest TLS version offered. The agent's TLS library (pjsua2's bundled OpenSSL "
                               "1.0.2k) has no TLS 1.3, so TLSv1.2 means exactly TLS 1.2.")

    @model_validator(mode="after")
    def _ca_when_verifying(self) -> "TlsSettings":
        if self.verify_server and self.ca_ref is None:
            raise ValueError("tls.caRef is required while tls.verifyServer is true")
        return self


class SipIdentity(ApiModel):
    """The SIP side of an account: who registers where, through which route, with which timers and call policy.
    Declared once, here: the SipAccount spec is a ``SipIdentity`` plus what the operator needs (credentials as a
    Secret reference, TLS as references, drift and placement settings), and the agent's contract
    (:class:`AgentAccount`) is one plus what the agent needs; the operator copies these fields over as they are."""

    aor: str = Field(
        pattern=AOR_PATTERN, max_length=256,
        description="Address of record, e.g. sip:alice@example.com.",
    )
    registrar: SipUri = Field(description="Registrar URI (the REGISTER request URI), e.g. sip:registrar.example.com.")
    route: list[SipUri] = Field(
        default_factory=list,
        max_length=4,
        description="Ordered outbound proxy route; the first entry is the first hop. Use ;lr URIs.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    transport: Transport = Field("udp", description="Transport used towards the first hop.")
    route_mode: RouteMode = Field(
        "prevent",
        description=(
            "prevent: the route is the agent's global outbound proxy, which held against every known drift "
            "path; account: the route is set per account, drift can happen and is detected and repaired."
        ),
    )
    registration: RegistrationSettings = Field(default_factory=RegistrationSettings)
    incoming_calls: IncomingCallPolicy = Field(default_factory=IncomingCallPolicy)

    @field_validator("route")
    @classmethod
    def _route_unique(cls, route: list[str]) -> list[str]:
        if len(set(route)) != len(route):
            raise ValueError("route entries must be unique")
        for r in route:
            if not re.search(LOOSE_ROUTE_PATTERN, r):
                raise ValueError(f"route entry {r!r} is not a loose-routing URI (with ;lr): strict routing is not supported")
        return route


class SipAccountSpec(SipIdentity):
    """Desired state: this SIP identity registers with this registrar through this ordered proxy route."""

    model_config = ApiModel.model_config | ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.transport != 'tls' || (self.route.size() > 0 ? "
                    "self.route.all(r, r.startsWith('sips:') || r.contains(';transport=tls')) : "
                    "(self.registrar.startsWith('sips:') || self.registrar.contains(';transport=tls')))",
                    "message": "transport tls needs a sips: or ;transport=tls route (or registrar when the route is empty)",
                    "fieldPath": ".transport",
                },
                {
                    "rule": "self.transport == 'tls' || (!self.registrar.startsWith('sips:') "
                    "&& self.route.all(r, !r.startsWith('sips:')))",
                    "message": "sips: URIs need transport tls",
                    "fieldPath": ".transport",
                },
                {
                    "rule": "self.transport == 'tls' || !has(self.tls)",
                    "message": "tls applies only to transport tls",
                    "fieldPath": ".tls",
                },
                {
                    "rule": "self.transport != 'tls' || has(self.tls)",
                    "message": "transport tls needs tls: a caRef to verify the server against, or verifyServer: false",
                    "fieldPath": ".tls",
                },
                {
                    "rule": "self.routeMode != 'prevent' || self.route.size() > 0",
                    "message": "routeMode prevent needs at least one proxy in route",
                    "fieldPath": ".routeMode",
                },
                {
                    "rule": f"self.route.all(r, r.matches('{LOOSE_ROUTE_PATTERN}'))",
                    "message": "every route entry must be a loose-routing URI (with ;lr): strict routing is not supported",
                    "fieldPath": ".route",
                },
            ]
        }
    )

    tls: TlsSettings | None = Field(None, description="TLS policy; required with transport tls, refused otherwise.")
    credentials: CredentialsRef
    drift: DriftSettings = Field(default_factory=DriftSettings)
    agent: AgentPlacement = Field(default_factory=AgentPlacement)

    @model_validator(mode="after")
    def _tls_with_tls(self) -> "SipAccountSpec":
        if self.tls is not None and self.transport != "tls":
            raise ValueError("tls applies only to transport tls")
        if self.tls is None and self.transport == "tls":
            raise ValueError("transport tls needs tls: a caRef to verify the server against, or verifyServer: false")
        return self


# --------------------------------------------------------------------------------------------------
# status
# --------------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------------
# agent contract: what the operator hands an agent (ConfigMap) or a person writes (standalone file)
# --------------------------------------------------------------------------------------------------


class AgentCredentials(ApiModel):
    """How an agent finds one account's credentials: a Secret (in cluster) or files (standalone)."""

    model_config = ApiModel.model_config | ConfigDict(json_schema_extra=None)

    username: str | None = Field(None, description="Literal user name (not secret).")
    username_file: str | None = None
    password_file: str | None = None
    secret_name: str | None = None
    username_key: str = "username"
    password_key: str = "password"
    secret_version: str | None = Field(None, description="Secret resourceVersion; a change makes the agent re-read.")
    realm: str = "*"

    @model_validator(mode="after")
    def _one_source(self) -> "AgentCredentials":
        if self.secret_name:
            return self
        if not self.password_file:
            raise ValueError("credentials need secretName or passwordFile")
        if not (self.username or self.username_file):
            raise ValueError("credentials need username or usernameFile with passwordFile")
        return self


class AgentTls(ApiModel):
    """How an agent finds one account's TLS material: ConfigMap/Secret references (in cluster; the operator copies
    ``spec.tls``) or files (standalone). Never the material itself."""

    ca_kind: Literal["ConfigMap", "Secret"] = "ConfigMap"
    ca_name: str | None = None
    ca_key: str = "ca.crt"
    ca_file: str | None = Field(None, description="Standalone: a file of PEM CA certificates.")
    client_secret_name: str | None = Field(None, description="A kubernetes.io/tls Secret (tls.crt, tls.key).")
    cert_file: str | None = Field(None, description="Standalone: the client certificate (PEM).")
    key_file: str | None = Field(None, description="Standalone: the client certificate's private key (PEM).")
    verify_server: bool = True
    min_version: TlsMinVersion = "TLSv1.2"

    @model_validator(mode="after")
    def _consistent(self) -> "AgentTls":
        if self.ca_name and self.ca_file:
            raise ValueError("tls: caName or caFile, not both")
        if self.verify_server and not (self.ca_name or self.ca_file):
            raise ValueError("tls: verifyServer needs caName or caFile")
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("tls: certFile and keyFile go together")
        if self.client_secret_name and self.cert_file:
            raise ValueError("tls: clientSecretName or certFile/keyFile, not both")
        return self

    def worker_key(self) -> tuple:
        return tuple(self.model_dump(mode="json").values())

    @classmethod
    def from_spec(cls, t: TlsSettings) -> "AgentTls":
        ca, cc = t.ca_ref, t.client_certificate_secret_ref
        return cls(ca_kind=ca.kind if ca else "ConfigMap", ca_name=ca.name if ca else None,
                   ca_key=ca.key if ca else "ca.crt", client_secret_name=cc.secret_name if cc else None,
                   verify_server=t.verify_server, min_version=t.min_version)


class AgentAccount(SipIdentity):
    """One account an agent hosts: its :class:`SipIdentity` as the spec says it, and what the agent needs besides."""

    name: str = Field(description="SipAccount name (standalone: any unique label).")
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    tls: AgentTls | None = Field(None, description="TLS policy (transport tls); without it TLS is not verified.")
    credentials: AgentCredentials
    self_heal: bool = True
    repair_token: str | None = Field(None, description="A new value asks the agent to re-create the account.")
    reregister_token: str | None = Field(None, description="A new value asks the agent to re-register.")

    def worker_key(self) -> tuple:
        """Accounts can share a pjsua2 worker process only when this key is equal: prevent mode's global outbound
        proxy and the transports (with their TLS settings) are per process. (transport, route, routeMode), plus the
        TLS settings' key for a tls account that has them."""
        return (self.transport, tuple(self.route), self.route_mode) + tls_key(self.transport, self.tls)


class AgentSettings(ApiModel):
    sip_address: str = Field("127.0.0.1", description="Local IP the SIP transports bind to.")
    sip_port: int = Field(0, ge=0, le=65535, description="Local SIP port; 0 picks a free one.")
    http_address: str = "127.0.0.1"
    http_port: int = Field(8080, ge=0, le=65535, description="/healthz, /readyz, /metrics.")
    self_heal: bool = False
    status_debounce_ms: int = Field(200, ge=0, le=60000)
    heartbeat_timeout_seconds: float = Field(
        10.0, gt=0, le=300, description="A worker that sends no heartbeat for this long is hung: it is restarted.")
    ip_change_poll_ms: int = Field(1000, ge=100, le=60000, description="How often local addresses and link states are checked.")
    unregister_timeout_seconds: float = Field(5.0, gt=0, le=60)


class AgentAssignment(ApiModel):
    """The whole desired state of one agent. In cluster: ConfigMap key ``assignment.json``."""

    agent: str = Field(description="Agent name.")
    settings: AgentSettings = Field(default_factory=AgentSettings)
    accounts: list[AgentAccount] = Field(default_factory=list, max_length=MAX_ACCOUNTS_PER_AGENT)

    @model_validator(mode="after")
    def _fits_workers(self) -> "AgentAssignment":
        if workers_needed(self.accounts) > MAX_WORKERS_PER_AGENT:
            raise ValueError(f"these accounts need {workers_needed(self.accounts)} workers (one per "
                             f"{MAX_ACCOUNTS_PER_WORKER} accounts of one transport, route and routeMode); "
                             f"an agent runs at most {MAX_WORKERS_PER_AGENT}")
        names = [(a.namespace, a.name) for a in self.accounts]
        if len(set(names)) != len(names):
            raise ValueError("account names must be unique within an agent")
        return self


def tls_key(transport: str, tls: AgentTls | None) -> tuple:
    """The TLS part of a worker key: empty unless a tls account has TLS settings (so other keys are as before)."""
    return (("tls",) + tls.worker_key(),) if transport == "tls" and tls is not None else ()


def workers_needed(accounts: list[AgentAccount]) -> int:
    """pjsua2 worker processes an agent needs for ``accounts``: per worker key, one per MAX_ACCOUNTS_PER_WORKER."""
    counts: dict[tuple, int] = {}
    for a in accounts:
        counts[a.worker_key()] = counts.get(a.worker_key(), 0) + 1
    return sum(-(-n // MAX_ACCOUNTS_PER_WORKER) for n in counts.values())


def is_sip_uri(value: str) -> bool:
    return bool(_SIP_URI_RE.match(value))
