"""What a Secret's SIP credentials may hold, checked the same way by the operator (conditions) and the agent
(before anything is sent). Pure; never returns or logs a value, only what is wrong with it.

The username goes into SIP headers (``Authorization: Digest username="..."``): no control character (CR/LF would
be header injection), no ``"`` or ``\\`` (it is a quoted string), valid UTF-8, at most ``MAX_USERNAME_BYTES``.
The password only enters the digest computation: any bytes, at most ``MAX_PASSWORD_BYTES`` (a Secret holding a
file by mistake is refused rather than hashed).
"""

from __future__ import annotations

MAX_USERNAME_BYTES = 256
MAX_PASSWORD_BYTES = 1024

#: condition reasons
MISSING = "CredentialsMissing"
INVALID = "CredentialsInvalid"


def username_problem(value: bytes) -> str | None:
    """Why ``value`` cannot be a SIP digest username, or None."""
    if not value:
        return "is empty"
    if len(value) > MAX_USERNAME_BYTES:
        return f"is {len(value)} bytes long (at most {MAX_USERNAME_BYTES})"
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return "is not UTF-8"
    bad = sorted({f"U+{ord(c):04X}" for c in text if ord(c) < 0x20 or ord(c) == 0x7F})
    if bad:
        return f"holds control characters ({', '.join(bad)}); it goes into SIP headers"
    if '"' in text or "\\" in text:
        return "holds a double quote or a backslash; it goes into a quoted SIP header parameter"
    return None


def password_problem(value: bytes) -> str | None:
    """Why ``value`` cannot be a SIP digest password, or None."""
    if not value:
        return "is empty"
    if len(value) > MAX_PASSWORD_BYTES:
        return f"is {len(value)} bytes long (at most {MAX_PASSWORD_BYTES})"
    return None
