"""The route meter: what an account's transmitted REGISTERs (pjsip's ``TX`` log lines, parsed by
:mod:`sipfleet_agent.siplog`) say about the route it really uses. Pure: no pjsua2, no clock.

Promise: :meth:`RouteMeter.observe_tx` classifies every REGISTER of the account as ``unregister`` (sent while the
pjsua account is being deleted), ``stale-client`` (a late REGISTER of a deleted registration client, e.g. one more
answer to a 401 after an un-REGISTER was refused: says nothing about the current route), ``retransmission`` (same
Call-ID and CSeq again: must not make the measured route flap) or ``register``; only a ``register`` carries the
measurement: ``in_sync`` (Route set equal to the configured one, normalized, and the first hop the configured
first route entry when it is an IP literal), the route status fields that changed and whether a drift starts.
:meth:`observe_rx` marks the un-REGISTER answered (a final response that is no challenge).
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

from ..siplog import RxResponse, TxRequest, normalize_uri, parse_uri, uri_hostport


def aor_key(uri: str) -> tuple:
    """What identifies an account in a From header: user, host and port (5060 when absent)."""
    u = parse_uri(uri)
    if u is None:
        return ("raw", uri.strip().lower())
    return (u.user or "", u.host, u.port or 5060)


@dataclasses.dataclass(frozen=True)
class Observation:
    kind: str  # "register", "unregister", "stale-client", "retransmission"
    in_sync: bool | None = None
    changes: dict = dataclasses.field(default_factory=dict)
    drift_started: bool = False


class RouteMeter:
    def __init__(self, route: list[str], transport: str):
        self.transport = transport
        self.desired_norm = [normalize_uri(r, transport) for r in route]
        self.first_hop_expected = uri_hostport(route[0], transport) if route else None
        self.seen_tx: collections.deque = collections.deque(maxlen=32)
        self.current_call_ids: set[str] = set()
        self.retired_call_ids: collections.deque = collections.deque(maxlen=32)
        self.retiring = False
        self.unreg_sent = False
        self.unreg_call_id: str | None = None
        self.unreg_cseq: int | None = None
        self.unreg_answered = False
        #: call_id -> CSeq of a REGISTER asking for a binding whose final answer has not come (a challenge is none)
        self.awaiting: dict[str, int] = {}

    def reconfigure(self, route: list[str], transport: str) -> None:
        self.transport = transport
        self.desired_norm = [normalize_uri(r, transport) for r in route]
        self.first_hop_expected = uri_hostport(route[0], transport) if route else None

    def in_sync(self, req: TxRequest) -> bool:
        if len(req.route) != len(self.desired_norm):
            return False
        if any(normalize_uri(u, self.transport) != d for u, d in zip(req.route, self.desired_norm)):
            return False
        if self.desired_norm and self.first_hop_expected is not None:
            hp = self.first_hop_expected
            host, port = req.destination.rsplit(":", 1) if ":" in req.destination else (req.destination, "0")
            if host.strip("[]") != hp[0] or int(port) != hp[1]:
                return False
        return True

    def retire(self) -> None:
        """The pjsua account is being deleted: its registration clients' Call-IDs are no longer the current ones."""
        self.retiring = True
        self.retired_call_ids.extend(c for c in self.current_call_ids if c not in self.retired_call_ids)
        self.current_call_ids.clear()
        self.unreg_sent = False
        self.unreg_answered = False
        self.unreg_call_id = None
        self.unreg_cseq = None
        self.awaiting = {c: q for c, q in self.awaiting.items() if c in self.retired_call_ids}

    @property
    def unreg_done(self) -> bool:
        """The retired client is quiet: its un-REGISTER (if it sent one) was answered and no REGISTER of it that asked for a binding
        (a drifted one in the middle of its digest challenge, say) still waits for its answer - else that REGISTER's
        challenge answer could reach the registrar after the new client's REGISTER and win."""
        return (self.unreg_answered or not self.unreg_sent) and not self.retired_busy

    def settled(self) -> None:
        """pjsua reported the current client's outcome (a 408 it made itself has no answer on the wire)."""
        self.awaiting = {c: q for c, q in self.awaiting.items() if c in self.retired_call_ids}

    @property
    def registering(self) -> bool:
        """A REGISTER of the current client that asked for a binding still waits for its final answer (a challenge
        is none): pjsua cannot send an un-REGISTER now (its registration client is busy)."""
        return any(c not in self.retired_call_ids for c in self.awaiting)

    def knows(self, call_id: str) -> bool:
        """The Call-ID is one of this account's registration clients, current or retired."""
        return call_id in self.current_call_ids or call_id in self.retired_call_ids

    @property
    def retired_busy(self) -> bool:
        """A REGISTER of the retired client that asked for a binding still waits for its final answer."""
        return any(c in self.awaiting for c in self.retired_call_ids)

    def observe_tx(self, req: TxRequest, route: Any) -> Observation:
        """``route``: the account's current RouteStatus (in_sync, effective, first_hop, request_uri)."""
        unregister = req.expires == 0 or req.contact_expires_zero
        if self.retiring:
            if req.call_id not in self.retired_call_ids:
                self.retired_call_ids.append(req.call_id)
            if not unregister:  # the retired client still asks for a binding (answering a challenge): wait for it
                self.awaiting[req.call_id] = req.cseq
                return Observation("stale-client")
            self.unreg_sent = True
            self.unreg_call_id = req.call_id
            self.unreg_cseq = req.cseq
            return Observation("unregister")
        if req.call_id in self.retired_call_ids:
            return Observation("stale-client")
        self.current_call_ids.add(req.call_id)
        key = (req.call_id, req.cseq)
        if key in self.seen_tx:
            return Observation("retransmission")
        self.seen_tx.append(key)
        if not unregister:
            self.awaiting[req.call_id] = req.cseq
        in_sync = self.in_sync(req)
        first_hop = f"{req.transport}:{req.destination}"
        changes: dict[str, Any] = {}
        if route.in_sync is not in_sync:
            changes["in_sync"] = in_sync
        if tuple(route.effective) != req.route:
            changes["effective"] = list(req.route)
        if route.first_hop != first_hop:
            changes["first_hop"] = first_hop
        if route.request_uri != req.request_uri:
            changes["request_uri"] = req.request_uri
        drift = not in_sync and route.in_sync is not False
        return Observation("register", in_sync, changes, drift)

    def observe_rx(self, resp: RxResponse) -> bool:
        """A REGISTER answer of this account's: True when it is the final answer to its un-REGISTER."""
        if resp.code < 200 or resp.code in (401, 407):
            return False
        if self.awaiting.get(resp.call_id) == resp.cseq:
            del self.awaiting[resp.call_id]
        if self.retiring and self.unreg_call_id == resp.call_id and self.unreg_cseq == resp.cseq:
            self.unreg_answered = True
            return True
        return False
