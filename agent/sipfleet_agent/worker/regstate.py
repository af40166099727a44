"""The registration state machine of one account. Pure: no pjsua2; time passed in.

Promise: :func:`on_reg_state` turns one pjsua ``onRegState`` outcome (final code, reason, granted expiry, where
the answer came from, the Service-Route it carried) into the registration and route status updates: 2xx with an
expiry is ``Registered`` (``registeredSince`` kept across refreshes), 2xx without is ``Unregistered`` when it answers
the agent's own un-REGISTER and ``Failed`` (``RegistrarGrantedNoBinding``) when it answers a REGISTER that asked for
a binding, anything else ``Failed`` (with ``lastFailure``); ``expiresAt`` is the granted binding's end (every 2xx
moves it). An answer cut at pjsip's UDP receive buffer before its grant (``truncated``) is ``Failed`` with
``RegistrarResponseTruncated`` whatever its code (but a 2xx to the agent's own un-REGISTER): such a 2xx's expiry
and Service-Route are pjsip's guesses, not the registrar's, so they are neither reported nor counted as a binding.
When a failed account retries is :mod:`.retrypolicy`'s decision, not this module's.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sipfleet.api import reasons

@dataclasses.dataclass(frozen=True)
class RegOutcome:
    registration: dict | None  # fields to set on RegistrationStatus, None: unchanged
    route: dict | None  # fields to set on RouteStatus
    failed: bool


def on_reg_state(reg: Any, route: Any, *, code: int, reason: str, expiration: int, src: str,
                 service_route: list[str], configured_route: list[str], now: str,
                 expires_at: str | None = None, asked_binding: bool = False,
                 truncated: str | None = None) -> RegOutcome:
    """``reg``/``route``: the current RegistrationStatus / RouteStatus; ``now``: an ISO timestamp; ``expires_at``:
    when the granted binding lapses (2xx with an expiry); ``asked_binding``: the REGISTER this answers asked for a
    binding (not the agent's own un-REGISTER) - a 2xx granting none to it is a failure
    (``RegistrarGrantedNoBinding``), retried by the policy, not a quiet ``Unregistered`` that nothing retries;
    ``truncated``: the answer was cut (:class:`.responseguard.Truncated`'s message)."""
    before = reg.state
    if truncated and (asked_binding or not 200 <= code < 300):  # a cut 2xx to our un-REGISTER still ends it
        text = f"{reason}: {truncated}" if reason else truncated
        return RegOutcome({"state": "Failed", "code": code, "reason": text[:1024], "expires_seconds": None,
                           "registered_since": None, "last_failure": now, "expires_at": None,
                           "failure_reason": reasons.REGISTRAR_RESPONSE_TRUNCATED},
                          {"response_from": src} if src and route.response_from != src else None, True)
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
        if asked_binding:
            return RegOutcome({"state": "Failed", "code": code, "reason": f"{reason} (no binding granted)".strip(),
                               "expires_seconds": None, "registered_since": None, "last_failure": now,
                               "expires_at": None, "failure_reason": reasons.REGISTRAR_GRANTED_NO_BINDING},
                              route_upd, True)
        return RegOutcome({"state": "Unregistered", "code": code, "reason": reason, "expires_seconds": None,
                           "registered_since": None, "expires_at": None, "failure_reason": None}, route_upd, False)
    return RegOutcome({"state": "Failed", "code": code, "reason": reason or None, "expires_seconds": None,
                       "registered_since": None, "last_failure": now, "expires_at": None, "failure_reason": None},
                      {"response_from": src} if src else None, True)
