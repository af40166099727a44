"""The API's ground floor: group, version and kind, the pjsua2 limits every layer sizes by, the URI patterns
(Python's and the apiserver's RE2), and ``ApiModel``, the base of every model (camelCase on the wire, frozen, no
unknown fields)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
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




def is_sip_uri(value: str) -> bool:
    return bool(_SIP_URI_RE.match(value))
