"""The worker's side of the agent's REGISTER pacing (event thread only; the decisions are the supervisor's,
supervisor/paceplan.py).

Promise: an account with a ``register_rate``, in a worker that has a supervisor to ask (``hook``), sends the
REGISTERs the agent starts itself (the first one of a new registration client, and every retry) only after the
supervisor's :class:`~sipfleet_agent.protocol.Go`: :meth:`PaceClient.send` asks once per account (:class:`Want`) and
the Go sends it, unless by then there is nothing to send (the account gone or busy being re-created, or a retry that
found the account registered again): then the supervisor hears that nothing went (``Answered`` code None). Every
final answer to a paced account's REGISTER, refreshes by pjsua included, is told to the supervisor
(:meth:`answered`): that is how it knows the registrar answers again. Refreshes and un-REGISTERs are not paced.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import pjsua2 as pj

from .. import protocol as p
from .accounts import AccountRuntime

LOG = logging.getLogger("sipfleet_agent")

CREATE, RETRY = "create", "retry"


class PaceClient:
    def __init__(self, agent: Any):
        self.a = agent
        self.hook: Callable[[p.Message], None] | None = None  # worker.main: the pipe to the supervisor
        self.pending: dict[tuple, str] = {}  # key -> CREATE / RETRY, asked and not yet let go

    def paced(self, rt: AccountRuntime) -> bool:
        return self.hook is not None and rt.res.spec.register_rate is not None

    def send(self, rt: AccountRuntime, why: str = RETRY) -> None:
        """Send ``rt``'s REGISTER when the supervisor lets it go (at once when not paced)."""
        if not self.paced(rt):
            self.register_now(rt)
            return
        if rt.key in self.pending:
            if why == CREATE:
                self.pending[rt.key] = CREATE
            return
        self.pending[rt.key] = why
        self.hook(p.Want(rt.key[0], rt.key[1]))  # type: ignore[misc]

    def go(self, key: tuple) -> None:
        why = self.pending.pop(key, None)
        rt = self.a.accounts.get(key)
        if why is None or rt is None or rt.removed or rt.acc is None or rt.busy or self.a.stopping or (
                why == RETRY and rt.status.registration.state == "Registered"):
            self._tell(key, None)
            return
        self.register_now(rt)

    def answered(self, rt: AccountRuntime, code: int, retry_after: int | None = None) -> None:
        """A final answer: the supervisor learns the registrar answers, and what an attempt costs (the REGISTER
        it answers carried credentials: a challenge came first, 2 requests)."""
        if self.paced(rt):
            challenged = rt.last_register is not None and rt.last_register[0].authorized
            self._tell(rt.key, code, retry_after, 2 if challenged else 1)

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
