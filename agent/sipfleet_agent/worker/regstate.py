"""The registration state machine of one account and its retry watchdog. Pure: no pjsua2; time passed in.

Promise: :func:`on_reg_state` turns one pjsua ``onRegState`` outcome (final code, reason, granted expiry, where
the answer came from, the Service-Route it carried) into the registration and route status updates: 2xx with an
expiry is ``Registered`` (``registeredSince`` kept across refreshes), 2xx without is ``Unregistered``, anything
else ``Failed`` (with ``lastFailure``); ``expiresAt`` is the granted binding's end (every 2xx moves it) and a retry check to schedule. :func:`retry_delay` says when to check that
pjsua retried on its own (it does not for e.g. 401/403/404); :func:`retry_needed` whether we must re-register.
"""

from __future__ import annotations

import dataclasses
from typing import Any

#: Final codes after which pjsua schedules its own retry.
PJSUA_RETRIED = {408, 480, 500, 502, 503, 504}


@dataclasses.dataclass(frozen=True)
class RegOutcome:
    registration: dict | None  # fields to set on RegistrationStatus, None: unchanged
    route: dict | None  # fields to set on RouteStatus
    failed: bool


def on_reg_state(reg: Any, route: Any, *, code: int, reason: str, expiration: int, src: str,
                 service_route: list[str], configured_route: list[str], now: str,
                 expires_at: str | None = None) -> RegOutcome:
    """``reg``/``route``: the current RegistrationStatus / RouteStatus; ``now``: an ISO timestamp; ``expires_at``:
    when the granted binding lapses (2xx with an expiry)."""
    before = reg.state
    if 200 <= code < 300:
        desired = list(configured_route) + list(service_route)
        route_upd = None
        if route.service_route != service_route or route.response_from != (src or None) or route.desired != desired:
            route_upd = {"service_route": service_route, "response_from": src or None, "desired": desired}
        if expiration > 0:
            if (before == "Registered" and reg.code == code and reg.reason == reason
                    and reg.expires_seconds == expiration and reg.expires_at == expires_at):
                return RegOutcome(None, route_upd, False)
            since = reg.registered_since if before == "Registered" else now
            return RegOutcome({"state": "Registered", "code": code, "reason": reason, "expires_seconds": expiration,
                               "registered_since": since, "expires_at": expires_at, "failure_reason": None},
                              route_upd, False)
        return RegOutcome({"state": "Unregistered", "code": code, "reason": reason, "expires_seconds": None,
                           "registered_since": None, "expires_at": None, "failure_reason": None}, route_upd, False)
    return RegOutcome({"state": "Failed", "code": code, "reason": reason or None, "expires_seconds": None,
                       "registered_since": None, "last_failure": now, "expires_at": None, "failure_reason": None},
                      {"response_from": src} if src else None, True)


def retry_delay(registration: Any, first: bool, jitter: float) -> float:
    """Seconds until the watchdog looks: the retry interval (first retry after a transport loss), the jitter
    (``jitter`` in [0, 1)) and a second or two of slack for pjsua's own timer."""
    base = registration.first_retry_interval_seconds if first else registration.retry_interval_seconds
    return base + jitter * registration.jitter_seconds + (2.0 if first else 1.0)


def retry_needed(*, last_tx_register: float, mark: float, state: str, busy: bool, removed: bool,
                 stopping: bool, created: bool) -> bool:
    """Nothing went out since ``mark`` and the account is still not Registered: re-register ourselves."""
    if removed or busy or stopping or not created:
        return False
    return not (last_tx_register > mark or state == "Registered")
