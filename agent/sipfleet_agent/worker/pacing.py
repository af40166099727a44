"""The worker's side of the agent's REGISTER pacing (event thread only; the decisions are the supervisor's,
supervisor/paceplan.py).

Promise: an account with a ``register_rate``, in a worker that has a supervisor to ask (``hook``), sends the
REGISTERs the agent starts itself only after the supervisor's :class:`~sipfleet_agent.protocol.Go`: the first one of
a new account, every retry, and a re-creation as a whole (re-register, repair, changed account: its un-REGISTER
and the new client's REGISTER are one attempt, :meth:`PaceClient.turn`). :meth:`PaceClient.send` asks once per
account (:class:`Want`) and the Go sends it, unless by then there is nothing to send (the account gone or busy being
re-created, or a retry that found the account registered again): then the supervisor hears that nothing went
(``Answered`` code None). Every final answer to a paced account's REGISTER, refreshes by pjsua included, is told to
the supervisor (:meth:`answered`), with the requests it took: that is how it knows the registrar answers again and
what an attempt costs. pjsua's refreshes and the un-REGISTER of an account leaving are not paced.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import pjsua2 as pj

from .. import protocol as p
from .accounts import AccountRuntime
from .eventloop import Wait

LOG = logging.getLogger("sipfleet_agent")

CREATE, RETRY, RECREATE = "create", "retry", "recreate"
#: the longest a re-creation waits for its turn (the registrar unanswered that long: it goes ahead anyway)
TURN_WAIT_S = 3600.0


class PaceClient:
    def __init__(self, agent: Any):
        self.a = agent
        self.hook: Callable[[p.Message], None] | None = None  # worker.main: the pipe to the supervisor
        self.pending: dict[tuple, str] = {}  # key -> CREATE / RETRY / RECREATE, asked and not yet let go
        self.granted: set[tuple] = set()  # re-creations let go: their new client registers on add
        self.extra: dict[tuple, int] = {}  # requests the attempt took besides its REGISTERs (its un-REGISTER)
        self.challenges: dict[tuple, bool] = {}  # whether the account's last granted REGISTER was challenged

    def paced(self, rt: AccountRuntime) -> bool:
        return self.hook is not None and rt.res.spec.register_rate is not None

    def send(self, rt: AccountRuntime, why: str = RETRY) -> None:
        """Send ``rt``'s REGISTER when the supervisor lets it go (at once when not paced)."""
        if not self.paced(rt):
            self.register_now(rt)
            return
        if rt.key in self.pending:
            if why != RETRY:
                self.pending[rt.key] = why
            return
        self.pending[rt.key] = why
        self.hook(p.Want(rt.key[0], rt.key[1], self._per_request(rt) * (2 if why == RECREATE else 1)))  # type: ignore[misc]

    def turn(self, rt: AccountRuntime):  # noqa: ANN201 - a task generator (eventloop.TaskGen)
        """A re-creation's turn: ask, and wait until let go (``take_grant`` then says so once)."""
        self.send(rt, RECREATE)
        yield Wait(TURN_WAIT_S, lambda: rt.key in self.granted or rt.removed or self.a.stopping)

    def take_grant(self, rt: AccountRuntime) -> bool:
        if rt.key in self.granted:
            self.granted.discard(rt.key)
            return True
        return False

    def unregistered(self, rt: AccountRuntime) -> None:
        """A re-creation sent an un-REGISTER: it counts to the attempt (2 requests when the registrar challenges)."""
        if self.paced(rt):
            self.extra[rt.key] = self._per_request(rt)

    def forget(self, rt: AccountRuntime) -> None:
        """The account left the worker (a Go for it finds nothing)."""
        for d in (self.pending, self.extra, self.challenges):
            d.pop(rt.key, None)
        self.granted.discard(rt.key)

    def go(self, key: tuple) -> None:
        why = self.pending.pop(key, None)
        rt = self.a.accounts.get(key)
        if why == RECREATE and rt is not None and not rt.removed and not self.a.stopping:
            self.granted.add(key)
            return
        if why is None or rt is None or rt.removed or rt.acc is None or rt.busy or self.a.stopping or (
                why == RETRY and rt.status.registration.state == "Registered"):
            self._tell(key, None)
            return
        self.register_now(rt)

    def answered(self, rt: AccountRuntime, code: int, retry_after: int | None = None) -> None:
        """A final answer: the supervisor learns the registrar answers, and what an attempt costs (the REGISTER
        it answers carried credentials: a challenge came first, 2 requests)."""
        if not self.paced(rt):
            return
        challenged = rt.last_register is not None and rt.last_register[0].authorized
        if 200 <= code < 300:
            self.challenges[rt.key] = challenged
        self._tell(rt.key, code, retry_after, (2 if challenged else 1) + self.extra.pop(rt.key, 0))

    def _per_request(self, rt: AccountRuntime) -> int:
        """REGISTER requests one REGISTER takes at this account's registrar: 2 when it challenged the last one it
        granted (or none was granted yet: the usual registrar challenges)."""
        return 2 if self.challenges.get(rt.key, True) else 1

    def register_now(self, rt: AccountRuntime) -> None:
        if rt.acc is None or rt.removed or self.a.stopping:
            return
        try:
            rt.acc.setRegistration(True)
        except pj.Error as e:  # e.g. a REGISTER in flight (its answer reschedules) or no transport: back off
            LOG.warning("REGISTER of %s failed locally: %s", rt.name, e.info())
            upd = self.a.retrier.on_failure(rt, 0, "")
            rt.status.set_registration(**upd)
            self.a.mark(rt)

    def _tell(self, key: tuple, code: int | None, retry_after: int | None = None, requests: int = 1) -> None:
        if self.hook is not None:
            self.hook(p.Answered(key[0], key[1], code, retry_after, requests))
