"""Status documents of one account, the debounced emitter and JSON merge patches.

The agent owns ``status.registration``, ``status.route``, ``status.agent`` and ``status.tls`` of each SipAccount
(docs/architecture.md). It reports a document only when something other than the measurement time
(``route.observedAt``) changed, after ``statusDebounceMs`` of coalescing; a new account's first report waits a
moment for its REGISTER's answer (``FIRST_REPORT_HOLD_S``).
"""

from __future__ import annotations

import datetime as _dt
import time
import typing
from typing import Any, Callable, Protocol

from pydantic import BaseModel

from sipfleet.api.models import AgentRef, RegistrationStatus, RepairRecord, RouteStatus, TlsStatus


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AccountStatus:
    """The three agent-owned status fields of one account (pydantic models, replaced on every change)."""

    def __init__(self, mode: str, desired: list[str], agent: AgentRef):
        self.registration = RegistrationStatus(state="Registering")
        self.route = RouteStatus(mode=mode, desired=desired)  # type: ignore[arg-type]
        self.agent = agent
        #: route.observedAt changes with every REGISTER: kept apart so that a REGISTER that changes
        #: nothing else costs no model copy (it is merged into the document when one is made).
        self.observed_at: str | None = None
        self.tls: TlsStatus | None = None  # transport tls: what the worker's TLS layer reported last

    def set_registration(self, **kw: Any) -> None:
        self.registration = self.registration.model_copy(update=kw)

    def set_route(self, **kw: Any) -> None:
        self.route = self.route.model_copy(update=kw)

    def set_agent(self, **kw: Any) -> None:
        self.agent = self.agent.model_copy(update=kw)

    def add_repair(self, record: RepairRecord) -> None:
        history = [r for r in self.route.repair_history if not _same_repair(r, record)]
        history.append(record)
        self.set_route(last_repair=record, repair_history=history[-10:])

    def document(self) -> dict:
        route = self.route.to_api()
        if self.observed_at:
            route["observedAt"] = self.observed_at
        doc = {
            "registration": self.registration.to_api(),
            "route": route,
            "agent": self.agent.to_api(),
        }
        if self.tls is not None:
            doc["tls"] = self.tls.to_api()
        return doc


def _same_repair(a: RepairRecord, b: RepairRecord) -> bool:
    return a.started_at == b.started_at and a.trigger == b.trigger


def self_heals_between(old: dict | None, new: dict) -> int:
    """How many self-heal repairs ``new`` reports that ``old`` (the account's previous document) did not: the
    difference of ``route.selfHealCount``; a smaller count means a new worker started counting afresh."""
    before = int(((old or {}).get("route") or {}).get("selfHealCount") or 0)
    after = int((new.get("route") or {}).get("selfHealCount") or 0)
    return after - before if after >= before else after


def change_key(doc: dict) -> dict:
    """A document without the fields that change on every measurement (``route.observedAt``)."""
    route = dict(doc.get("route") or {})
    route.pop("observedAt", None)
    return {**doc, "route": route}


class Sink(Protocol):
    def emit(self, account: Any, doc: dict) -> None: ...


#: a new account's first report ("Registering", nothing answered yet) waits this long for the REGISTER's answer,
#: so that a registrar that answers at once costs one status write (the answer), not two
FIRST_REPORT_HOLD_S = 1.0


def unanswered(doc: dict) -> bool:
    """The document of an account whose REGISTER has not been answered yet (Registering, no response code)."""
    reg = doc.get("registration") or {}
    return reg.get("state") == "Registering" and reg.get("code") is None


class Debouncer:
    """Emits each account's document at most once per ``debounce_s`` and only when it changed: the changes within
    that window become one document, the last state (the counters and the repair history in it carry the
    transitions between). An account's very first document, while its REGISTER is unanswered, waits up to
    ``first_hold_s`` for the answer (then it goes out as it is: nothing is held back for longer).

    Not thread-safe: used from the agent's event thread only.
    """

    def __init__(self, debounce_s: float, sink: Callable[[Any, dict], None], clock: Callable[[], float] = time.monotonic,
                 first_hold_s: float = 0.0):
        self.debounce_s = debounce_s
        self.first_hold_s = first_hold_s
        self.sink = sink
        self.clock = clock
        self._due: dict[Any, float] = {}
        self._last: dict[Any, dict] = {}
        self._docs: dict[Any, Callable[[], dict]] = {}
        self._first: dict[Any, float] = {}  # key -> when it was first marked, until its first emission

    def mark(self, key: Any, doc: Callable[[], dict]) -> None:
        self._docs[key] = doc
        now = self.clock()
        self._due.setdefault(key, now + self.debounce_s)
        if key not in self._last:
            self._first.setdefault(key, now)

    def forget(self, key: Any) -> None:
        self._due.pop(key, None)
        self._last.pop(key, None)
        self._docs.pop(key, None)
        self._first.pop(key, None)

    def flush(self, force: bool = False) -> None:
        now = self.clock()
        for key, due in list(self._due.items()):
            if not force and due > now:
                continue
            doc = self._docs[key]()
            hold_until = self._first.get(key, now) + self.first_hold_s
            if not force and key not in self._last and now < hold_until and unanswered(doc):
                self._due[key] = min(hold_until, now + self.debounce_s)  # look again soon
                continue
            del self._due[key]
            self._first.pop(key, None)
            ck = change_key(doc)
            if self._last.get(key) == ck:
                continue
            self._last[key] = ck
            self.sink(key, doc)

    def next_due(self) -> float | None:
        return min(self._due.values()) if self._due else None


def merge_patch(old: Any, new: Any) -> Any:
    """The RFC 7386 merge patch that turns ``old`` into ``new`` (``None`` when they are equal).

    Objects are diffed key by key (removed keys become ``null``); anything else, lists included, is
    replaced whole.
    """
    if isinstance(old, dict) and isinstance(new, dict):
        patch: dict = {}
        for k in old:
            if k not in new:
                patch[k] = None
        for k, v in new.items():
            if k not in old:
                patch[k] = v
            else:
                sub = merge_patch(old[k], v)
                if sub is not None or (v is None and old[k] is not None):
                    patch[k] = sub
        return patch or None
    if old == new:
        return None
    return new


#: the agent-owned status fields and their models
OWNED_MODELS: dict[str, type[BaseModel]] = {"registration": RegistrationStatus, "route": RouteStatus, "agent": AgentRef,
                                            "tls": TlsStatus}


def replace_patch(doc: dict) -> dict:
    """The merge patch that makes the agent-owned fields of the server's status exactly ``doc``'s, whatever the
    server holds now (so the first write of an account needs no read): every field of the model that ``doc``
    leaves out is null, nested models likewise; lists are replaced whole anyway."""
    return {k: _replacing(OWNED_MODELS[k], doc[k]) for k in OWNED_MODELS if k in doc}


def _replacing(model: type[BaseModel] | None, value: Any) -> Any:
    if model is None or not isinstance(value, dict):
        return value
    out: dict = {}
    for name, f in model.model_fields.items():
        alias = f.alias or name
        out[alias] = _replacing(_model_in(f.annotation), value[alias]) if alias in value else None
    return {**value, **out}


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model of a field annotated ``Model`` or ``Model | None`` (None for anything else, lists included)."""
    for t in (annotation, *typing.get_args(annotation)):
        if isinstance(t, type) and issubclass(t, BaseModel):
            return t
    return None


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 apply (for tests and for keeping a local copy of what the server holds)."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = apply_merge_patch(result.get(k), v)
    return result
