"""The worker core: one pjsua2 Endpoint, at most 8 accounts of one worker key, driven by one event thread.

Threading: ``threadCnt=0`` and a single thread loops on ``libHandleEvents``; every pjsua call and callback
happens on it. Other threads (the pipe reader) only *submit* work (:class:`~.eventloop.EventLoop`), so the state
needs no locks. Route measurement: the LogWriter sees every transmitted request; :mod:`.routemeter` turns an
account's REGISTERs into its effective route. Repair: re-create the account (``shutdown()``, drop the only Python
object, wait for the un-REGISTER's final response or a short timeout, create it again). The decisions live in
pure modules (:mod:`.assignplan`, :mod:`.regstate`, :mod:`.repair`, :mod:`.routemeter`); this module wires them
to pjsua (:mod:`.endpoint`, :mod:`.accounts`, :mod:`.calls`, :mod:`.netwatch`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Iterable

import pjsua2 as pj

from sipfleet.api.models import MAX_ACCOUNTS_PER_WORKER, MAX_CALLS_PER_WORKER, AgentRef, AgentSettings

from .. import __version__
from ..protocol import REJECTED_EXIT_CODE
from ..config import ResolvedAccount
from ..logs import log
from ..metrics import Metrics
from ..siplog import TxRequest, scrub
from ..status import FIRST_REPORT_HOLD_S, Debouncer, now_iso
from . import assignplan, endpoint, tlsport
from .accounts import AccountRuntime, AccountSet
from .calls import CallRegistry
from .eventloop import EventLoop, TaskGen, Wait
from .flowprobe import FlowProbe
from .leaving import Leaving
from .netwatch import NetWatch
from .observe import Observer
from .pacing import CREATE, PaceClient
from .refresher import Refresher
from .retrier import Retrier
from .repairs import Repairs

LOG = logging.getLogger("sipfleet_agent")
UNREGISTER_WAIT_S = 2.0


class AgentError(Exception):
    pass


class Agent:
    """One pjsua2 Endpoint with up to 8 accounts sharing one worker key. See the module docstring."""

    POLL_MS = 10
    IDLE_POLL_S = 0.1  # the longest wait in libHandleEvents when nothing is due (EventLoop.poll_timeout)

    def __init__(self, settings: AgentSettings, sink: Callable[[tuple, str, dict], None], *, name: str,
                 pod: str | None = None, self_heal: bool = False, metrics: Metrics | None = None):
        self.settings = settings
        self.sink = sink
        self.ref = AgentRef(name=name, pod=pod, version=__version__)
        self.self_heal = self_heal or settings.self_heal
        self.metrics = metrics or Metrics()
        self.exit_code = 0
        self.loop = EventLoop()
        self.ep: Any = None
        self.transport_ids: dict[str, int] = {}
        self.sip_port = 0
        self.global_proxy: list[str] = []
        self.accounts: dict[tuple, AccountRuntime] = {}
        self.pjaccounts = AccountSet(self, settings, MAX_ACCOUNTS_PER_WORKER)
        self.calls = CallRegistry(max_calls=MAX_CALLS_PER_WORKER, metrics=self.metrics, call_later=self.loop.call_later,
                                  stopping=lambda: self.stopping, changed=self._update_gauges)
        self.net = NetWatch(settings.sip_address, settings.ip_change_poll_ms / 1000.0, endpoint=lambda: self.ep,
                            call_later=self.loop.call_later, stopping=lambda: self.stopping, metrics=self.metrics)
        self.repairs = Repairs(self)
        self.leaving = Leaving(self)
        self.observer = Observer(self)
        self.refresher = Refresher(self)
        self.retrier = Retrier(self)
        self.tls = tlsport.TlsPort(self)
        self.probe = FlowProbe(self)
        self.pace = PaceClient(self)
        self.tls_from_accounts = False  # Init.tls_from_accounts: no default (unverified) TLS transport
        self._debouncer = Debouncer(settings.status_debounce_ms / 1000.0, self._emit,
                                    first_hold_s=FIRST_REPORT_HOLD_S if settings.status_debounce_ms else 0.0)
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._finished = threading.Event()
        self._start_error: BaseException | None = None
        self.stopping = False
        self._loop_exit = False
        self._first_apply = True
        self.heartbeat = 0.0
        self.pjsip_log_level = 2  # pjsip log lines up to this level (besides errors/warnings) go to the JSON log
        self.tx_hook: Callable[[TxRequest], None] | None = None  # benchmarks
        self.reg_hook: Callable[[AccountRuntime, int, int], None] | None = None  # benchmarks: (rt, code, expires)
        #: tells the supervisor about a refused answer (worker.main); the process ends right after it either way
        self.reject_hook: Callable[[AccountRuntime | None, Any], None] | None = None
        self.answer_hook: Callable[[AccountRuntime], None] | None = None  # breadcrumbs (worker.main)

    # ---------------------------------------------------------------- thread-safe API

    def start(self, initial: list[ResolvedAccount], timeout: float = 30.0, global_proxy: list[str] | None = None) -> None:
        """Start the event thread, the Endpoint (global outbound proxy: ``global_proxy``, else the route of the
        first prevent-mode account of ``initial``) and the accounts."""
        self.global_proxy = list(global_proxy) if global_proxy is not None else _prevent_route(initial)
        self._thread = threading.Thread(target=self._run, name="pjsua", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise AgentError("pjsua endpoint did not start")
        if self._start_error:
            raise AgentError(f"pjsua endpoint failed to start: {self._start_error}")
        self.submit(self._apply, initial).result(timeout)

    def submit(self, fn: Callable, *args: Any) -> Future:
        return self.loop.submit(fn, *args)

    def apply(self, accounts: list[ResolvedAccount]) -> Future:
        return self.submit(self._apply, accounts)

    def request_repair(self, name: str | None = None, trigger: str = "user", token: str | None = None) -> Future:
        return self.submit(self._each, name, lambda rt: self.repairs.start(rt, trigger, token))

    def request_ip_change(self) -> Future:
        return self.submit(self.net.ip_change, "request")

    def request_reregister(self, name: str | None = None) -> Future:
        return self.submit(self._each, name, lambda rt: self.repairs.reregister(rt, None))

    def request_drift(self, name: str | None = None) -> Future:
        """Debug hook (``--debug-hooks``): the known drift path on purpose (see :meth:`.repairs.Repairs.drift`)."""
        return self.submit(self._each, name, self.repairs.drift)

    def request_refresh(self, name: str | None = None) -> Future:
        return self.submit(self._refresh_named, name)

    def request_stop(self, exit_code: int = 0) -> None:
        self.submit(self._stop, exit_code)

    def wait(self, timeout: float | None = None) -> bool:
        return self._finished.wait(timeout)

    def alive(self) -> bool:
        return bool(self._thread and self._thread.is_alive() and time.monotonic() - self.heartbeat < 10.0)

    def snapshot(self, timeout: float = 5.0) -> dict:
        return self.submit(self._snapshot).result(timeout)

    # ---------------------------------------------------------------- event thread

    def call_later(self, delay: float, fn: Callable, *args: Any):  # noqa: ANN201
        return self.loop.call_later(delay, fn, *args)

    def spawn(self, gen: TaskGen, on_error: Callable[[BaseException], None] | None = None) -> None:
        self.loop.spawn(gen, on_error)

    def _run(self) -> None:
        try:
            st = endpoint.start(self, address=self.settings.sip_address, port=self.settings.sip_port,
                                global_proxy=self.global_proxy, max_calls=MAX_CALLS_PER_WORKER,
                                user_agent=f"sipfleet-agent/{__version__}", default_tls=not self.tls_from_accounts,
                                dead_flow_seconds=self.settings.dead_flow_seconds)
            self.ep, self.transport_ids, self.sip_port = st.ep, st.transport_ids, st.sip_port
            log(LOG, logging.INFO, "endpoint started", sip_address=self.settings.sip_address, sip_port=self.sip_port,
                global_proxy=self.global_proxy, pjsip=st.version)
        except BaseException as e:  # noqa: BLE001
            self._start_error = e
            LOG.exception("endpoint start failed")
            self._started.set()
            self._finished.set()
            self.loop.close()
            return
        self.heartbeat = time.monotonic()
        self._started.set()
        self.loop.call_later(self.net.poll_s, self.net.poll)
        self.probe.start()
        try:
            while not self._loop_exit:
                busy = self._debouncer.next_due() is not None  # a status to flush soon
                wait_s = self.POLL_MS / 1000 if busy else self.loop.poll_timeout(self.POLL_MS / 1000, self.IDLE_POLL_S)
                self.ep.libHandleEvents(int(wait_s * 1000))
                self.heartbeat = time.monotonic()
                self.loop.turn()
                self.calls.sweep()
                self._debouncer.flush()
        except BaseException:  # noqa: BLE001
            LOG.exception("event loop crashed")
            self.exit_code = self.exit_code or 1
        finally:
            try:
                endpoint.destroy(self.ep, self.calls, self._drop_all)
                self.ep = None
                log(LOG, logging.INFO, "endpoint destroyed")
            finally:
                self._finished.set()
                self.loop.close()

    def _drop_all(self) -> None:
        for rt in [*self.accounts.values(), *self.leaving.accounts()]:
            self.drop_account(rt)

    def _each(self, name: str | None, fn: Callable[[AccountRuntime], None]) -> int:
        n = 0
        for rt in list(self.accounts.values()):
            if name is None or rt.name == name:
                fn(rt)
                n += 1
        return n

    # ---------------------------------------------------------------- assignment

    def _apply(self, accounts: list[ResolvedAccount]) -> None:
        if self.stopping:
            return
        if len(accounts) > MAX_ACCOUNTS_PER_WORKER:
            raise AgentError(f"{len(accounts)} accounts: one worker hosts at most {MAX_ACCOUNTS_PER_WORKER}")
        first, self._first_apply = self._first_apply, False
        wanted = {a.key: a for a in accounts}
        self.tls.ensure(accounts)
        hosted = {k: assignplan.Hosted(rt.res.recreate_key(), rt.status.agent.repair_token_ack,
                                       rt.status.agent.reregister_token_ack, tuple(rt.pending_tokens))
                  for k, rt in self.accounts.items()}
        for act in assignplan.plan(hosted, accounts, first):
            res = wanted.get(act.key)
            rt = self.accounts.get(act.key)
            if act.kind == "remove":
                self._remove_account(rt)
            elif act.kind == "create":
                rt = self.accounts[act.key] = AccountRuntime(res, self.ref)
                if act.ack_tokens:  # a fresh process creates fresh accounts: that carries out outstanding tokens
                    rt.status.set_agent(repair_token_ack=res.spec.repair_token,
                                        reregister_token_ack=res.spec.reregister_token)
                if self.leaving.holds(act.key):  # the same key still leaving: its un-REGISTER comes first
                    later = (lambda rt=rt: rt.removed or self.stopping or self.create_account(rt))
                    self.spawn(self.leaving.then(act.key, later))
                else:
                    self.create_account(rt)
            elif act.kind == "recreate":
                log(LOG, logging.INFO, "account changed: re-creating", account=res.name)
                rt.res = res
                rt.status.set_route(mode=res.spec.route_mode,
                                    desired=list(res.spec.route) + list(rt.status.route.service_route))
                self.spawn(self.recreate(rt))
            elif act.kind == "update":
                rt.res = res  # policies, self-heal, tokens: no re-REGISTER
            elif act.kind == "repair":
                rt.pending_tokens.append(act.token)
                self.repairs.start(rt, "operator", act.token)
            elif act.kind == "reregister":
                self.repairs.reregister(rt, act.token)
        self.tls.after_apply()
        self._update_gauges()

    def mark(self, rt: AccountRuntime) -> None:
        if not rt.removed:
            self._debouncer.mark(rt.key, rt.doc)

    def _emit(self, key: tuple, doc: dict) -> None:
        rt = self.accounts.get(key)
        if rt is None:
            return
        try:
            self.sink(key, rt.name, doc)
        except Exception:
            LOG.exception("status sink failed")

    # ---------------------------------------------------------------- accounts

    def create_account(self, rt: AccountRuntime) -> None:
        if rt.acc is not None:
            return
        self.refresher.cancel(rt)
        rt.status.set_registration(state="Registering", code=None, reason=None, registered_since=None,
                                   expires_seconds=None, expires_at=None, failure_reason=None,
                                   next_attempt_at=None, next_attempt_reason=None,
                                   redirected_to=rt.registrar_override)
        paced = self.pace.paced(rt) and not self.pace.take_grant(rt)
        err = self.pjaccounts.create(rt, self.global_proxy, self.transport_ids, register=not paced)
        if err is None and paced:
            self.pace.send(rt, CREATE)
        if err is not None:
            log(LOG, logging.ERROR, err, account=rt.name)
            rt.status.set_registration(state="Failed", code=None, reason=scrub(err), last_failure=now_iso())
        else:
            log(LOG, logging.INFO, "account created", account=rt.name, aor=rt.res.spec.aor,
                mode=rt.res.spec.route_mode, route=rt.res.spec.route)
        self.mark(rt)
        self._update_gauges()

    def drop_account(self, rt: AccountRuntime) -> bool:
        sent = self.pjaccounts.drop(rt, self.calls)
        self._update_gauges()
        return sent

    def _remove_account(self, rt: AccountRuntime) -> None:
        """Out of the assignment now; its pjsua account is deleted once no REGISTER of it is in flight
        (:mod:`.leaving`: else pjsua sends no un-REGISTER and the binding lingers at the registrar)."""
        log(LOG, logging.INFO, "account removed", account=rt.name)
        rt.removed = True
        self.accounts.pop(rt.key, None)
        self.pace.forget(rt)
        self._debouncer.forget(rt.key)
        self.loop.cancel(rt.retry_timer)
        self.loop.cancel(rt.heal_timer)
        self.refresher.cancel(rt)
        self.leaving.remove(rt)

    def recreate(self, rt: AccountRuntime) -> TaskGen:
        """(paced: its turn,) shutdown, drop, wait for the un-REGISTER's final response (short timeout), create again."""
        rt.busy = True
        try:
            self.loop.cancel(rt.retry_timer)
            if self.pace.paced(rt):
                yield from self.pace.turn(rt)
                if rt.removed or self.stopping:
                    return
            if self.drop_account(rt):
                self.pace.unregistered(rt)
                yield Wait(min(UNREGISTER_WAIT_S, self.settings.unregister_timeout_seconds), lambda: rt.meter.unreg_done)
            rt.meter.retiring = False
            if rt.removed or self.stopping:
                return
            self.create_account(rt)
        finally:
            rt.busy = False
            rt.meter.retiring = False
            self.repairs.after_busy(rt)

    def _refresh_named(self, name: str | None) -> int:
        n = 0
        for rt in list(self.accounts.values()):
            if (name is None or rt.name == name) and rt.acc is not None:
                try:
                    rt.acc.setRegistration(True)
                    n += 1
                except pj.Error as e:
                    LOG.warning("refresh failed: %s", e.info())
        return n

    # ---------------------------------------------------------------- pjsua callbacks (see .observe)

    def on_log(self, level: int, msg: str) -> None:
        self.observer.on_log(level, msg)

    def on_rejected(self, rt: AccountRuntime | None, verdict: Any) -> None:
        """An answer pjsua must not process is in its receive path (:mod:`.responseguard`): report it and end this
        process now, on the pjsua thread, before the registration layer gets the answer. Never returns."""
        try:
            log(LOG, logging.ERROR, "registrar answer refused: ending the worker before pjsua processes it",
                account=rt.name if rt else None, reason=verdict.reason, detail=verdict.message)
            if self.reject_hook is not None:
                self.reject_hook(rt, verdict)
            for h in logging.getLogger().handlers:
                h.flush()
        finally:
            os._exit(REJECTED_EXIT_CODE)

    def on_reg_state(self, rt: AccountRuntime, prm: "pj.OnRegStateParam") -> None:
        self.observer.on_reg_state(rt, prm)

    def on_transport_state(self, state: int, last_error: int, tp_type: str = "", prm: Any = None) -> None:
        self.observer.on_transport_state(state, last_error, tp_type)
        r = tlsport.report(prm) if prm is not None else None
        if r is not None:
            self.tls.on_state(r)

    def _update_gauges(self) -> None:
        counts = {"Registering": 0, "Registered": 0, "Failed": 0, "Unregistered": 0}
        for rt in self.accounts.values():
            counts[rt.status.registration.state] = counts.get(rt.status.registration.state, 0) + 1
        for k, v in counts.items():
            self.metrics.registrations.labels(state=k).set(v)
        self.metrics.accounts.set(self.pjaccounts.count)
        self.metrics.active_calls.set(len(self.calls))

    # ---------------------------------------------------------------- stop

    def _stop(self, exit_code: int = 0) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.exit_code = exit_code
        self.spawn(self._stop_task(), on_error=lambda e: setattr(self, "_loop_exit", True))

    def _stop_task(self) -> TaskGen:
        yield from self.leaving.stop_all()
        self._debouncer.flush(force=True)
        self._drop_all()
        yield Wait(0.05)
        self._loop_exit = True

    # ---------------------------------------------------------------- introspection

    def _snapshot(self) -> dict:
        from sipfleet.api.models import SentRequest

        def sent(req: TxRequest, at: str) -> dict:
            return SentRequest(method=req.method, transport=req.transport, destination=req.destination,
                               request_uri=req.request_uri, route=list(req.route), at=at).to_api()

        return {
            "agent": self.ref.name, "sipAddress": self.settings.sip_address, "sipPort": self.sip_port,
            "globalProxy": self.global_proxy, "activeCalls": len(self.calls),
            "accounts": [{"name": rt.name, "namespace": rt.res.spec.namespace, "created": rt.acc is not None,
                          "status": rt.doc(), "lastRegister": sent(*rt.last_register) if rt.last_register else None}
                         for rt in self.accounts.values()],
        }


def _prevent_route(accounts: Iterable[ResolvedAccount]) -> list[str]:
    for a in accounts:
        if a.spec.route_mode == "prevent" and a.spec.route:
            return a.applied_route()
    return []
