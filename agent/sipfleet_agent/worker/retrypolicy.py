"""When the agent sends the next REGISTER after a failed one, and why. Pure: no pjsua2, time and randomness passed in.

pjsua's own retry timer is off (``retryIntervalSec = 0`` in :mod:`.accounts`): with it, pjsua ignores
Retry-After, retries a refused password forever and never grows its interval. This module is the policy instead
(the table in docs/registration-policy.md):

- 401/407 to a REGISTER that answered a fresh challenge, and 403: ``AuthFailed``, next try after
  ``authFailureRetrySeconds`` (+ jitter); never a loop.
- 500/503/480 with Retry-After: that many seconds (bounded by ``retryAfterMaxSeconds``; + jitter), never sooner.
- 404 and 6xx: ``PermanentFailure``, slow retries (``permanentFailureRetrySeconds`` + jitter).
- 3xx: follow the first Contact at once (``redirectPolicy: follow``, at most ``maxRedirects`` in a row, no
  target twice in one chain) or refuse (``RedirectRefused``, back-off).
- everything else (408, 5xx without Retry-After, other 4xx, local errors): exponential back-off with full jitter
  between ``retryIntervalSeconds`` and ``min(maxRetryIntervalSeconds, retryIntervalSeconds * multiplier^n)``.
- 423 with Min-Expires never gets here: pjsip re-sends it itself with the larger expiry (``sip_reg.c``).

:func:`decide` takes one :class:`Failure` and returns a :class:`Decision`; :func:`after_transport_loss` is the
first retry after a lost connection; :func:`parse_answer` reads Retry-After, Min-Expires and Contact from a
response's text.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import re
from typing import Any

from sipfleet.api import reasons
from sipfleet.api.models import SIP_URI_PATTERN

from ..siplog import addr_spec, message_headers, split_header_values

AUTH_CODES = (401, 403, 407)
RETRY_AFTER_CODES = (480, 500, 503)
PERMANENT_CODES = (404,)
#: the longest redirect target followed (spec.registrar's own bound)
MAX_REDIRECT_URI = 256


@dataclasses.dataclass(frozen=True)
class Failure:
    """One failed REGISTER as the agent saw it."""

    code: int  # final status (0: no answer / local error)
    attempt: int = 1  # consecutive failed attempts, this one included (>= 1)
    retry_after: int | None = None  # Retry-After seconds of the answer
    min_expires: int | None = None
    challenge_answered: bool = False  # the REGISTER this answers carried Authorization / Proxy-Authorization
    contacts: tuple[str, ...] = ()  # Contact URIs of a 3xx
    registrar: str = ""  # the Request-URI this REGISTER went to
    redirect_chain: tuple[str, ...] = ()  # registrars already tried in this redirect chain (the configured one first)


@dataclasses.dataclass(frozen=True)
class Decision:
    delay: float  # seconds from now until the next REGISTER
    at: float  # now + delay (the caller's clock: epoch seconds for status)
    next_reason: str  # reasons.*: why the next attempt waits that long
    failure_reason: str | None  # reasons.*: what failed (None: an ordinary failure)
    message: str  # for the log and the status reason
    redirect_to: str | None = None  # follow: the registrar URI of the next REGISTER

    def at_iso(self) -> str:
        return iso(self.at)


def iso(epoch: float) -> str:
    t = _dt.datetime.fromtimestamp(epoch, _dt.timezone.utc)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def backoff_delay(settings: Any, attempt: int, rand: float) -> float:
    """The wait after the ``attempt``-th consecutive failure (``rand`` in [0, 1))."""
    base = float(settings.retry_interval_seconds)
    cap = float(max(settings.max_retry_interval_seconds, base))
    n = max(1, attempt)
    mult = float(settings.backoff_multiplier)
    if settings.backoff_jitter == "none":
        return min(cap, base * mult ** (n - 1))
    top = min(cap, base * mult ** n)
    return base + rand * max(0.0, top - base)


def _jitter(settings: Any, rand: float) -> float:
    return rand * float(settings.jitter_seconds)


def decide(settings: Any, f: Failure, now: float, rand: float) -> Decision:
    """The next REGISTER after failure ``f`` (``settings``: the account's RegistrationSettings)."""
    code = f.code

    def out(delay: float, nxt: str, failure: str | None, msg: str, redirect: str | None = None) -> Decision:
        delay = max(0.0, delay)
        return Decision(delay, now + delay, nxt, failure, msg, redirect)

    if 300 <= code < 400:
        return _redirect(settings, f, now, rand, out)
    if code in AUTH_CODES:
        wait = settings.auth_failure_retry_seconds + _jitter(settings, rand)
        if code == 403:
            why = "the registrar forbids this registration (403)"
        elif f.challenge_answered:
            why = f"the registrar refused the credentials that answered its challenge ({code})"
        else:
            why = f"a challenge ({code}) the credentials cannot answer (realm?)"
        return out(wait, reasons.AUTH_FAILED, reasons.AUTH_FAILED,
                   f"{why}: next try in {wait:.0f} s (authFailureRetrySeconds)")
    if code in PERMANENT_CODES or 600 <= code < 700:
        wait = settings.permanent_failure_retry_seconds + _jitter(settings, rand)
        return out(wait, reasons.PERMANENT_FAILURE, reasons.PERMANENT_FAILURE,
                   f"{code} will not change by retrying soon: next try in {wait:.0f} s "
                   "(permanentFailureRetrySeconds)")
    if code in RETRY_AFTER_CODES and f.retry_after is not None and settings.retry_after_max_seconds > 0:
        bounded = min(f.retry_after, settings.retry_after_max_seconds)
        wait = bounded + _jitter(settings, rand)
        cut = "" if bounded == f.retry_after else f" (Retry-After {f.retry_after} s cut to retryAfterMaxSeconds)"
        return out(wait, reasons.RETRY_AFTER, None, f"{code} with Retry-After: next try in {wait:.1f} s{cut}")
    wait = backoff_delay(settings, f.attempt, rand)
    return out(wait, reasons.BACKOFF, None, f"failure {f.attempt} in a row ({code}): back-off {wait:.1f} s")


def _redirect(settings: Any, f: Failure, now: float, rand: float, out: Any) -> Decision:
    def refuse(why: str) -> Decision:
        wait = backoff_delay(settings, f.attempt, rand)
        return out(wait, reasons.BACKOFF, reasons.REDIRECT_REFUSED,
                   f"{f.code} redirect refused: {why}; back-off {wait:.1f} s at the configured registrar")

    if settings.redirect_policy == "refuse":
        return refuse("redirectPolicy is refuse")
    target = next((c for c in f.contacts if c.lower().startswith(("sip:", "sips:"))), None)
    if target is None:
        return refuse("no sip: or sips: Contact in the answer")
    if not re.match(SIP_URI_PATTERN, target) or len(target) > MAX_REDIRECT_URI:
        # the target becomes the registrar URI of a new client: only what spec.registrar itself would admit
        return refuse(f"the Contact {target[:80]!r} is not a SIP URI spec.registrar would accept")
    chain = tuple(f.redirect_chain) or ((f.registrar,) if f.registrar else ())
    if len(chain) - 1 >= settings.max_redirects:
        return refuse(f"more than maxRedirects ({settings.max_redirects}) in a row")
    if _norm(target) in {_norm(u) for u in chain} | {_norm(f.registrar)}:
        return refuse(f"a loop ({target} was already tried)")
    return out(0.0, reasons.REDIRECT, None, f"{f.code}: following the redirect to {target}", redirect=target)


def _norm(uri: str) -> str:
    return uri.strip().lower()


def after_transport_loss(settings: Any, now: float, rand: float, reason: str = reasons.TRANSPORT_LOST) -> Decision:
    """The first REGISTER after a lost TCP/TLS connection (or a dead UDP path, ``reason`` DeadFlow):
    firstRetryIntervalSeconds + jitter, never sooner."""
    wait = settings.first_retry_interval_seconds + _jitter(settings, rand)
    what = "UDP path dead" if reason == reasons.DEAD_FLOW else "transport lost"
    return Decision(wait, now + wait, reason, None,
                    f"{what}: re-registering in {wait:.1f} s (firstRetryIntervalSeconds)")


def keeps_current(current_at: float | None, current_reason: str | None, new: Decision) -> bool:
    """Whether a scheduled attempt stays when a transport loss asks for ``new``: a wait the registrar asked for
    (AuthFailed, Retry-After, permanent) is never shortened, and an earlier attempt is kept."""
    if current_at is None:
        return False
    return current_reason in (reasons.AUTH_FAILED, reasons.RETRY_AFTER, reasons.PERMANENT_FAILURE) \
        or current_at <= new.at


def parse_answer(whole_msg: str) -> tuple[int | None, int | None, tuple[str, ...]]:
    """(Retry-After seconds, Min-Expires, Contact URIs) of a SIP response's text (``prm.rdata.wholeMsg``)."""
    if not whole_msg:
        return None, None, ()
    hdrs = message_headers(whole_msg, {"retry-after", "min-expires", "contact"})
    contacts: list[str] = []
    for v in hdrs.get("contact", []):
        contacts.extend(addr_spec(x) for x in split_header_values(v))
    return _seconds(hdrs.get("retry-after")), _seconds(hdrs.get("min-expires")), tuple(c for c in contacts if c)


def _seconds(values: list[str] | None) -> int | None:
    """The delta-seconds of a Retry-After / Min-Expires value (``120 (busy);duration=60`` -> 120)."""
    if not values:
        return None
    head = values[0].split(";", 1)[0].split("(", 1)[0].strip()
    if not head.isdigit() or len(head) > 9:
        return None
    return int(head)
