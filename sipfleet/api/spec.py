"""``SipAccountSpec``: everything a user writes, with the defaults an SRE would pick and the admission rules
(CEL) the CRD is generated with (``sipfleet.api.crd``). Secrets are named here, never held."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from .base import (AOR_PATTERN, REALM_PATTERN, LOOSE_ROUTE_PATTERN, SECRET_KEY_PATTERN, DNS_SUBDOMAIN_PATTERN,
    ApiModel, SipUri, Transport, RouteMode)


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
    outbound: bool = Field(
        False,
        description=("RFC 5626 outbound: REGISTER with Supported: outbound and a Contact with reg-id and a stable "
                     "+sip.instance. A registrar that offers outbound answers with a Flow-Timer: the agent keeps the "
                     "flow alive at that interval (a CRLF CRLF ping) and watches it (UDP: OPTIONS probes; TCP/TLS: "
                     "the pings must be acknowledged within deadFlowSeconds), so a dead flow re-registers at once. "
                     "Off by default: it changes the Contact, and some registrars mishandle it."),
    )


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


Route = Annotated[list[SipUri], Field(min_length=1, max_length=4)]


def _checked_route(route: list[str], where: str) -> list[str]:
    if len(set(route)) != len(route):
        raise ValueError(f"{where} entries must be unique")
    for r in route:
        if not re.search(LOOSE_ROUTE_PATTERN, r):
            raise ValueError(f"{where} entry {r!r} is not a loose-routing URI (with ;lr): strict routing is not supported")
    return route


class FailoverSettings(ApiModel):
    """How an account with fallbackRoutes leaves its primary route and comes back (docs/registration-policy.md,
    "Failover and return"). The agent fails over when the active route's first hop fails: a REGISTER with no answer
    from it (timeout, transport error) or its dead-flow probes unanswered; it comes back when the primary answers
    OPTIONS returnAfterProbes times in a row."""

    probe_interval_seconds: int = Field(
        10, ge=1, le=3600,
        description=("While on a fallback route: an OPTIONS through the primary route (to its first hop) every this "
                     "many seconds; one unanswered within min(this, 4) seconds starts the count again."))
    return_after_probes: int = Field(
        3, ge=1, le=100,
        description=("Answers in a row from the primary route's first hop before the account returns to it: the "
                     "hysteresis that keeps a flapping proxy from moving the account back and forth."))


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
    fallback_routes: list[Route] = Field(
        default_factory=list,
        max_length=3,
        description=("Ordered alternative routes (each like route: ;lr URIs, the first entry the first hop). When the "
                     "active route's first hop fails the account registers through the next one; while it is not on "
                     "the primary (route) the primary is probed with OPTIONS and the account returns to it "
                     "(failover). status.route.active says which route is active and why."),
        json_schema_extra={"x-kubernetes-list-type": "atomic"},
    )
    failover: FailoverSettings = Field(default_factory=FailoverSettings)
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
        return _checked_route(route, "route")

    @model_validator(mode="after")
    def _fallbacks(self) -> "SipIdentity":
        if self.fallback_routes and not self.route:
            raise ValueError("fallbackRoutes need a primary route")
        seen = [tuple(self.route)]
        for i, fr in enumerate(self.fallback_routes):
            if tuple(fr) in seen:
                raise ValueError(f"fallbackRoutes[{i}] repeats the route or an earlier fallback route")
            seen.append(tuple(fr))
            _checked_route(fr, f"fallbackRoutes[{i}]")
        return self


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
                    "rule": "self.transport != 'tls' || !has(self.fallbackRoutes) || self.fallbackRoutes.all(fr, "
                    "fr.all(r, r.startsWith('sips:') || r.contains(';transport=tls')))",
                    "message": "transport tls needs sips: or ;transport=tls fallback routes",
                    "fieldPath": ".fallbackRoutes",
                },
                {
                    "rule": "self.transport == 'tls' || !has(self.fallbackRoutes) || "
                    "self.fallbackRoutes.all(fr, fr.all(r, !r.startsWith('sips:')))",
                    "message": "sips: URIs need transport tls",
                    "fieldPath": ".fallbackRoutes",
                },
                {
                    "rule": "!has(self.fallbackRoutes) || self.fallbackRoutes.size() == 0 || "
                    "(has(self.route) && self.route.size() > 0)",
                    "message": "fallbackRoutes need a primary route",
                    "fieldPath": ".fallbackRoutes",
                },
                {
                    "rule": "!has(self.fallbackRoutes) || !has(self.route) || !self.fallbackRoutes.exists(fr, fr == self.route)",
                    "message": "a fallback route must differ from route",
                    "fieldPath": ".fallbackRoutes",
                },
                {
                    "rule": f"!has(self.fallbackRoutes) || self.fallbackRoutes.all(fr, fr.all(r, r.matches('{LOOSE_ROUTE_PATTERN}')))",
                    "message": "every fallback route entry must be a loose-routing URI (with ;lr)",
                    "fieldPath": ".fallbackRoutes",
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
