"""What the scripted registrar S answers: one :class:`Answer` per step, a :class:`Script` of steps, and the text
form both the CLI and Python use. Pure (no I/O): parsing, validation, and the sequence of steps
(:class:`Sequencer`).

Text form of one answer: ``CODE|silence [key=value ...]`` (shell-like quoting), for example::

    200 expires=60 sr=2              200 granting 60 s, echoing the Contact, with 2 Service-Route headers
    200 sr=10 sr-style=one           10 Service-Route URIs in one header
    200 auth=401                     401 challenge; credentials that verify get the 200
    403 auth=401                     "wrong password": even the right credentials get 403
    423 min-expires=600              503 retry-after=30              480    500    404    600    603
    302 contact=R                    (Contact: R's registrar URI); contact=self: a redirect loop
    silence                          no answer at all;   200 delay=5000: the 200 after 5 s
    200 big-header=8192  200 big-header=4100 big-header-at=start  200 pad=4000  200 bad-contact  200 expires=0  200 expires=1   (issue 13's hostile ones)

Keys: ``expires`` (200: granted expiry, header and Contact ``;expires=``; default: the request's, at most
3600), ``contact`` (200: ``echo`` | ``none`` | ``raw:<text>``; 3xx: ``P|R|E|S|self`` or a URI), ``bad-contact``,
``sr`` (that many Service-Route URIs, E's address with ``;srn=<i>``), ``sr-uri`` (one given URI, repeatable),
``sr-style`` (``headers`` one header per URI | ``one``), ``retry-after``, ``min-expires``, ``auth`` (401|407),
``bad-digest`` (what wrong credentials get under ``auth``: ``challenge`` | ``403``), ``delay`` (ms),
``big-header`` (one ``X-Siplab-Big`` header of that many bytes), ``big-header-at`` (``end``: after the scripted
headers | ``start``: before Contact, Expires and Service-Route, so a cut at a receive buffer loses them), ``pad`` (the whole response at least that
many bytes), ``header`` (one raw ``Name: value`` line, repeatable), ``reason``, ``count`` (how many requests the
step answers; the last step answers every request after it).

A step with ``auth`` is used up only by the requests it gives its answer to (right credentials); challenges
and wrong credentials leave it in place. ``Script.scope``: ``global`` (one position for all requests) or
``aor`` (a position per To URI, so every account sees the whole sequence).
"""

from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

REASONS = {
    200: "OK", 202: "Accepted", 301: "Moved Permanently", 302: "Moved Temporarily", 305: "Use Proxy",
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    407: "Proxy Authentication Required", 408: "Request Timeout", 423: "Interval Too Brief",
    480: "Temporarily Unavailable", 486: "Busy Here", 500: "Server Internal Error", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out", 600: "Busy Everywhere", 603: "Decline",
    604: "Does Not Exist Anywhere", 606: "Not Acceptable",
}
TARGETS = ("P", "R", "E", "S", "self")
BAD_CONTACT = "raw:<sip:siplab-bad-contact@{S};expires=300"  # no closing '>': a syntax error
MAX_SIZE = 60000  # keeps every answer inside one UDP datagram


class AnswerError(ValueError):
    """An answer or script the registrar cannot give (the message says why)."""


@dataclass(frozen=True)
class Answer:
    code: int | None  # None: silence (no answer)
    reason: str = ""
    expires: int | None = None
    contact: str = "echo"
    sr_count: int = 0
    service_routes: tuple[str, ...] = ()
    sr_style: str = "headers"
    retry_after: int | None = None
    min_expires: int | None = None
    auth: int | None = None
    bad_digest: str = "challenge"
    delay_ms: int = 0
    big_header: int = 0
    big_header_at: str = "end"
    pad: int = 0
    headers: tuple[str, ...] = ()
    count: int = 1

    def __post_init__(self) -> None:
        check(self)

    @property
    def reason_text(self) -> str:
        return self.reason or REASONS.get(self.code or 0, "Scripted")

    def to_dict(self) -> dict[str, Any]:
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        out = {k: v for k, v in dataclasses.asdict(self).items() if k == "code" or v != defaults[k]}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    def to_text(self) -> str:
        words = ["silence" if self.code is None else str(self.code)]
        for k, v in self.to_dict().items():
            if k == "code":
                continue
            key = _TEXT_KEYS.get(k, k.replace("_", "-"))
            for item in v if isinstance(v, list) else [v]:
                words.append(shlex.quote(f"{key}={item}"))
        return " ".join(words)


