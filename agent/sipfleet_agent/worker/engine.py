"""The agent core: one pjsua2 Endpoint driven by one dedicated thread.

Threading (see shared sip-facts): ``threadCnt=0`` and a single thread (:class:`Agent`'s event thread)
loops on ``libHandleEvents``; every pjsua call and every pjsua callback happens on that thread. Other
threads (signals, HTTP, Kubernetes) only *submit* work through a queue. Agent state is therefore owned
by the event thread and needs no locks.

Route measurement: a ``LogWriter`` with message logging sees every transmitted request. The Route
headers of the last REGISTER an account sent are its *effective* route; they are compared with the
configured route (``siplog.routes_equal``) and, when the first route entry is an IP literal, the
destination the REGISTER was sent to is compared with it too.

Repair: re-create the account: ``shutdown()``, drop the only Python object, wait for the un-REGISTER's
final response (or a short timeout), create a new ``Account`` with the same config.
"""

from __future__ import annotations

import collections
import gc
import heapq
import itertools
import logging
import os
import queue
import random
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, Generator, Iterable

import pjsua2 as pj

from sipfleet.api.models import (
    MAX_ACCOUNTS_PER_WORKER as MAX_ACCOUNTS_PER_AGENT,
    MAX_CALLS_PER_WORKER,
    AgentRef,
    AgentSettings,
    RepairRecord,
    SentRequest,
)

from .. import __version__
from ..config import ResolvedAccount
from ..logs import log
from ..metrics import Metrics
from ..netaddr import address_fingerprint, describe_change, link_usable
from ..siplog import (
    RxResponse,
    TxRequest,
    normalize_uri,
    parse_rx_response,
    parse_tx_request,
    parse_uri,
    routes_equal,
    scrub,
    service_route_from_message,
    uri_hostport,
)
from ..status import AccountStatus, Debouncer, now_iso

LOG = logging.getLogger("sipfleet_agent")
PJ_LOG = logging.getLogger("sipfleet_agent.pjsip")

#: Final codes after which pjsua schedules its own retry (it does not retry e.g. 401/403/404).
PJSUA_RETRIED = {408, 480, 500, 502, 503, 504}
REPAIR_TIMEOUT_S = 10.0
UNREGISTER_WAIT_S = 2.0
SELF_HEAL_MIN_INTERVAL_S = 5.0
EXIT_RESTART = 3


class AgentError(Exception):
    pass


class RestartRequired(AgentError):
    """The change needs a fresh Endpoint (prevent mode: the global outbound proxy is fixed at libInit)."""


@dataclass
class Wait:
    """What a task generator yields: resume when ``pred()`` is true or after ``timeout`` seconds."""

    timeout: float
    pred: Callable[[], bool] | None = None


Task = Generator[Wait, None, None]


def _release(obj: Any) -> None:
    """Make sure the caller's reference is the last one, so ``del`` destroys the C++ object at once.

    A full ``gc.collect()`` costs tens of milliseconds with everything imported; it only runs when
    something else (a reference cycle) still holds the object.
    """
    import sys

    # getrefcount: the caller's variable + this argument + getrefcount's own argument
    if sys.getrefcount(obj) > 3:
        gc.collect()


# --------------------------------------------------------------------------------------------------
# pjsua2 subclasses: thin, every callback goes straight to the Agent (exceptions never reach SWIG)
# --------------------------------------------------------------------------------------------------


class _LogWriter(pj.LogWriter):
    def __init__(self, agent: "Agent"):
        super().__init__()
        self.agent = agent

    def write(self, entry: "pj.LogEntry") -> None:
        try:
            self.agent._on_log(entry.level, entry.msg)
        except Exception:  # pragma: no cover - never let an exception into pjsip
            LOG.exception("log writer failed")


class _Endpoint(pj.Endpoint):
    def __init__(self, agent: "Agent"):
        super().__init__()
        self.agent = agent

    def onTransportState(self, prm: "pj.OnTransportStateParam") -> None:
        try:
            self.agent._on_transport_state(prm.state, prm.lastError)
        except Exception:
            LOG.exception("onTransportState failed")

    def onIpChangeProgress(self, prm: "pj.OnIpChangeProgressParam") -> None:
        try:
            self.agent._on_ip_change_progress(prm.op, prm.status)
        except Exception:
            LOG.exception("onIpChangeProgress failed")

    def onRejectedIncomingCall(self, prm: "pj.OnRejectedIncomingCallParam") -> None:
        try:
            self.agent._on_rejected_call(prm.statusCode)
        except Exception:
            LOG.exception("onRejectedIncomingCall failed")


class _Account(pj.Account):
    def __init__(self, agent: "Agent", rt: "AccountRuntime"):
        super().__init__()
        self.agent = agent
        self.rt: AccountRuntime | None = rt

    def onRegState(self, prm: "pj.OnRegStateParam") -> None:
        try:
            if self.rt is not None:
                self.agent._on_reg_state(self.rt, prm)
        except Exception:
            LOG.exception("onRegState failed")

    def onIncomingCall(self, prm: "pj.OnIncomingCallParam") -> None:
        try:
            self.agent._on_incoming_call(self, prm)
        except Exception:
            LOG.exception("onIncomingCall failed")


class _Call(pj.Call):
    def __init__(self, agent: "Agent", acc: _Account, call_id: int, rt: "AccountRuntime | None"):
        super().__init__(acc, call_id)
        self.agent = agent
        self.rt = rt
        self.pj_id = call_id
        self.result = "ringing"
        self.answered_at: float | None = None

    def onCallState(self, prm: "pj.OnCallStateParam") -> None:
        try:
            ci = self.getInfo()
            if ci.state == pj.PJSIP_INV_STATE_DISCONNECTED:
                self.agent._on_call_disconnected(self, ci.lastStatusCode)
        except Exception:
            LOG.exception("onCallState failed")

    def onCallMediaState(self, prm: "pj.OnCallMediaStateParam") -> None:
        return None  # no audio device: nothing to connect


