"""The agent contract: what the operator hands an agent (``AgentAssignment``, the ConfigMap key ``assignment.json``) or
a person writes for a standalone agent, and how accounts share pjsua2 worker processes (``workers_needed``)."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from .base import MAX_ACCOUNTS_PER_WORKER, MAX_WORKERS_PER_AGENT, MAX_ACCOUNTS_PER_AGENT, ApiModel
from .spec import TlsMinVersion, TlsSettings, SipIdentity


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
    register_rate: float | None = Field(
        None, gt=0, le=1e6,
        description=("This account's share of the operator's REGISTER budget for its registrar, in REGISTERs per "
                     "second; the agent paces the REGISTERs it starts itself by the sum over its accounts of a "
                     "registrar. None: not paced."))

    def worker_key(self) -> tuple:
        """Accounts can share a pjsua2 worker process only when this key is equal: prevent mode's global outbound
        proxy and the transports (with their TLS settings) are per process. (transport, route, routeMode), plus the
        TLS settings' key for a tls account that has them, plus the fallback routes and failover settings of an
        account that has fallback routes: such accounts fail over together (they share the first hop that fails)."""
        return (self.transport, tuple(self.route), self.route_mode) + tls_key(self.transport, self.tls) + \
            failover_key(self)


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
    dead_flow_seconds: int = Field(
        30, ge=0, le=3600,
        description=("TCP/TLS: a connection to the first hop that acknowledges nothing for this long (kernel "
                     "keep-alive probes after a third of it, TCP_USER_TIMEOUT) is closed, and its accounts "
                     "re-register at once; 0: the kernel's defaults (a dead path is noticed at the next refresh)."))
    udp_dead_flow_seconds: int = Field(
        0, ge=0, le=3600,
        description=("UDP: each worker with a registered UDP account sends an OPTIONS through their route every "
                     "third of this; no answer for this long re-registers its UDP accounts at once. 0: off."))
    registrar_probe_seconds: float = Field(
        5.0, gt=0, le=600,
        description=("Paced accounts (register_rate): while their registrar does not answer, the agent sends one "
                     "REGISTER (a probe) every this many seconds and holds the others until one is answered."))


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


def failover_key(a: "AgentAccount") -> tuple:
    """The failover part of a worker key: empty without fallback routes (so other keys are as before)."""
    if not a.fallback_routes:
        return ()
    return (("fallbacks", tuple(tuple(r) for r in a.fallback_routes), a.failover.probe_interval_seconds,
             a.failover.return_after_probes),)


def workers_needed(accounts: list[AgentAccount]) -> int:
    """pjsua2 worker processes an agent needs for ``accounts``: per worker key, one per MAX_ACCOUNTS_PER_WORKER."""
    counts: dict[tuple, int] = {}
    for a in accounts:
        counts[a.worker_key()] = counts.get(a.worker_key(), 0) + 1
    return sum(-(-n // MAX_ACCOUNTS_PER_WORKER) for n in counts.values())
