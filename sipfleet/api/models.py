"""The sipfleet API: one source of truth for the SipAccount resource and the agent contract.

Everything users write (``SipAccountSpec``), everything agents and the operator report
(``SipAccountStatus``), and what the operator hands an agent (``AgentAssignment``) is defined in the modules
this one gathers, and every caller imports it from here: ``base`` (limits, URI patterns, ``ApiModel``) <- ``spec``
<- ``status``, ``assignment``.
``sipfleet.api.crd`` generates ``crds/sipaccounts.sipfleet.io.yaml`` from these models, and a test fails
when the committed CRD and the models disagree.

Conventions (Kubernetes API style): camelCase on the wire, snake_case in Python, frozen models,
unknown fields rejected. Secrets never appear in any of these models: specs name a Secret, agents
resolve it at run time and keep the password in memory only.
"""

from __future__ import annotations

from .base import (GROUP, VERSION, KIND, PLURAL, API_VERSION, MAX_ACCOUNTS_PER_WORKER, MAX_CALLS_PER_WORKER,
    MAX_WORKERS_PER_AGENT, MAX_ACCOUNTS_PER_AGENT, MAX_CALLS_PER_AGENT, SIP_URI_PATTERN, AOR_PATTERN, REALM_PATTERN,
    LOOSE_ROUTE_PATTERN, DNS_LABEL_PATTERN, SECRET_KEY_PATTERN, DNS_SUBDOMAIN_PATTERN, ApiModel, SipUri, Transport,
    RouteMode, is_sip_uri)
from .spec import (CredentialsRef, RegistrationSettings, IncomingCallPolicy, DriftSettings, AgentPlacement,
    TlsMinVersion, TlsCaRef, TlsClientCertificateRef, TlsSettings, FailoverSettings, SipIdentity, SipAccountSpec)
from .status import (ConditionType, Condition, RegistrationState, RegistrationStatus, SentRequest, RepairMethod,
    RepairTrigger, RepairRecord, ActiveRoute, RouteStatus, AgentRef, LadderStatus, TlsStatus, SipAccountStatus)
from .assignment import (AgentCredentials, AgentTls, AgentAccount, AgentSettings, AgentAssignment, tls_key,
    workers_needed)

__all__ = [
    "GROUP", "VERSION", "KIND", "PLURAL", "API_VERSION", "MAX_ACCOUNTS_PER_WORKER", "MAX_CALLS_PER_WORKER",
    "MAX_WORKERS_PER_AGENT", "MAX_ACCOUNTS_PER_AGENT", "MAX_CALLS_PER_AGENT", "SIP_URI_PATTERN", "AOR_PATTERN",
    "REALM_PATTERN", "LOOSE_ROUTE_PATTERN", "DNS_LABEL_PATTERN", "SECRET_KEY_PATTERN", "DNS_SUBDOMAIN_PATTERN",
    "ApiModel", "SipUri", "Transport", "RouteMode", "is_sip_uri", "CredentialsRef", "RegistrationSettings",
    "IncomingCallPolicy", "DriftSettings", "AgentPlacement", "TlsMinVersion", "TlsCaRef", "TlsClientCertificateRef",
    "TlsSettings", "FailoverSettings", "SipIdentity", "SipAccountSpec", "ConditionType", "Condition", "RegistrationState",
    "RegistrationStatus", "SentRequest", "RepairMethod", "RepairTrigger", "RepairRecord", "ActiveRoute", "RouteStatus", "AgentRef",
    "LadderStatus", "TlsStatus", "SipAccountStatus", "AgentCredentials", "AgentTls", "AgentAccount", "AgentSettings",
    "AgentAssignment", "tls_key", "workers_needed",
]