# --------------------------------------------------------------------------------------------------
# per-account runtime state (survives re-creation of the pjsua account)
# --------------------------------------------------------------------------------------------------


def _sent_request(req: TxRequest, at: str) -> dict:
    return SentRequest(method=req.method, transport=req.transport, destination=req.destination,
                       request_uri=req.request_uri, route=list(req.route), at=at).to_api()


def _aor_key(uri: str) -> tuple:
    u = parse_uri(uri)
    if u is None:
        return ("raw", uri.strip().lower())
    return (u.user or "", u.host, u.port or 5060)


class AccountRuntime:
    def __init__(self, agent: "Agent", res: ResolvedAccount, global_proxy: list[str]):
        self.agent = agent
        self.res = res
        self.acc: _Account | None = None
        self.retiring = False
        self.unreg_sent = False
        self.unreg_call_id: str | None = None
        self.unreg_done = False
        self.removed = False
        self.repair: RepairRecord | None = None
        self.repair_t0: float | None = None
        self.repair_drift_t0: float | None = None
        self.pending_tokens: list[str] = []
        self.busy = False  # a re-create / reregister task is running
        self.last_self_heal = 0.0
        self.last_tx_register = 0.0
        self.last_failure_mono = 0.0
        self.last_register: tuple[TxRequest, str] | None = None
        self.seen_tx: collections.deque = collections.deque(maxlen=32)
        #: Call-IDs used by the current pjsua account's registration clients, and by deleted ones: a
        #: deleted account whose REGISTER was still in flight (un-REGISTER refused with EBUSY) may still
        #: answer a 401 with one more REGISTER; that one says nothing about the current route.
        self.current_call_ids: set[str] = set()
        self.retired_call_ids: collections.deque = collections.deque(maxlen=32)
        self.retry_timer: Any = None
        self.status = AccountStatus(
            mode=res.spec.route_mode,
            desired=list(res.spec.route),
            agent=AgentRef(name=agent.name, pod=agent.pod, version=__version__),
        )
        self.global_proxy = global_proxy

    @property
    def name(self) -> str:
        return self.res.name

    @property
    def key(self) -> tuple[str | None, str]:
        return self.res.key

    @property
    def res(self) -> ResolvedAccount:
        return self._res

    @res.setter
    def res(self, value: ResolvedAccount) -> None:
        self._res = value
        self.aor_key = _aor_key(value.spec.aor)
        t = value.spec.transport
        self.desired_norm = [normalize_uri(r, t) for r in value.spec.route]
        self.first_hop_expected = uri_hostport(value.spec.route[0], t) if value.spec.route else None

    def desired_register_route(self) -> list[str]:
        return list(self.res.spec.route)

    def self_heal(self) -> bool:
        return self.res.spec.self_heal or self.agent.self_heal

    def doc(self) -> dict:
        return self.status.document()


# --------------------------------------------------------------------------------------------------
# the agent
# --------------------------------------------------------------------------------------------------