_TEXT_KEYS = {"sr_count": "sr", "service_routes": "sr-uri", "delay_ms": "delay", "headers": "header"}


def check(a: Answer) -> None:
    """Raise AnswerError unless the answer makes sense (ranges, key combinations)."""
    if a.code is not None and not (isinstance(a.code, int) and 100 <= a.code <= 699):
        raise AnswerError(f"status code must be 100..699 or silence, not {a.code!r}")
    for name in ("expires", "retry_after", "min_expires"):
        v = getattr(a, name)
        if v is not None and not 0 <= v <= 2**31 - 1:
            raise AnswerError(f"{name} out of range: {v}")
    if a.auth not in (None, 401, 407):
        raise AnswerError("auth must be 401 or 407")
    if a.auth is not None and a.code is None:
        raise AnswerError("auth needs an answer for the right credentials, not silence")
    if a.bad_digest not in ("challenge", "403"):
        raise AnswerError("bad-digest must be challenge or 403")
    if a.sr_style not in ("headers", "one"):
        raise AnswerError("sr-style must be headers or one")
    if not 0 <= a.sr_count <= 64:
        raise AnswerError("sr must be 0..64")
    if not 0 <= a.delay_ms <= 600_000:
        raise AnswerError("delay must be 0..600000 ms")
    if a.big_header_at not in ("start", "end"):
        raise AnswerError("big-header-at must be start or end")
    if not 0 <= a.big_header <= MAX_SIZE or not 0 <= a.pad <= MAX_SIZE:
        raise AnswerError(f"big-header and pad must be 0..{MAX_SIZE} bytes")
    if a.count < 1:
        raise AnswerError("count must be at least 1")
    c = a.contact
    if a.code is not None and 300 <= a.code < 400:
        if c == "echo" or not (c in TARGETS or c.startswith(("sip:", "sips:"))):
            raise AnswerError(f"a {a.code} needs contact=P|R|E|S|self or a sip: URI")
    elif not (c in ("echo", "none") or c.startswith("raw:")):
        raise AnswerError("contact must be echo, none or raw:<text> (targets only for 3xx)")
    for text in (a.reason, *a.headers, *a.service_routes, c):
        if "\r" in text or "\n" in text:
            raise AnswerError("no CR/LF inside an answer's texts")
    for h in a.headers:
        if ":" not in h or not h.split(":", 1)[0].strip():
            raise AnswerError(f"header must be 'Name: value', not {h!r}")


_INT_KEYS = {"expires": "expires", "retry-after": "retry_after", "min-expires": "min_expires", "sr": "sr_count",
             "auth": "auth", "delay": "delay_ms", "big-header": "big_header", "pad": "pad", "count": "count"}
_STR_KEYS = {"contact": "contact", "sr-style": "sr_style", "big-header-at": "big_header_at", "bad-digest": "bad_digest",
             "reason": "reason"}
_LIST_KEYS = {"sr-uri": "service_routes", "header": "headers"}


