"""What the supervisor hands on: the wire form of an account for its worker, and the texts of its events. Pure."""

from __future__ import annotations

from .. import protocol as p
from ..config import ResolvedAccount


def self_heal_message(doc: dict) -> str:
    route = doc.get("route") or {}
    last = route.get("lastRepair") or {}
    ms = last.get("durationMs")
    took = f" in {ms:.0f} ms" if isinstance(ms, (int, float)) else ""
    return (f"the route drifted and the agent re-created the account{took}, back via {route.get('firstHop') or '?'} "
            f"({route.get('selfHealCount', 0)} self-heals, {route.get('driftCount', 0)} drifts since this agent took it)")


def wire(res: ResolvedAccount) -> p.WireAccount:
    return p.WireAccount(spec=res.spec.to_api(), username=res.creds.username, password=res.creds.password, realm=res.creds.realm,
                         expires_override=res.expires_override, tls=res.tls.to_wire() if res.tls else None)
