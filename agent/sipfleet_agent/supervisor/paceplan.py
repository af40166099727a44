"""Which waiting account of an agent may send its REGISTER now: the agent's share of the operator's REGISTER budget,
and its probe of a registrar that does not answer. Pure: no I/O, time passed in.

Promise: the accounts of one registrar (a *lane*) wait in the order they asked (:meth:`PacePlan.want`). A lane lets
them go at its rate (the sum of its accounts' ``register_rate``, in REGISTER requests per second) from a bucket
one attempt deep: no burst. An attempt costs the REGISTER requests its worker expects (2 when the registrar
challenges: the first REGISTER and the one with credentials; twice that for a re-creation, whose un-REGISTER
comes first), charged when it is let go and set right when its answer says what it took; so in any second a lane
starts REGISTER transactions within about ``rate`` plus one attempt.

A lane is *down* after a path failure (:data:`PATH_FAILURES`: no answer, 408, 500, 502, 503, 504) or when a
REGISTER it let go has had no final answer for :data:`SUSPECT_S` (a registrar that answers takes milliseconds, a
challenge included). While down it lets one account go per ``probe_s`` (the probe, whether or not the last one
was answered yet; never before a Retry-After the registrar gave) and holds the rest; the first answer that is not
a path failure, to any REGISTER of the lane's accounts, opens it again, and the waiting accounts follow at the
lane's rate. A REGISTER let go and never answered (its account went away) stops counting after
:data:`INFLIGHT_MAX_S`.
"""

from __future__ import annotations

import dataclasses
from typing import Hashable, Mapping

from sipfleet.api.budget import PATH_FAILURE_CODES as PATH_FAILURES

Key = Hashable  # (namespace, name)

#: a REGISTER let go and unanswered this long makes its lane down (pjsip retransmits over UDP at 0.5 and 1.5 s)
SUSPECT_S = 2.0
#: past pjsip's Timer F (32 s): a REGISTER let go and unanswered this long is no longer waited for
INFLIGHT_MAX_S = 40.0
EPS = 1e-9  # a token refilled to 0.9999999999 is a token


@dataclasses.dataclass
class Lane:
    rate: float
    tokens: float = 1.0
    stamp: float | None = None
    down_since: float | None = None
    next_probe: float = 0.0
    waiting: dict = dataclasses.field(default_factory=dict)  # key -> (since, cost); insertion order is the queue
    inflight: dict = dataclasses.field(default_factory=dict)  # key -> (let go at, tokens charged)

    def refill(self, now: float) -> None:
        if self.stamp is not None:
            self.tokens = min(1.0, self.tokens + max(0.0, now - self.stamp) * self.rate)
        self.stamp = now

    def oldest(self) -> float | None:
        return min(t for t, _ in self.inflight.values()) if self.inflight else None

    def has_token(self) -> bool:
        return self.tokens >= 1.0 - EPS

    def token_at(self, now: float) -> float:
        if self.has_token() or self.stamp is None:
            return now
        return max(now, self.stamp + (1.0 - self.tokens) / self.rate)