def parse_answer(text: str) -> Answer:
    """One answer from its text form (see the module docstring)."""
    try:
        words = shlex.split(text)
    except ValueError as e:
        raise AnswerError(f"bad answer {text!r}: {e}") from None
    if not words:
        raise AnswerError("empty answer")
    head = words[0].lower()
    if head == "silence":
        code = None
    elif head.isdigit():
        code = int(head)
    else:
        raise AnswerError(f"an answer starts with a status code or 'silence', not {words[0]!r}")
    kw: dict[str, Any] = {}
    lists: dict[str, list[str]] = {}
    for w in words[1:]:
        key, eq, val = w.partition("=")
        key = key.lower()
        if key == "bad-contact" and not eq:
            kw["contact"] = BAD_CONTACT
        elif not eq:
            raise AnswerError(f"{w!r} in {text!r}: want key=value")
        elif key in _INT_KEYS:
            try:
                kw[_INT_KEYS[key]] = int(val)
            except ValueError:
                raise AnswerError(f"{key} wants a whole number, not {val!r}") from None
        elif key in _STR_KEYS:
            kw[_STR_KEYS[key]] = val
        elif key in _LIST_KEYS:
            lists.setdefault(_LIST_KEYS[key], []).append(val)
        else:
            raise AnswerError(f"unknown key {key!r} in {text!r}")
    kw.update({k: tuple(v) for k, v in lists.items()})
    return Answer(code, **kw)


def answer_from(value: Answer | str | int | Mapping[str, Any] | None) -> Answer:
    """An Answer from its text form, a bare code, a dict (:meth:`Answer.to_dict`) or an Answer."""
    if isinstance(value, Answer):
        return value
    if value is None:
        return Answer(None)
    if isinstance(value, int):
        return Answer(value)
    if isinstance(value, str):
        return parse_answer(value)
    if isinstance(value, Mapping):
        known = {f.name for f in dataclasses.fields(Answer)}
        extra = set(value) - known
        if extra or "code" not in value:
            raise AnswerError(f"bad answer dict keys: {sorted(extra) or 'no code'}")
        return Answer(**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
    raise AnswerError(f"not an answer: {value!r}")


@dataclass(frozen=True)
class Script:
    """The registrar's answers to REGISTER, in order; ``options`` answers OPTIONS (never a step)."""

    steps: tuple[Answer, ...] = (Answer(200),)
    scope: str = "global"
    options: Answer = Answer(200)

    def __post_init__(self) -> None:
        if not self.steps:
            raise AnswerError("a script needs at least one answer")
        if self.scope not in ("global", "aor"):
            raise AnswerError("scope must be global or aor")

    def to_dict(self) -> dict[str, Any]:
        return {"steps": [a.to_dict() for a in self.steps], "scope": self.scope, "options": self.options.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Script":
        return cls(tuple(answer_from(a) for a in data.get("steps") or [200]), data.get("scope", "global"),
                   answer_from(data.get("options", 200)))


def make_script(answers: Iterable[Answer | str | int | Mapping[str, Any]], *, scope: str = "global",
                options: Answer | str | int = 200) -> Script:
    return Script(tuple(answer_from(a) for a in answers), scope, answer_from(options))


@dataclass
class Position:
    step: int = 0
    used: int = 0  # requests the current step has answered


@dataclass
class Sequencer:
    """Where a script stands (per scope key). Not thread-safe; the registrar runs on one event loop."""

    script: Script
    positions: dict[str, Position] = field(default_factory=dict)

    def key(self, aor: str) -> str:
        return aor if self.script.scope == "aor" else ""

    def current(self, aor: str) -> tuple[int, Answer]:
        pos = self.positions.setdefault(self.key(aor), Position())
        return pos.step, self.script.steps[pos.step]

    def consume(self, aor: str) -> None:
        """The current step gave its answer once more; move on when its ``count`` is reached (the last step
        stays)."""
        pos = self.positions.setdefault(self.key(aor), Position())
        pos.used += 1
        if pos.used >= self.script.steps[pos.step].count and pos.step < len(self.script.steps) - 1:
            pos.step, pos.used = pos.step + 1, 0

    def snapshot(self) -> dict[str, dict[str, int]]:
        return {k or "*": {"step": p.step, "used": p.used} for k, p in self.positions.items()}


def decide(step: Answer, credentials: str) -> tuple[str, bool]:
    """What to send for one REGISTER at ``step`` given its credentials (``none`` | ``right`` | ``wrong``):
    (``answer`` | ``challenge`` | ``forbidden``, whether the step is used up by it). Pure."""
    if step.auth is None:
        return "answer", True
    if credentials == "right":
        return "answer", True
    if credentials == "wrong" and step.bad_digest == "403":
        return "forbidden", False
    return "challenge", False
