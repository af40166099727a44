"""When an account's binding must be refreshed by the agent rather than by pjsip, and when it has lapsed. Pure.

pjsip 2.15.1 (``schedule_registration()`` in ``pjsip/src/pjsip-ua/sip_reg.c``) schedules the refresh of a granted
expiry ``E`` at ``E - delay_before_refresh`` computed in unsigned 32-bit arithmetic, then raises it to at least
``PJSIP_REGISTER_CLIENT_DELAY_BEFORE_REFRESH`` (5 s). A grant below the account's delay wraps to ~136 years (no
refresh ever); a grant at or below 5 s is refreshed no earlier than 5 s, after it lapsed. :func:`own_refresh_delay`
says when the agent refreshes on its own timer instead (half the granted expiry), :func:`lapsed` whether a
binding is gone.
"""

from __future__ import annotations

import datetime as _dt

from sipfleet.api.reasons import PJSIP_REFRESH_MARGIN_SECONDS

#: our own refresh never comes sooner than this after a grant
MIN_OWN_REFRESH_S = 0.2


def pjsip_refresh_delay(granted: int, delay_before_refresh: int) -> int | None:
    """Seconds after the 2xx at which pjsip refreshes on its own; None when it never does (the unsigned wrap)."""
    d = (granted - delay_before_refresh) % (1 << 32)
    if d >= 1 << 31:
        return None
    return max(d, PJSIP_REFRESH_MARGIN_SECONDS)


def own_refresh_delay(granted: int, delay_before_refresh: int) -> float | None:
    """None when pjsip refreshes before ``granted`` runs out; else seconds until the agent's own refresh."""
    if granted <= 0:
        return None
    pj = pjsip_refresh_delay(granted, delay_before_refresh)
    if pj is not None and pj < granted and granted > PJSIP_REFRESH_MARGIN_SECONDS:
        return None
    return max(MIN_OWN_REFRESH_S, granted / 2.0)


def expires_at(granted_at: _dt.datetime, granted: int) -> str:
    """RFC 3339 (milliseconds, UTC) time the binding granted at ``granted_at`` for ``granted`` seconds lapses."""
    t = (granted_at + _dt.timedelta(seconds=granted)).astimezone(_dt.timezone.utc)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def lapsed(state: str, grant_seq: int, seq_at_grant: int) -> bool:
    """At the expiry of the grant numbered ``seq_at_grant``: gone when still Registered on that same grant."""
    return state == "Registered" and grant_seq == seq_at_grant


def delay_before_refresh(expires: int) -> int:
    """The ``delayBeforeRefreshSec`` the agent configures for a requested expiry (accounts.account_config)."""
    return min(PJSIP_REFRESH_MARGIN_SECONDS, max(1, expires // 4))