class Agent:
    """One pjsua2 Endpoint with up to 8 accounts sharing one route. See the module docstring."""

    POLL_MS = 10

    def __init__(
        self,
        settings: AgentSettings,
        sink: Callable[[tuple, str, dict], None],
        *,
        name: str,
        pod: str | None = None,
        self_heal: bool = False,
        metrics: Metrics | None = None,
        on_exit: Callable[[int], None] | None = None,
    ):
        self.settings = settings
        self.sink = sink
        self.name = name
        self.pod = pod
        self.self_heal = self_heal or settings.self_heal
        self.metrics = metrics or Metrics()
        self.on_exit = on_exit
        self.exit_code = 0
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._timers: list = []
        self._seq = itertools.count()
        self._tasks: list[list] = []
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._finished = threading.Event()
        self._start_error: BaseException | None = None
        self._stop_requested = False
        self._stopping = False
        self._loop_exit = False
        self.heartbeat = 0.0
        self.ep: _Endpoint | None = None
        self._lw: _LogWriter | None = None
        self.transport_ids: dict[str, int] = {}
        self.sip_port = 0
        self.global_proxy: list[str] = []
        self.accounts: dict[tuple, AccountRuntime] = {}
        self.pj_account_count = 0
        self.calls: dict[int, _Call] = {}
        self._graveyard: list = []
        self._debouncer = Debouncer(settings.status_debounce_ms / 1000.0, self._emit)
        self._addr_fp: tuple | None = None
        self._ip_change_pending = False
        self._ip_change_retries = 0
        self._first_apply = True
        self.ready_flag = False
        self.tx_hook: Callable[[TxRequest], None] | None = None  # benchmarks
        self.reg_hook: Callable[[AccountRuntime, int, int], None] | None = None  # benchmarks: (rt, code, expires)
        #: pjsip log lines up to this level (besides errors/warnings) are forwarded to the JSON log
        self.pjsip_log_level = 2
        self._from_cache: dict[str, tuple] = {}

    # ---------------------------------------------------------------- thread-safe API

    def start(self, initial: list[ResolvedAccount], timeout: float = 30.0, global_proxy: list[str] | None = None) -> None:
        """Start the event thread, create the Endpoint and the accounts.

        The global outbound proxy (routeMode prevent) is ``global_proxy`` (the worker key's route) or else
        the route of the first prevent-mode account of ``initial``.
        """
        self.global_proxy = list(global_proxy) if global_proxy is not None else self._prevent_route(initial)
        self._thread = threading.Thread(target=self._run, name="pjsua", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise AgentError("pjsua endpoint did not start")
        if self._start_error:
            raise AgentError(f"pjsua endpoint failed to start: {self._start_error}")
        self.submit(self._apply, initial).result(timeout)

    def submit(self, fn: Callable, *args: Any) -> Future:
        fut: Future = Future()
        self._q.put((fn, args, fut))
        if self._finished.is_set():
            self._fail_pending()
        return fut

    def apply(self, accounts: list[ResolvedAccount]) -> Future:
        return self.submit(self._apply, accounts)

    def request_repair(self, name: str | None = None, trigger: str = "user", token: str | None = None) -> Future:
        return self.submit(self._repair_named, name, trigger, token)

    def request_ip_change(self) -> Future:
        return self.submit(self._ip_change, "request")

    def request_reregister(self, name: str | None = None) -> Future:
        return self.submit(self._reregister_named, name)

    def request_refresh(self, name: str | None = None) -> Future:
        return self.submit(self._refresh_named, name)

    def request_stop(self, exit_code: int = 0) -> None:
        self.submit(self._stop, exit_code)

    def wait(self, timeout: float | None = None) -> bool:
        return self._finished.wait(timeout)

    def alive(self) -> bool:
        return bool(self._thread and self._thread.is_alive() and time.monotonic() - self.heartbeat < 10.0)

    def ready(self) -> bool:
        return self.alive() and self.ready_flag

    def snapshot(self, timeout: float = 5.0) -> dict:
        return self.submit(self._snapshot).result(timeout)

    # ---------------------------------------------------------------- event thread

    def _run(self) -> None:
        try:
            self._init_endpoint()
        except BaseException as e:  # noqa: BLE001
            self._start_error = e
            LOG.exception("endpoint start failed")
            self._started.set()
            self._finished.set()
            return
        self.heartbeat = time.monotonic()
        self._started.set()
        self.call_later(self.settings.ip_change_poll_ms / 1000.0, self._poll_addresses)
        try:
            while not self._loop_exit:
                self.ep.libHandleEvents(self.POLL_MS)
                self.heartbeat = time.monotonic()
                self._drain()
                self._run_timers()
                self._step_tasks()
                if self._graveyard:
                    self._graveyard.clear()
                self._debouncer.flush()
        except BaseException:  # noqa: BLE001
            LOG.exception("event loop crashed")
            self.exit_code = self.exit_code or 1
        finally:
            try:
                self._destroy()
            finally:
                self._finished.set()
                self._fail_pending()
                if self.on_exit:
                    self.on_exit(self.exit_code)

    def _drain(self) -> None:
        while True:
            try:
                fn, args, fut = self._q.get_nowait()
            except queue.Empty:
                return
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn(*args))
            except BaseException as e:  # noqa: BLE001
                fut.set_exception(e)

    def _fail_pending(self) -> None:
        while True:
            try:
                _, _, fut = self._q.get_nowait()
            except queue.Empty:
                return
            if fut.set_running_or_notify_cancel():
                fut.set_exception(AgentError("agent stopped"))

    def call_later(self, delay: float, fn: Callable, *args: Any) -> list:
        entry = [time.monotonic() + max(0.0, delay), next(self._seq), fn, args, False]
        heapq.heappush(self._timers, entry)
        return entry

    @staticmethod
    def cancel(entry: list | None) -> None:
        if entry is not None:
            entry[4] = True

    def _run_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, fn, args, cancelled = heapq.heappop(self._timers)
            if cancelled:
                continue
            try:
                fn(*args)
            except Exception:
                LOG.exception("timer failed")

    def spawn(self, gen: Task, on_error: Callable[[BaseException], None] | None = None) -> None:
        self._tasks.append([gen, None, on_error])
        self._advance(self._tasks[-1])

    def _advance(self, task: list) -> None:
        gen = task[0]
        try:
            w = next(gen)
            task[1] = (w, time.monotonic() + w.timeout)
        except StopIteration:
            task[1] = "done"
        except Exception as e:  # noqa: BLE001
            LOG.exception("task failed")
            task[1] = "done"
            if task[2]:
                task[2](e)

    def _step_tasks(self) -> None:
        if not self._tasks:
            return
        now = time.monotonic()
        for task in list(self._tasks):
            state = task[1]
            if state == "done":
                continue
            w, deadline = state
            if now >= deadline or (w.pred is not None and w.pred()):
                self._advance(task)
        self._tasks = [t for t in self._tasks if t[1] != "done"]

    # ---------------------------------------------------------------- endpoint lifecycle

    def _init_endpoint(self) -> None:
        ep = self.ep = _Endpoint(self)
        # pjlib prints a few lines to fd 1 before our LogWriter is installed: not on stdout.
        saved = os.dup(1)
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 1)
            ep.libCreate()
        finally:
            os.dup2(saved, 1)
            os.close(saved)
            os.close(devnull)
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.mainThreadOnly = False
        cfg.uaConfig.maxCalls = MAX_CALLS_PER_WORKER
        cfg.uaConfig.userAgent = f"sipfleet-agent/{__version__}"
        for uri in self.global_proxy:
            cfg.uaConfig.outboundProxies.append(uri)
        self._lw = _LogWriter(self)
        cfg.logConfig.writer = self._lw
        cfg.logConfig.level = 4
        cfg.logConfig.consoleLevel = 4
        cfg.logConfig.msgLogging = 1
        cfg.logConfig.decor = 0
        cfg.medConfig.noVad = True
        cfg.medConfig.ecTailLen = 0
        cfg.medConfig.threadCnt = 0
        ep.libInit(cfg)
        # libDestroy() deletes the writer: C++ owns it from here on (sip-facts).
        self._lw.__disown__()
        self._create_transports()
        ep.audDevManager().setNullDev()
        ep.libStart()
        self._addr_fp = address_fingerprint(self.settings.sip_address)
        log(LOG, logging.INFO, "endpoint started", sip_address=self.settings.sip_address, sip_port=self.sip_port,
            global_proxy=self.global_proxy, pjsip=ep.libVersion().full)

    def _create_transports(self) -> None:
        addr = self.settings.sip_address
        want = self.settings.sip_port
        last_err: Exception | None = None
        for _ in range(20):
            udp_id = None
            try:
                tc = pj.TransportConfig()
                tc.boundAddress = addr
                tc.publicAddress = addr
                tc.port = want
                udp_id = self.ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tc)
                port = int(self.ep.transportGetInfo(udp_id).localName.rsplit(":", 1)[1])
                tc2 = pj.TransportConfig()
                tc2.boundAddress = addr
                tc2.publicAddress = addr
                tc2.port = port
                tcp_id = self.ep.transportCreate(pj.PJSIP_TRANSPORT_TCP, tc2)
                self.transport_ids = {"udp": udp_id, "tcp": tcp_id}
                self.sip_port = port
                try:
                    tc3 = pj.TransportConfig()
                    tc3.boundAddress = addr
                    tc3.publicAddress = addr
                    tc3.port = 0
                    self.transport_ids["tls"] = self.ep.transportCreate(pj.PJSIP_TRANSPORT_TLS, tc3)
                except pj.Error as e:
                    LOG.warning("no TLS transport: %s", e.info())
                return
            except pj.Error as e:
                last_err = AgentError(e.info())
                if udp_id is not None:
                    try:
                        self.ep.transportClose(udp_id)
                    except pj.Error:
                        pass
                if want:
                    break
        raise AgentError(f"cannot bind SIP transports on {addr}:{want}: {last_err}")

    def _destroy(self) -> None:
        ep = self.ep
        if ep is None:
            return
        try:
            if self.calls:
                try:
                    ep.hangupAllCalls()
                except pj.Error:
                    pass
            # Destroy every Call before libDestroy (a live Call afterwards aborts the process).
            self.calls.clear()
            self._graveyard.clear()
            for rt in list(self.accounts.values()):
                self._drop_account(rt)
            gc.collect()
            ep.libDestroy()
        except pj.Error as e:
            LOG.error("libDestroy failed: %s", e.info())
        self.ep = None
        gc.collect()
        log(LOG, logging.INFO, "endpoint destroyed")

    # ---------------------------------------------------------------- assignment

    @staticmethod
    def _prevent_route(accounts: Iterable[ResolvedAccount]) -> list[str]:
        for a in accounts:
            if a.spec.route_mode == "prevent" and a.spec.route:
                return a.applied_route()
        return []

    def _check_route_compatible(self, accounts: list[ResolvedAccount]) -> None:
        want = self._prevent_route(accounts)
        if self.global_proxy:
            for a in accounts:
                if not routes_equal(a.applied_route(), self.global_proxy):
                    raise RestartRequired(
                        f"account {a.name}: route {a.spec.route} differs from this process's global outbound "
                        f"proxy {self.global_proxy}; a fresh endpoint is needed"
                    )
        elif want:
            raise RestartRequired(
                f"routeMode prevent needs the global outbound proxy {want}, this endpoint was started without one"
            )

    def _apply(self, accounts: list[ResolvedAccount]) -> None:
        if self._stopping:
            return
        if len(accounts) > MAX_ACCOUNTS_PER_AGENT:
            raise AgentError(f"{len(accounts)} accounts: one agent hosts at most {MAX_ACCOUNTS_PER_AGENT}")
        try:
            self._check_route_compatible(accounts)
        except RestartRequired as e:
            log(LOG, logging.ERROR, "restart required: exiting so the process is started again with the new route",
                reason=str(e), exit_code=EXIT_RESTART)
            self._stop(EXIT_RESTART)
            raise
        first = self._first_apply
        self._first_apply = False
        wanted = {a.key: a for a in accounts}
        for key in [k for k in self.accounts if k not in wanted]:
            self._remove_account(self.accounts[key])
        for key, res in wanted.items():
            rt = self.accounts.get(key)
            if rt is None:
                rt = AccountRuntime(self, res, self.global_proxy)
                self.accounts[key] = rt
                if first:
                    # A fresh process creates fresh accounts: outstanding tokens are carried out by that.
                    rt.status.set_agent(repair_token_ack=res.spec.repair_token, reregister_token_ack=res.spec.reregister_token)
                self._create_account(rt)
                continue
            old = rt.res
            if old.recreate_key() != res.recreate_key():
                log(LOG, logging.INFO, "account changed: re-creating", account=res.name)
                rt.res = res
                rt.status.set_route(mode=res.spec.route_mode, desired=list(res.spec.route) + list(rt.status.route.service_route))
                self._spawn_recreate(rt)
            else:
                rt.res = res  # policies, self-heal, tokens: no re-REGISTER
            spec = res.spec
            if spec.repair_token and spec.repair_token != rt.status.agent.repair_token_ack and spec.repair_token not in rt.pending_tokens:
                rt.pending_tokens.append(spec.repair_token)
                self._start_repair(rt, "operator", spec.repair_token)
            if spec.reregister_token and spec.reregister_token != rt.status.agent.reregister_token_ack:
                self._start_reregister(rt, spec.reregister_token)
        self._update_ready()
        self._update_gauges()

    def _update_ready(self) -> None:
        self.ready_flag = all(rt.acc is not None for rt in self.accounts.values())

    def _mark(self, rt: AccountRuntime) -> None:
        if rt.removed:
            return
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

    def _account_config(self, rt: AccountRuntime) -> "pj.AccountConfig":
        res = rt.res
        spec = res.spec
        cfg = pj.AccountConfig()
        cfg.idUri = spec.aor
        cfg.regConfig.registrarUri = res.applied_registrar()
        cfg.regConfig.timeoutSec = res.expires
        cfg.regConfig.retryIntervalSec = spec.registration.retry_interval_seconds
        cfg.regConfig.firstRetryIntervalSec = spec.registration.first_retry_interval_seconds
        cfg.regConfig.randomRetryIntervalSec = spec.registration.jitter_seconds
        cfg.regConfig.delayBeforeRefreshSec = min(5, max(1, res.expires // 4))
        cfg.regConfig.unregWaitMsec = int(self.settings.unregister_timeout_seconds * 1000)
        # routeMode account: the route per account. In a process started with a global outbound proxy
        # (some account is in prevent mode) the proxy is already there for every account: adding it
        # again would put it twice into the Route set.
        if spec.route_mode == "account" and not self.global_proxy:
            for uri in res.applied_route():
                cfg.sipConfig.proxies.append(uri)
        cfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", res.creds.realm, res.creds.username, 0, res.creds.password))
        if spec.transport not in self.transport_ids:
            raise AgentError(f"transport {spec.transport} is not available in this agent")
        cfg.sipConfig.transportId = self.transport_ids[spec.transport]
        cfg.natConfig.sipOutboundUse = 0
        cfg.natConfig.viaRewriteUse = 0
        cfg.natConfig.sdpNatRewriteUse = 0
        cfg.mediaConfig.transportConfig.boundAddress = self.settings.sip_address
        cfg.mediaConfig.transportConfig.publicAddress = self.settings.sip_address
        return cfg

    def _create_account(self, rt: AccountRuntime) -> None:
        if rt.acc is not None:
            return
        if self.pj_account_count >= MAX_ACCOUNTS_PER_AGENT:
            # The 9th Account.create() aborts the whole process (PJSUA_MAX_ACC): refuse before pjsua sees it.
            msg = f"refused: this agent already hosts {MAX_ACCOUNTS_PER_AGENT} accounts (pjsua limit)"
            log(LOG, logging.ERROR, msg, account=rt.name)
            rt.status.set_registration(state="Failed", code=None, reason=msg, last_failure=now_iso())
            self._mark(rt)
            return
        rt.status.set_registration(state="Registering", code=None, reason=None, registered_since=None, expires_seconds=None)
        acc = _Account(self, rt)
        rt.acc = acc
        try:
            acc.create(self._account_config(rt), False)
        except (pj.Error, AgentError) as e:
            rt.acc = None
            acc.rt = None
            _release(acc)
            del acc
            reason = f"account create failed: {e.info() if isinstance(e, pj.Error) else e}"
            log(LOG, logging.ERROR, reason, account=rt.name)
            rt.status.set_registration(state="Failed", code=None, reason=scrub(reason), last_failure=now_iso())
            self._mark(rt)
            return
        self.pj_account_count += 1
        log(LOG, logging.INFO, "account created", account=rt.name, aor=rt.res.spec.aor, mode=rt.res.spec.route_mode,
            route=rt.res.spec.route)
        self._mark(rt)
        self._update_ready()
        self._update_gauges()

    def _hangup_calls_of(self, rt: AccountRuntime) -> None:
        for call in list(self.calls.values()):
            if call.rt is rt:
                try:
                    op = pj.CallOpParam()
                    op.statusCode = 503
                    call.hangup(op)
                except pj.Error:
                    pass
        call = None  # noqa: F841 - do not keep the loop variable's Call alive

    def _drop_account(self, rt: AccountRuntime) -> bool:
        """``shutdown()`` the pjsua account and drop its only Python object. True when an un-REGISTER went out."""
        acc = rt.acc
        if acc is None:
            return False
        self._hangup_calls_of(rt)
        rt.retiring = True
        rt.retired_call_ids.extend(c for c in rt.current_call_ids if c not in rt.retired_call_ids)
        rt.current_call_ids.clear()
        rt.unreg_sent = False
        rt.unreg_done = False
        rt.unreg_call_id = None
        rt.acc = None
        acc.rt = None
        try:
            acc.shutdown()
        except pj.Error as e:
            LOG.warning("account shutdown failed: %s", e.info())
        # Exactly one Python object per live account: the stale object must be gone before a new
        # Account can reuse the slot (Account.shutdown() does not reset the C++ id).
        _release(acc)
        del acc
        self.pj_account_count -= 1
        self._update_ready()
        self._update_gauges()
        return rt.unreg_sent

    def _remove_account(self, rt: AccountRuntime) -> None:
        log(LOG, logging.INFO, "account removed", account=rt.name)
        rt.removed = True
        self._drop_account(rt)
        rt.retiring = False
        self.accounts.pop(rt.key, None)
        self._debouncer.forget(rt.key)
        self.cancel(rt.retry_timer)

    def _recreate(self, rt: AccountRuntime) -> Task:
        """shutdown, drop, wait for the un-REGISTER's final response (short timeout), create again."""
        rt.busy = True
        try:
            self.cancel(rt.retry_timer)
            sent = self._drop_account(rt)
            if sent:
                yield Wait(min(UNREGISTER_WAIT_S, self.settings.unregister_timeout_seconds), lambda: rt.unreg_done)
            rt.retiring = False
            if rt.removed or self._stopping:
                return
            self._create_account(rt)
        finally:
            rt.busy = False
            rt.retiring = False

    def _spawn_recreate(self, rt: AccountRuntime) -> None:
        self.spawn(self._recreate(rt))

    # ---------------------------------------------------------------- repair

    def _repair_named(self, name: str | None, trigger: str, token: str | None) -> int:
        n = 0
        for rt in list(self.accounts.values()):
            if name is None or rt.name == name:
                self._start_repair(rt, trigger, token)
                n += 1
        return n

    def _start_repair(self, rt: AccountRuntime, trigger: str, token: str | None) -> None:
        if rt.busy or rt.repair is not None:
            if token:
                self.call_later(0.2, self._start_repair, rt, trigger, token)
            return
        drift_seen = rt.status.route.last_drift_at if rt.status.route.in_sync is False else None
        rec = RepairRecord(method="recreate-account", trigger=trigger, token=token, drift_seen_at=drift_seen,
                           started_at=now_iso(), result="in-progress")
        rt.repair = rec
        rt.repair_t0 = time.monotonic()
        rt.status.add_repair(rec)
        self.metrics.repairs.labels(trigger=trigger).inc()
        log(LOG, logging.INFO, "repair started", account=rt.name, trigger=trigger, token=token,
            drift_seen_at=drift_seen)
        self._mark(rt)
        self.spawn(self._repair_task(rt, rec))

    def _repair_task(self, rt: AccountRuntime, rec: RepairRecord) -> Task:
        yield from self._recreate(rt)
        yield Wait(REPAIR_TIMEOUT_S, lambda: rt.repair is not rec)
        if rt.repair is rec:
            self._finish_repair(rt, ok=False)

    def _finish_repair(self, rt: AccountRuntime, ok: bool) -> None:
        rec = rt.repair
        if rec is None:
            return
        elapsed = (time.monotonic() - (rt.repair_t0 or time.monotonic())) * 1000.0
        duration = elapsed
        if rec.drift_seen_at and rt.repair_drift_t0 is not None:
            duration = (time.monotonic() - rt.repair_drift_t0) * 1000.0
        done = rec.model_copy(update={
            "completed_at": now_iso(),
            "duration_ms": round(duration, 3),
            "result": "repaired" if ok else "failed",
        })
        rt.repair = None
        rt.status.add_repair(done)
        if done.token:
            rt.status.set_agent(repair_token_ack=done.token)
            if done.token in rt.pending_tokens:
                rt.pending_tokens.remove(done.token)
        if ok:
            self.metrics.repair_latency.observe(elapsed / 1000.0)
            if rec.drift_seen_at:
                self.metrics.drift_repaired.inc()
        log(LOG, logging.INFO if ok else logging.ERROR, "repair " + done.result, account=rt.name,
            trigger=rec.trigger, token=rec.token, duration_ms=done.duration_ms, repair_ms=round(elapsed, 3))
        self._mark(rt)

    # ---------------------------------------------------------------- re-register (setRegistration False/True)

    def _reregister_named(self, name: str | None) -> int:
        n = 0
        for rt in list(self.accounts.values()):
            if name is None or rt.name == name:
                self._start_reregister(rt, None)
                n += 1
        return n

    def _start_reregister(self, rt: AccountRuntime, token: str | None) -> None:
        if rt.busy:
            self.call_later(0.2, self._start_reregister, rt, token)
            return
        self.spawn(self._reregister_task(rt, token))

    def _reregister_task(self, rt: AccountRuntime, token: str | None) -> Task:
        rt.busy = True
        try:
            acc = rt.acc
            if acc is not None:
                log(LOG, logging.INFO, "re-register: setRegistration(False) then (True)", account=rt.name, token=token)
                try:
                    acc.setRegistration(False)
                    acc = None
                    yield Wait(self.settings.unregister_timeout_seconds,
                               lambda: rt.status.registration.state in ("Unregistered", "Failed"))
                    if rt.acc is not None:
                        rt.acc.setRegistration(True)
                except pj.Error as e:
                    LOG.warning("re-register failed: %s", e.info())
            if token:
                rt.status.set_agent(reregister_token_ack=token)
                self._mark(rt)
        finally:
            rt.busy = False

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

    # ---------------------------------------------------------------- network changes

    def _poll_addresses(self) -> None:
        if self._stopping:
            return
        fp = address_fingerprint(self.settings.sip_address)
        if self._addr_fp is not None and fp != self._addr_fp:
            why = describe_change(self._addr_fp, fp)
            before, self._addr_fp = self._addr_fp, fp
            if link_usable(fp):
                log(LOG, logging.WARNING, f"local {why.split('-')[0]} change detected", before=str(before),
                    after=str(fp))
                self._ip_change(why)
            else:  # handleIpChange() now would only fail the registration: call it when the link is back
                log(LOG, logging.WARNING, "local link lost: handleIpChange when it is back", before=str(before),
                    after=str(fp))
        self._addr_fp = fp
        self.call_later(self.settings.ip_change_poll_ms / 1000.0, self._poll_addresses)

    def _ip_change(self, why: str) -> None:
        if self.ep is None or self._stopping:
            return
        if not link_usable(address_fingerprint(self.settings.sip_address)):
            self._ip_change_retries = 0  # the poll calls it again when the link is back
            log(LOG, logging.INFO, "handleIpChange deferred: the link is down", why=why)
            return
        prm = pj.IpChangeParam()
        # Keep the listeners bound to their address: a restart rebinds them to the wildcard address
        # (pjsip #3873), i.e. off the pod IP / loopback address the agent was told to use.
        prm.restartListener = False
        try:
            self.ep.handleIpChange(prm)
            self._ip_change_retries = 0
            self.metrics.ip_changes.inc()
            log(LOG, logging.INFO, "handleIpChange called", why=why)
        except pj.Error as e:
            # PJ_EBUSY: a previous IP change is still in progress; try again shortly.
            self._ip_change_retries += 1
            delay = min(5.0, 0.2 * (2 ** min(self._ip_change_retries, 5)))
            log(LOG, logging.WARNING, "handleIpChange refused, retrying", why=why, error=e.info(), retry_in_s=delay)
            if self._ip_change_retries <= 20:
                self.call_later(delay, self._ip_change, why)

    def _on_ip_change_progress(self, op: int, status: int) -> None:
        LOG.debug("ip change progress op=%s status=%s", op, status)

    def _on_transport_state(self, state: int, last_error: int) -> None:
        if state == pj.PJSIP_TP_STATE_DISCONNECTED:
            log(LOG, logging.WARNING, "transport disconnected; pjsua re-registers after firstRetryIntervalSeconds",
                error=last_error)
            for rt in self.accounts.values():
                self._schedule_retry_check(rt, first=True)

    # ---------------------------------------------------------------- the log: route measurement

    def _on_log(self, level: int, msg: str) -> None:
        if msg.startswith("TX "):
            req = parse_tx_request(msg)
            if req is not None:
                self._on_tx(req)
            return
        if msg.startswith("RX "):
            if " Response msg " in msg[:60] and "/REGISTER/" in msg[:80] and any(
                rt.retiring for rt in self.accounts.values()
            ):
                resp = parse_rx_response(msg)
                if resp is not None:
                    self._on_rx_register(resp)
            return
        if level <= 2:
            PJ_LOG.log(logging.ERROR if level <= 1 else logging.WARNING, scrub(msg.strip()))
        elif level <= self.pjsip_log_level:
            PJ_LOG.info(scrub(msg.strip()))

    def _rt_for_from(self, from_uri: str) -> AccountRuntime | None:
        cached = self._from_cache.get(from_uri)
        if cached is None:
            if len(self._from_cache) > 256:
                self._from_cache.clear()
            cached = self._from_cache[from_uri] = _aor_key(from_uri)
        found = None
        for rt in self.accounts.values():
            if rt.aor_key == cached:
                if not rt.retiring:
                    return rt
                found = rt
        return found

    def _on_tx(self, req: TxRequest) -> None:
        if self.tx_hook is not None:
            self.tx_hook(req)
        if req.method != "REGISTER":
            return
        self.metrics.registers_sent.inc()
        rt = self._rt_for_from(req.from_uri)
        if rt is None:
            return
        if rt.retiring:
            rt.unreg_sent = True
            rt.unreg_call_id = req.call_id
            if req.call_id not in rt.retired_call_ids:
                rt.retired_call_ids.append(req.call_id)
            return
        if req.call_id in rt.retired_call_ids:
            LOG.debug("REGISTER from a deleted registration client of %s ignored", rt.name)
            return
        rt.current_call_ids.add(req.call_id)
        rt.last_tx_register = time.monotonic()
        # A retransmission is not a new REGISTER: an older transaction still retransmitting must not
        # make the measured route flap between two registration clients.
        tx_key = (req.call_id, req.cseq)
        if tx_key in rt.seen_tx:
            return
        rt.seen_tx.append(tx_key)
        at = now_iso()
        rt.last_register = (req, at)  # a SentRequest is built only when someone asks (GET /status)
        in_sync = self._in_sync(rt, req)
        route = rt.status.route
        first_hop = f"{req.transport}:{req.destination}"
        rt.status.observed_at = at
        upd: dict[str, Any] = {}
        if route.in_sync is not in_sync:
            upd["in_sync"] = in_sync
        if tuple(route.effective) != req.route:
            upd["effective"] = list(req.route)
        if route.first_hop != first_hop:
            upd["first_hop"] = first_hop
        if route.request_uri != req.request_uri:
            upd["request_uri"] = req.request_uri
        if not in_sync and route.in_sync is not False:
            upd["last_drift_at"] = at
            if rt.repair is None:
                rt.repair_drift_t0 = time.monotonic()
            self.metrics.drift_seen.inc()
            log(LOG, logging.WARNING, "route drift: REGISTER sent off the configured route", account=rt.name,
                effective=list(req.route), desired=rt.desired_register_route(), destination=req.destination)
        if upd:
            rt.status.set_route(**upd)
            self._mark(rt)
        if in_sync and rt.repair is not None:
            # the re-created account's first REGISTER (sent from inside create()) via the configured route
            self._finish_repair(rt, ok=True)
        elif not in_sync and rt.self_heal() and rt.repair is None and not rt.busy:
            wait = rt.last_self_heal + SELF_HEAL_MIN_INTERVAL_S - time.monotonic()
            rt.last_self_heal = max(time.monotonic(), rt.last_self_heal + SELF_HEAL_MIN_INTERVAL_S)
            # Repair from the event loop, not from inside pjsua's send path.
            self.call_later(max(0.0, wait), self._self_heal, rt)

    def _self_heal(self, rt: AccountRuntime) -> None:
        if rt.removed or rt.status.route.in_sync is not False or rt.repair is not None:
            return
        self._start_repair(rt, "self-heal", None)

    def _in_sync(self, rt: AccountRuntime, req: TxRequest) -> bool:
        transport = rt.res.spec.transport
        if len(req.route) != len(rt.desired_norm):
            return False
        if any(normalize_uri(u, transport) != d for u, d in zip(req.route, rt.desired_norm)):
            return False
        if rt.desired_norm:
            hp = rt.first_hop_expected
            if hp is not None:
                host, port = req.destination.rsplit(":", 1) if ":" in req.destination else (req.destination, "0")
                if host.strip("[]") != hp[0] or int(port) != hp[1]:
                    return False
        return True

    def _on_rx_register(self, resp: RxResponse) -> None:
        if resp.code < 200 or resp.code in (401, 407):
            return
        for rt in self.accounts.values():
            if rt.retiring and rt.unreg_call_id and rt.unreg_call_id == resp.call_id:
                rt.unreg_done = True

    # ---------------------------------------------------------------- registration state

    def _on_reg_state(self, rt: AccountRuntime, prm: "pj.OnRegStateParam") -> None:
        code = int(prm.code)
        reason = scrub(str(prm.reason or ""))
        expiration = int(prm.expiration)
        src = ""
        whole = ""
        try:
            src = prm.rdata.srcAddress or ""
            whole = prm.rdata.wholeMsg or ""
        except Exception:  # noqa: BLE001
            pass
        st = rt.status
        before = st.registration.state
        if 200 <= code < 300:
            sr = service_route_from_message(whole) if whole else []
            desired = list(rt.res.spec.route) + sr
            r = st.route
            if r.service_route != sr or r.response_from != (src or None) or r.desired != desired:
                st.set_route(service_route=sr, response_from=src or None, desired=desired)
            if expiration > 0:
                reg = st.registration
                if not (before == "Registered" and reg.code == code and reg.reason == reason
                        and reg.expires_seconds == expiration):
                    since = reg.registered_since if before == "Registered" else now_iso()
                    st.set_registration(state="Registered", code=code, reason=reason, expires_seconds=expiration,
                                        registered_since=since)
            else:
                st.set_registration(state="Unregistered", code=code, reason=reason, expires_seconds=None,
                                    registered_since=None)
        else:
            rt.last_failure_mono = time.monotonic()
            st.set_registration(state="Failed", code=code, reason=reason or None, expires_seconds=None,
                                registered_since=None, last_failure=now_iso())
            if src:
                st.set_route(response_from=src)
            self.metrics.registration_failures.labels(code=str(code)).inc()
            self._schedule_retry_check(rt)
        if st.registration.state != before:
            log(LOG, logging.INFO if st.registration.state != "Failed" else logging.WARNING,
                "registration " + st.registration.state.lower(), account=rt.name, code=code, reason=reason,
                expires=expiration, response_from=src)
        self._update_gauges()
        self._mark(rt)
        if self.reg_hook is not None:
            self.reg_hook(rt, code, expiration)

    def _schedule_retry_check(self, rt: AccountRuntime, first: bool = False) -> None:
        """pjsua retries some failures itself; if nothing went out by our retry time, re-register ourselves."""
        reg = rt.res.spec.registration
        base = reg.first_retry_interval_seconds if first else reg.retry_interval_seconds
        delay = base + random.uniform(0, reg.jitter_seconds) + (2.0 if first else 1.0)
        self.cancel(rt.retry_timer)
        mark = time.monotonic()
        rt.retry_timer = self.call_later(delay, self._retry_if_idle, rt, mark)

    def _retry_if_idle(self, rt: AccountRuntime, mark: float) -> None:
        if rt.removed or rt.busy or rt.acc is None or self._stopping:
            return
        if rt.last_tx_register > mark or rt.status.registration.state == "Registered":
            return
        log(LOG, logging.INFO, "retrying registration", account=rt.name)
        try:
            rt.acc.setRegistration(True)
        except pj.Error as e:
            LOG.warning("retry failed: %s", e.info())
            self._schedule_retry_check(rt)

    def _update_gauges(self) -> None:
        counts = {"Registering": 0, "Registered": 0, "Failed": 0, "Unregistered": 0}
        for rt in self.accounts.values():
            counts[rt.status.registration.state] = counts.get(rt.status.registration.state, 0) + 1
        for k, v in counts.items():
            self.metrics.registrations.labels(state=k).set(v)
        self.metrics.accounts.set(self.pj_account_count)
        self.metrics.active_calls.set(len(self.calls))

    # ---------------------------------------------------------------- calls

    def _on_incoming_call(self, acc: _Account, prm: "pj.OnIncomingCallParam") -> None:
        rt = acc.rt
        call = _Call(self, acc, prm.callId, rt)
        # Keep the Call until DISCONNECTED: a collected Call hangs up with 603 (sip-facts).
        self.calls[prm.callId] = call
        self._update_gauges()
        op = pj.CallOpParam()
        if len(self.calls) > MAX_CALLS_PER_WORKER or rt is None or self._stopping:
            op.statusCode = 486
            call.result = "busy"
            call.hangup(op)
            return
        policy = rt.res.spec.incoming_calls
        if policy.policy == "reject":
            op.statusCode = policy.reject_code
            call.result = "rejected"
            call.hangup(op)
            return
        op.statusCode = 180
        call.answer(op)
        if policy.policy == "answer":
            if policy.answer_delay_ms <= 0:
                self._answer(prm.callId, call)
            else:
                self.call_later(policy.answer_delay_ms / 1000.0, self._answer, prm.callId, call)

    def _answer(self, call_id: int, call: _Call) -> None:
        if self.calls.get(call_id) is not call:
            return
        op = pj.CallOpParam()
        op.statusCode = 200
        try:
            call.answer(op)
            call.result = "answered"
            call.answered_at = time.monotonic()
        except pj.Error as e:
            LOG.warning("answer failed: %s", e.info())

    def _on_call_disconnected(self, call: _Call, last_code: int) -> None:
        if self.calls.get(call.pj_id) is call:
            del self.calls[call.pj_id]
        result = call.result
        if result == "ringing":
            result = "cancelled"
        self.metrics.calls.labels(result=result).inc()
        # Delete it on the next loop turn, not inside its own callback.
        self._graveyard.append(call)
        self._update_gauges()

    def _on_rejected_call(self, code: int) -> None:
        self.metrics.calls.labels(result="busy" if code == 486 else f"rejected-{code}").inc()

    # ---------------------------------------------------------------- stop

    def _stop(self, exit_code: int = 0) -> None:
        if self._stopping:
            return
        self._stopping = True
        self.exit_code = exit_code
        self.spawn(self._stop_task(), on_error=lambda e: setattr(self, "_loop_exit", True))

    def _stop_task(self) -> Task:
        log(LOG, logging.INFO, "stopping: unregistering all accounts")
        if self.calls:
            try:
                self.ep.hangupAllCalls()
            except pj.Error:
                pass
            yield Wait(2.0, lambda: not self.calls)
        waiting = []
        for rt in self.accounts.values():
            self.cancel(rt.retry_timer)
            if rt.acc is not None and rt.status.registration.state == "Registered":
                try:
                    rt.acc.setRegistration(False)
                    waiting.append(rt)
                except pj.Error as e:
                    LOG.warning("unregister failed: %s", e.info())
        if waiting:
            yield Wait(self.settings.unregister_timeout_seconds,
                       lambda: all(r.status.registration.state != "Registered" for r in waiting))
        for rt in self.accounts.values():
            self._mark(rt)
        self._debouncer.flush(force=True)
        for rt in list(self.accounts.values()):
            self._drop_account(rt)
        yield Wait(0.05)
        self._loop_exit = True

    # ---------------------------------------------------------------- introspection

    def _snapshot(self) -> dict:
        return {
            "agent": self.name,
            "sipAddress": self.settings.sip_address,
            "sipPort": self.sip_port,
            "globalProxy": self.global_proxy,
            "activeCalls": len(self.calls),
            "accounts": [
                {
                    "name": rt.name,
                    "namespace": rt.res.spec.namespace,
                    "created": rt.acc is not None,
                    "status": rt.doc(),
                    "lastRegister": _sent_request(*rt.last_register) if rt.last_register else None,
                }
                for rt in self.accounts.values()
            ],
        }
