"""The supervisor <-> worker protocol: typed messages, one JSON object per line over a pipe.

Promise: :func:`encode` and :func:`decode` are inverse for every message type below; a line of another protocol
version or of an unknown type raises :class:`ProtocolError` (never a half-built message). Passwords and TLS keys travel only
inside :class:`Apply` (``WireAccount.password``, ``WireAccount.tls``), are never part of a ``repr`` and must never be logged: log
:func:`describe` of a message, never the line.

Supervisor -> worker: :class:`Init` (first, once), :class:`Apply`, :class:`Request`, :class:`Stop`, :class:`Go`.
Worker -> supervisor: :class:`Hello` (endpoint started), :class:`Heartbeat`, :class:`Status`, :class:`Reply`,
:class:`Rejected` (the last message of a worker that ends itself with :data:`REJECTED_EXIT_CODE`), :class:`Want` and
:class:`Answered` (REGISTER pacing: supervisor/pacing.py), :class:`PathFailed` (failover: supervisor/failover.py).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Union

VERSION = 1
#: The exit code of a worker that ended itself after a :class:`Rejected` (before pjsua could process the answer).
REJECTED_EXIT_CODE = 75


class ProtocolError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class WireAccount:
    """One account as a worker needs it: the AgentAccount (API JSON) and its resolved credentials."""

    spec: dict
    username: str
    password: str = dataclasses.field(repr=False)
    realm: str = "*"
    expires_override: int | None = None
    #: TLS material (``TlsMaterial.to_wire``: CA, client certificate and its private key): secret like the password
    tls: dict | None = dataclasses.field(default=None, repr=False)


@dataclasses.dataclass(frozen=True)
class Init:
    worker: int
    agent: str
    pod: str | None
    settings: dict
    self_heal: bool = False
    pjsip_log_level: int = 2
    #: the worker key (transport, route, routeMode) every account of this worker shares
    transport: str = "udp"
    route: list[str] = dataclasses.field(default_factory=list)
    route_mode: str = "account"
    #: a restarted worker binds its predecessor's port if it can: the same Contact, so REGISTERs refresh (and the
    #: final un-REGISTER removes) the binding the dead process left at the registrar
    sip_port: int = 0
    #: send an :class:`Answer` before pjsua processes each 2xx to REGISTER (a worker after a crash of its predecessor)
    breadcrumbs: bool = False
    #: the accounts bring TLS material (transport tls with a policy): the TLS transport is made from it at the
    #: first apply, none without it
    tls_from_accounts: bool = False


@dataclasses.dataclass(frozen=True)
class Apply:
    id: int
    accounts: list[WireAccount]


@dataclasses.dataclass(frozen=True)
class Request:
    """``op``: repair, reregister, refresh, ip-change, drift (debug hook) or snapshot; ``account`` None means all of the worker's."""

    id: int
    op: str
    account: str | None = None


@dataclasses.dataclass(frozen=True)
class Stop:
    exit_code: int = 0


@dataclasses.dataclass(frozen=True)
class Hello:
    worker: int
    pid: int
    sip_port: int
    version: str


@dataclasses.dataclass(frozen=True)
class Heartbeat:
    seq: int
    #: prometheus families of the worker's registry: [name, type, documentation, [[sample, labels, value], ...]]
    metrics: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Status:
    namespace: str | None
    name: str
    doc: dict


@dataclasses.dataclass(frozen=True)
class Reply:
    id: int
    ok: bool
    result: Any = None
    error: str | None = None


@dataclasses.dataclass(frozen=True)
class Rejected:
    """A registrar's answer to ``name``'s REGISTER that pjsua would mishandle fatally: the worker ends itself right
    after this message. ``reason``: a :mod:`sipfleet.api.reasons` constant; ``message``: for status and events."""

    namespace: str | None
    name: str | None
    reason: str
    message: str
    count: int = 0
    limit: int = 0


