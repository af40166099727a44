"""What the supervisor hands on: the wire form of an account for its worker, the texts of its events, and the agent's
snapshot (GET /status) from its workers' parts. Pure."""

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


def snapshot_document(agent: str, sip_address: str, parts: list, restarts: dict[int, int]) -> dict:
    """GET /status: ``parts`` the workers' (proc, snapshot) replies, ``restarts`` per worker id."""
    accounts, workers = [], []
    for proc, snap in sorted(parts, key=lambda pr: pr[0].id):
        workers.append({"id": proc.id, "pid": proc.pid, "sipPort": snap.get("sipPort"),
                        "globalProxy": snap.get("globalProxy"), "restarts": restarts.get(proc.id, 0),
                        "accounts": [a["name"] for a in snap.get("accounts", [])]})
        for a in snap.get("accounts", []):
            accounts.append({**a, "worker": proc.id, "sipPort": snap.get("sipPort")})
    return {"agent": agent, "sipAddress": sip_address,
            "sipPort": workers[0]["sipPort"] if workers else None,
            "globalProxy": workers[0]["globalProxy"] if len(workers) == 1 else None,
            "activeCalls": sum(int(s.get("activeCalls") or 0) for _, s in parts),
            "workers": workers, "accounts": accounts}
