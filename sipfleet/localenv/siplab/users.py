"""The registrar's users: digest credentials (only HA1 hashes are stored, mode 0600) and R's contacts.

``users.json`` maps username -> HA1 = md5(username:realm:password) with the realm = the lab domain; R loads it
at start-up (``event_route[htable:mod-init]``) and takes changes at run time through ``htable.sets`` sent on
kamcmd's stdin, so hashes never appear in a process list. Contacts come from ``ul.lookup location <user>``.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Iterable

from .kamailio import kamcmd, kamcmd_batch, kamcmd_raw
from .model import LabError
from .state import LabState

USERNAME_RE = re.compile(r"^[A-Za-z0-9._~+-]{1,64}$")
USERS_FILE = "users.json"


def digest_ha1(username: str, realm: str, password: str) -> str:
    return hashlib.md5(f"{username}:{realm}:{password}".encode()).hexdigest()


def check_username(username: str) -> str:
    if not USERNAME_RE.match(username or ""):
        raise LabError(f"bad username {username!r}: letters, digits and . _ ~ + - only")
    return username


def hashed_entries(creds: Iterable[tuple[str, str]], realm: str) -> list[tuple[str, str]]:
    """(username, HA1) for each (username, password), validated (pure)."""
    out = []
    for username, password in creds:
        check_username(username)
        if not isinstance(password, str) or not password:
            raise LabError("password must be a non-empty string")
        out.append((username, digest_ha1(username, realm, password)))
    return out


def load(state: LabState) -> dict[str, str]:
    return {u: h for u, h in state.read_json(USERS_FILE, {}).items() if USERNAME_RE.match(u)}


def save_and_push(state: LabState, entries: list[tuple[str, str]], ctl: Path | None) -> None:
    """Store ``entries`` in users.json and, when R runs (``ctl`` given), in R's htable. Caller holds the lock."""
    users = load(state)
    users.update(entries)
    state.write_json(USERS_FILE, users, mode=0o600)
    if ctl is not None:
        kamcmd_batch(ctl, "R", [["htable.sets", "users", u, f"s:{ha1}"] for u, ha1 in entries])


def remove(state: LabState, usernames: Iterable[str], ctl: Path | None) -> None:
    """Forget ``usernames`` in users.json (one write) and, when R runs, in R's htable. Caller holds the lock."""
    users = load(state)
    gone = [u for u in usernames if users.pop(u, None) is not None]
    if gone:
        state.write_json(USERS_FILE, users, mode=0o600)
    if ctl is not None and gone:
        try:
            kamcmd_batch(ctl, "R", [["htable.delete", "users", u] for u in gone])
        except LabError:
            pass


def parse_ul_lookup(out: str) -> list[str]:
    """The contact addresses in ``kamcmd ul.lookup`` output (pure)."""
    contacts: list[str] = []
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Address:"):
            contacts.append(line.split(":", 1)[1].strip())
    return contacts


def contacts(ctl: Path, username: str) -> list[str]:
    """The contacts R currently holds for ``username`` (empty if none)."""
    check_username(username)
    rc, out = kamcmd_raw(ctl, "ul.lookup", "location", username)
    if rc != 0:
        if "not found" in out.lower() or "404" in out:
            return []
        raise LabError(f"ul.lookup {username} failed: {out.strip()}")
    return parse_ul_lookup(out)