@dataclasses.dataclass(frozen=True)
class Answer:
    """Breadcrumb (only with ``Init.breadcrumbs``): pjsua is about to process a 2xx to this account's REGISTER; sent
    when the account differs from the previous breadcrumb's. Names the suspect when the worker dies right after."""

    namespace: str | None
    name: str


@dataclasses.dataclass(frozen=True)
class Want:
    """A paced account (``register_rate``) has a REGISTER of the agent's own to send: it waits for a :class:`Go`.
    ``requests``: the REGISTER requests the attempt is expected to take (its budget charge)."""

    namespace: str | None
    name: str
    requests: int = 1


@dataclasses.dataclass(frozen=True)
class Go:
    """The supervisor's answer to a :class:`Want`: send that REGISTER now."""

    namespace: str | None
    name: str


@dataclasses.dataclass(frozen=True)
class Answered:
    """A paced account's REGISTER ended: ``code`` its final answer (0: none, pjsip's own timeout is 408), or None
    when a :class:`Go` found nothing to send; ``retry_after`` the answer's Retry-After seconds; ``requests`` the
    REGISTER requests it took (2 when the registrar challenged)."""

    namespace: str | None
    name: str
    code: int | None
    retry_after: int | None = None
    requests: int = 1


@dataclasses.dataclass(frozen=True)
class PathFailed:
    """The first hop of the worker's route failed for this account (failover, supervisor/failover.py): ``cause`` a
    :data:`sipfleet.api.reasons.PATH_FAILURE_REASONS` constant, ``route`` the route the worker sends through,
    ``detail`` what pjsip said (for status and events)."""

    namespace: str | None
    name: str
    route: list[str]
    cause: str
    detail: str = ""


Message = Union[Init, Apply, Request, Stop, Hello, Heartbeat, Status, Reply, Rejected, Answer, Want, Go, Answered,
                PathFailed]
TYPES: dict[str, type] = {
    "init": Init, "apply": Apply, "request": Request, "stop": Stop,
    "hello": Hello, "heartbeat": Heartbeat, "status": Status, "reply": Reply, "rejected": Rejected, "answer": Answer,
    "want": Want, "go": Go, "answered": Answered, "path-failed": PathFailed,
}
NAMES = {cls: name for name, cls in TYPES.items()}


def encode(msg: Message) -> str:
    """One line (with its newline) for ``msg``."""
    try:
        name = NAMES[type(msg)]
    except KeyError:
        raise ProtocolError(f"not a protocol message: {type(msg).__name__}") from None
    body = dataclasses.asdict(msg)
    return json.dumps({"v": VERSION, "type": name, **body}, separators=(",", ":")) + "\n"


def decode(line: str | bytes) -> Message:
    try:
        doc = json.loads(line)
    except ValueError as e:
        raise ProtocolError(f"not JSON: {e.__class__.__name__}") from None
    if not isinstance(doc, dict):
        raise ProtocolError("a message is a JSON object")
    if doc.get("v") != VERSION:
        raise ProtocolError(f"protocol version {doc.get('v')!r}, this side speaks {VERSION}")
    cls = TYPES.get(doc.get("type"))  # type: ignore[arg-type]
    if cls is None:
        raise ProtocolError(f"unknown message type {doc.get('type')!r}")
    fields = {f.name for f in dataclasses.fields(cls)}
    body = {k: v for k, v in doc.items() if k not in ("v", "type")}
    unknown = set(body) - fields
    if unknown:
        raise ProtocolError(f"{doc['type']}: unknown fields {sorted(unknown)}")
    try:
        if cls is Apply:
            body["accounts"] = [WireAccount(**a) for a in body.get("accounts", [])]
        return cls(**body)
    except TypeError as e:
        raise ProtocolError(f"{doc['type']}: {e}") from None


def describe(msg: Message) -> str:
    """A log-safe one-line description (no credentials)."""
    if isinstance(msg, Apply):
        return f"apply#{msg.id}({', '.join(a.spec.get('name', '?') for a in msg.accounts)})"
    return repr(msg)[:200]