class PacePlan:
    def __init__(self, probe_s: float):
        self.probe_s = float(probe_s)
        self.lanes: dict[str, Lane] = {}
        self.lane_of: dict[Key, str] = {}

    # ------------------------------------------------------------------ configuration

    def configure(self, accounts: Mapping[Key, tuple[str, float]]) -> list[Key]:
        """``accounts``: key -> (lane, register_rate) of every paced account. Lanes keep their state; an account
        no longer paced (or gone) is forgotten. Returns the waiting keys that are no longer paced: send them now."""
        rates: dict[str, float] = {}
        for lane, rate in accounts.values():
            rates[lane] = rates.get(lane, 0.0) + float(rate)
        released = [k for k in self.lane_of if k not in accounts and k in self.lanes[self.lane_of[k]].waiting]
        for k in [k for k in self.lane_of if k not in accounts or accounts[k][0] != self.lane_of[k]]:
            self._drop(k)
        for lane, rate in rates.items():
            if lane in self.lanes:
                self.lanes[lane].rate = rate
            else:
                self.lanes[lane] = Lane(rate=rate)
        for lane in [n for n in self.lanes if n not in rates]:
            del self.lanes[lane]
        self.lane_of = {k: v[0] for k, v in accounts.items()}
        return released

    def _drop(self, key: Key) -> None:
        lane = self.lanes.get(self.lane_of.get(key, ""))
        if lane is not None:
            lane.waiting.pop(key, None)
            lane.inflight.pop(key, None)

    def forget(self, keys) -> None:  # noqa: ANN001 - any iterable of keys
        """Keys whose worker ended: what they asked for and what was in flight is gone with it."""
        for k in keys:
            self._drop(k)

    # ------------------------------------------------------------------ events

    def paced(self, key: Key) -> bool:
        return key in self.lane_of

    def want(self, key: Key, now: float, cost: int = 1) -> None:
        """``key`` waits to start an attempt of ``cost`` REGISTER requests."""
        lane = self.lanes.get(self.lane_of.get(key, ""))
        if lane is not None and key not in lane.waiting:
            lane.waiting[key] = (now, float(max(1, cost)))

    def answered(self, key: Key, code: int | None, now: float, retry_after: int | None = None,
                 requests: int = 1) -> None:
        """A REGISTER of ``key`` ended with ``code`` after ``requests`` REGISTER requests (None: a let-go found
        nothing to send: what it was charged is given back)."""
        lane = self.lanes.get(self.lane_of.get(key, ""))
        if lane is None:
            return
        went = lane.inflight.pop(key, None)
        if went is not None:
            lane.refill(now)
            lane.tokens = min(1.0, lane.tokens + went[1] - (0 if code is None else max(1, requests)))
        if code is None:
            return
        if code in PATH_FAILURES:
            if lane.down_since is None:
                lane.down_since, lane.next_probe = now, now + self.probe_s
            if retry_after:
                lane.next_probe = max(lane.next_probe, now + float(retry_after))
        else:
            lane.down_since = None

    # ------------------------------------------------------------------ decisions

    def due(self, now: float) -> list[Key]:
        """The accounts to let go now (each counted as in flight until answered)."""
        out: list[Key] = []
        for lane in self.lanes.values():
            lane.refill(now)
            for k in [k for k, (t, _) in lane.inflight.items() if now - t >= INFLIGHT_MAX_S]:
                del lane.inflight[k]
            oldest = lane.oldest()
            if lane.down_since is None and oldest is not None and now - oldest >= SUSPECT_S:
                lane.down_since, lane.next_probe = now, oldest + self.probe_s
            while lane.waiting and lane.has_token():
                if lane.down_since is not None:
                    if now < lane.next_probe:
                        break  # one probe every probe_s (however long the last one takes to be answered)
                    lane.next_probe = now + self.probe_s
                key = next(iter(lane.waiting))
                _, cost = lane.waiting.pop(key)
                lane.tokens -= cost
                lane.inflight[key] = (now, cost)
                out.append(key)
        return out

    def next_at(self, now: float) -> float | None:
        """When :meth:`due` may have something to let go (None: nothing waits)."""
        times = []
        for lane in self.lanes.values():
            if not lane.waiting:
                continue
            if lane.down_since is not None:
                times.append(max(lane.next_probe, lane.token_at(now)))
            else:
                times.append(lane.token_at(now))
                if lane.inflight:
                    times.append(lane.oldest() + SUSPECT_S)
        return max(now, min(times)) if times else None

    def snapshot(self) -> dict:
        """For metrics and the log: per lane, its rate, whether it is down, waiting and in flight."""
        return {n: {"rate": round(lane.rate, 3), "down": lane.down_since is not None, "waiting": len(lane.waiting),
                    "inflight": len(lane.inflight)} for n, lane in self.lanes.items()}
