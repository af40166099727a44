"""The supervisor's runtime, shared by standalone and cluster mode: accounts -> worker plan -> worker processes.

Promise: :meth:`Supervisor.apply` changes only the workers whose accounts changed (:mod:`.plan`); a worker that
exits unasked or misses heartbeats for ``settings.heartbeat_timeout_seconds`` is killed by PID and restarted after
:mod:`.backoff`'s delay with its own accounts only, and its accounts' status and a Warning event (reason
``WorkerRestarted``) name the cause. A worker that ended itself after refusing a registrar's answer
(:class:`~sipfleet_agent.protocol.Rejected`) gets that account quarantined (:mod:`.quarantine`: in no worker for a
growing back-off, its status Failed with the worker's reason, a Warning event with that reason), and is restarted
with its other accounts only; once released, an account with strikes runs in a worker of its own. Accounts with
fallback routes run with the route :mod:`.failover` says is active (a move is a replan). :meth:`stop` tells every
worker to un-REGISTER and exit, waits at most ``grace_s`` and kills what is left. No pjsua2 here. Status and
events go to an :class:`Edge`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Protocol

from prometheus_client import CollectorRegistry

from sipfleet.api.keys import EVENT_ROUTE_SELF_HEALED
from sipfleet.api.models import MAX_ACCOUNTS_PER_WORKER, MAX_WORKERS_PER_AGENT, AgentSettings
from sipfleet.api.reasons import REGISTRAR_RESPONSE_CRASHED_WORKER

from .. import protocol as p
from ..config import ResolvedAccount
from ..logs import log
from ..status import now_iso, self_heals_between
from .launch import default_launcher
from .messages import self_heal_message, snapshot_document, wire
from .backoff import RestartPolicy, hung, on_failure
from .metricsagg import AccountStates, WorkerMetrics
from .pacing import Pacing
from .failover import Failover
from .plan import diff, plan_workers
from .replies import Replies
from .attribution import suspect
from .quarantine import Entry, QuarantinePolicy, forget, held, isolate, on_reject, status_message
from .workerproc import Slot, WorkerProc, describe_exit

LOG = logging.getLogger("sipfleet_agent.supervisor")
TICK_S = 0.1


class Edge(Protocol):
    def status(self, key: tuple, name: str, doc: dict) -> None: ...
    def event(self, key: tuple, name: str, type_: str, reason: str, message: str, count: int = 1) -> None: ...


class Supervisor:
    def __init__(self, settings: AgentSettings, edge: Edge, *, name: str, pod: str | None, self_heal: bool = False,
                 pjsip_log_level: int = 2, log_level: str = "INFO", policy: RestartPolicy | None = None,
                 grace_s: float | None = None, launcher: Any = None, clock: Callable[[], float] = time.monotonic,
                 quarantine: QuarantinePolicy | None = None):
        self.settings = settings
        self.edge = edge
        self.name = name
        self.pod = pod
        self.self_heal = self_heal
        self.pjsip_log_level = pjsip_log_level
        self.log_level = log_level
        self.policy = policy or RestartPolicy()
        self.qpolicy = quarantine or QuarantinePolicy()
        self.quarantine: dict[tuple, Entry] = {}
        self._held: set = set()
        self.grace_s = grace_s if grace_s is not None else settings.unregister_timeout_seconds + 5.0
        self.clock = clock
        self.launcher = launcher or default_launcher(log_level)
        self.accounts: dict[tuple, ResolvedAccount] = {}
        self.slots: dict[int, Slot] = {}
        self.retiring: list[WorkerProc] = []
        self.metrics = WorkerMetrics(self._live_metrics)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.metrics)
        self.registry.register(AccountStates(lambda: [(k[1], self.docs.get(k)) for k in list(self.accounts)]))
        self.docs: dict[tuple, dict] = {}
        self.exit_code = 0
        self._lock = threading.RLock()
        self.replies = Replies()
        self._stop_requested: int | None = None
        self._stopping = False
        self._finished = threading.Event()
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)
        self._last_tick = clock()
        self.pacing = Pacing(settings.registrar_probe_seconds, self._go, registry=self.registry)
        self.failover = Failover(edge, settings.sip_address, registry=self.registry, clock=clock)

    # ------------------------------------------------------------------ API for edges

    def start(self, accounts: list[ResolvedAccount]) -> None:
        self._thread.start()
        self.apply(accounts)

    def apply(self, accounts: list[ResolvedAccount]) -> list[tuple]:
        """Host exactly ``accounts``; returns the keys that fit in no worker (their status says so)."""
        self.pacing.configure(accounts)  # before the workers hear of them: their first Want is paced
        self.failover.configure(accounts)
        with self._lock:
            if self._stopping:
                return []
            self.accounts = {a.key: a for a in accounts}
            self.docs = {k: v for k, v in self.docs.items() if k in self.accounts}
            self.quarantine = {k: e for k, e in self.quarantine.items() if k in self.accounts}
            return self._replan()

    def _replan(self) -> list[tuple]:
        """Place ``self.accounts`` minus the quarantined ones (lock held); released accounts with strikes alone."""
        with self._lock:
            now = self.clock()
            self.quarantine = forget(self.qpolicy, self.quarantine, now)
            self._held = held(self.quarantine, now)
            alone = {k for k in self.accounts if k not in self._held and isolate(self.quarantine.get(k), now)}
            prev = {wid: s.plan for wid, s in self.slots.items()}

            def wanted(isolated: set) -> dict:
                return {k: (self.failover.effective(a).worker_key() + (("alone",) + k if k in isolated else ()))
                        for k, a in self.accounts.items() if k not in self._held}

            new = plan_workers(prev, wanted(alone), max_workers=MAX_WORKERS_PER_AGENT,
                               max_per_worker=MAX_ACCOUNTS_PER_WORKER)
            if alone and new.unplaced:  # not enough workers to isolate them: share as usual
                new = plan_workers(prev, wanted(set()), max_workers=MAX_WORKERS_PER_AGENT,
                                   max_per_worker=MAX_ACCOUNTS_PER_WORKER)
            for ch in diff(prev, new.workers):
                if ch.action in ("stop", "restart"):
                    self._retire(self.slots.pop(ch.id))
                if ch.action in ("start", "restart"):
                    slot = self.slots[ch.id] = Slot(new.workers[ch.id])
                    self._spawn(slot)
                elif ch.action in ("update", "keep"):
                    self.slots[ch.id].plan = new.workers[ch.id]
                if ch.id in self.slots:
                    self._send_apply(self.slots[ch.id])
                if ch.action != "keep":
                    log(LOG, logging.INFO, f"worker {ch.action}", worker=ch.id,
                        added=sorted(a[1] for a in ch.added), removed=sorted(a[1] for a in ch.removed))
            for key in new.unplaced:
                msg = (f"no worker for this account: {MAX_WORKERS_PER_AGENT} workers of at most "
                       f"{MAX_ACCOUNTS_PER_WORKER} accounts each are in use")
                log(LOG, logging.ERROR, msg, account=key[1])
                self._synthetic(key, {"state": "Failed", "reason": msg, "lastFailure": now_iso()})
            return list(new.unplaced)

    def request(self, op: str, account: str | None = None, timeout: float = 10.0) -> Any:
        """Send ``op`` to the worker hosting ``account`` (all workers for None) and combine the replies."""
        with self._lock:
            targets = [s.proc for s in self.slots.values() if s.proc is not None and s.proc.hello is not None
                       and (account is None or any(a[1] == account for a in s.plan.accounts))]
        results = self.replies.ask(targets, op, account, timeout)
        if op in ("snapshot", "metrics"):
            return results
        return sum(int(r or 0) for _, r in results)

    def snapshot(self, timeout: float = 5.0) -> dict:
        parts = self.request("snapshot", None, timeout)
        restarts = {wid: s.restart.restarts for wid, s in list(self.slots.items())}
        return snapshot_document(self.name, self.settings.sip_address, parts, restarts)

    def refresh_metrics(self, timeout: float = 2.0) -> None:
        """Ask every worker for its metrics now (heartbeats carry them too, up to a second old)."""
        try:
            for proc, families in self.request("metrics", None, timeout):
                proc.metrics = families
        except (TimeoutError, RuntimeError) as e:
            LOG.debug("metrics from heartbeats only: %s", e)

    def request_stop(self, exit_code: int = 0) -> None:
        if self._stop_requested is None:
            self._stop_requested = exit_code

    def wait(self, timeout: float | None = None) -> bool:
        return self._finished.wait(timeout)

    def alive(self) -> bool:
        return self._thread.is_alive() and self.clock() - self._last_tick < 10.0

    def ready(self) -> bool:
        with self._lock:
            return self.alive() and all(s.proc is not None and s.proc.hello is not None and s.applied_id == s.apply_id
                                        for s in self.slots.values())

    # ------------------------------------------------------------------ workers

    def _init(self, slot: Slot) -> p.Init:
        transport, route, mode = slot.plan.key[:3]  # (..., "alone", ns, name): an isolated account's own worker
        return p.Init(worker=slot.plan.id, agent=self.name, pod=self.pod,
                      settings=self.settings.model_dump(mode="json"), self_heal=self.self_heal,
                      pjsip_log_level=self.pjsip_log_level, transport=transport, route=list(route), route_mode=mode,
                      sip_port=slot.sip_port, breadcrumbs=slot.restart.failures >= 1,
                      tls_from_accounts=any(isinstance(k, tuple) and k[:1] == ("tls",) for k in slot.plan.key[3:]))

    def _spawn(self, slot: Slot) -> None:
        proc = WorkerProc(slot.plan.id, self._init(slot), self._on_message, clock=self.clock, log_level=self.log_level,
                          launcher=self.launcher)
        try:
            proc.start()
        except Exception as e:  # noqa: BLE001 - e.g. the zygote did not answer: try again after the back-off
            now = self.clock()
            slot.restart, delay = on_failure(self.policy, slot.restart, now, now)
            slot.proc, slot.restart_at = None, now + delay
            log(LOG, logging.ERROR, "worker start failed", worker=slot.plan.id, error=str(e), retry_in_s=delay)
            return
        slot.proc, slot.restart_at, slot.sent = proc, None, None
        log(LOG, logging.INFO, "worker started", worker=slot.plan.id, pid=proc.pid,
            accounts=sorted(a[1] for a in slot.plan.accounts))

    def _send_apply(self, slot: Slot) -> None:
        if slot.proc is None:
            return
        res = [self.failover.effective(self.accounts[k]) for k in sorted(slot.plan.accounts, key=lambda k: (k[0] or "", k[1]))]
        sig = tuple((r.key, r.recreate_key(), r.spec.model_dump_json()) for r in res)
        if sig == slot.sent:
            return
        slot.sent = sig
        slot.apply_id = self.replies.next_id()
        slot.proc.send(p.Apply(slot.apply_id, [wire(r) for r in res]))

    def _retire(self, slot: Slot) -> None:
        if slot.proc is None:
            return
        slot.proc.retiring = True
        slot.proc.send(p.Stop(0))
        self.retiring.append(slot.proc)
        self.metrics.retire(slot.proc.metrics)
        slot.proc.metrics = []

    def _on_message(self, proc: WorkerProc, msg: p.Message) -> None:
        if isinstance(msg, (p.Want, p.Answered)):
            self.pacing.on_message(msg)
        elif isinstance(msg, p.PathFailed):
            self._moved(self.failover.on_path_failed(msg))
        elif isinstance(msg, p.Status):
            key = (msg.namespace, msg.name)
            with self._lock:
                slot = self.slots.get(proc.id)
                mine = slot is not None and slot.proc is proc and key in slot.plan.accounts
            if mine or (self._stopping and key in self.accounts):
                doc = self.failover.annotate(key, msg.doc)
                healed = self_heals_between(self.docs.get(key), doc)
                self.docs[key] = doc
                self.edge.status(key, msg.name, doc)
                if healed > 0:
                    self.edge.event(key, msg.name, "Normal", EVENT_ROUTE_SELF_HEALED, self_heal_message(doc), healed)
        elif isinstance(msg, p.Reply):
            with self._lock:
                slot = self.slots.get(proc.id)
                if slot is not None and slot.proc is proc and msg.id == slot.apply_id:
                    slot.applied_id = msg.id
                    if not msg.ok:
                        LOG.error("worker %s: apply failed: %s", proc.id, msg.error)
            self.replies.on_reply(msg)
        elif isinstance(msg, p.Hello):
            with self._lock:
                slot = self.slots.get(proc.id)
                if slot is not None and slot.proc is proc:
                    slot.sip_port = msg.sip_port
            log(LOG, logging.INFO, "worker ready", worker=proc.id, pid=msg.pid, sip_port=msg.sip_port)

    def _moved(self, keys: list[tuple]) -> None:
        """Failover moved these accounts to another route: to workers of that route (whose first report, measured
        on the new route, carries the new ``route.active``; the old worker's reports are no longer taken)."""
        if keys:
            with self._lock:
                self._replan()

    def _go(self, key: tuple) -> None:  # pacing lets key's REGISTER go; a worker gone: its successor asks again
        with self._lock:
            proc = next((s.proc for s in self.slots.values() if key in s.plan.accounts and s.proc is not None), None)
            if proc is None or not proc.send(p.Go(key[0], key[1])):
                self.pacing.on_message(p.Answered(key[0], key[1], None))

    def _synthetic(self, key: tuple, registration: dict) -> None:
        """A registration state the supervisor knows better than any worker (the account's last document kept)."""
        doc = {**self.docs.get(key, {}), "registration": registration}
        self.docs[key] = doc
        self.edge.status(key, key[1], doc)

    def _live_metrics(self) -> list[list]:
        with self._lock:
            return [s.proc.metrics for s in self.slots.values() if s.proc is not None]

    # ------------------------------------------------------------------ the monitor thread

    def _run(self) -> None:
        try:
            while self._stop_requested is None:
                self._tick()
                time.sleep(TICK_S)
            self._stop(self._stop_requested)
        except BaseException:  # noqa: BLE001
            LOG.exception("supervisor failed")
            self.exit_code = 1
            self._kill_all()
        finally:
            self._finished.set()

    def _tick(self) -> None:
        now = self.clock()
        self._last_tick = now
        ended: list = []
        with self._lock:
            for slot in list(self.slots.values()):
                proc = slot.proc
                if proc is None:
                    if slot.restart_at is not None and now >= slot.restart_at:
                        self._spawn(slot)
                        self._send_apply(slot)
                    continue
                rc = proc.poll()
                if rc is not None:
                    ended.append((slot, proc, rc))
                elif hung(proc.last_heartbeat, now, self.settings.heartbeat_timeout_seconds):
                    age = now - proc.last_heartbeat
                    proc.kill()
                    proc.wait(5)
                    self._failed(slot, f"hung: no heartbeat for {age:.1f} s (killed, pid {proc.pid})", now)
            for proc in list(self.retiring):
                if proc.poll() is not None:
                    self.retiring.remove(proc)
                    proc.join_reader(0.5)
                elif now - proc.last_heartbeat > self.grace_s + self.settings.heartbeat_timeout_seconds:
                    proc.kill()
            if held(self.quarantine, now) != self._held:
                self._replan()  # a quarantine ended
        self._moved(self.failover.tick())
        for slot, proc, rc in ended:
            proc.join_reader(1.0)  # its last messages (a Rejected, statuses) first: the reader takes the lock
            with self._lock:
                if slot.proc is proc:
                    self._failed(slot, describe_exit(rc), self.clock(), rc)

    def _failed(self, slot: Slot, cause: str, now: float, returncode: int | None = None) -> None:
        proc = slot.proc
        assert proc is not None
        proc.close_input()
        self.metrics.retire(proc.metrics)
        self.pacing.forget(slot.plan.accounts)
        slot.restart, delay = on_failure(self.policy, slot.restart, proc.started_at, now)
        slot.proc, slot.restart_at = None, now + delay
        rej = proc.rejected
        blamed = suspect(returncode, proc.last_answer, now, slot.restart.failures) if rej is None else None
        if blamed is not None and blamed in self.accounts:
            rej = p.Rejected(blamed[0], blamed[1], REGISTRAR_RESPONSE_CRASHED_WORKER,
                             f"worker {slot.plan.id} was {cause} right after receiving the registrar's 2xx to "
                             f"{blamed[1]}'s REGISTER, {slot.restart.failures} quick failures in a row")
        if rej is not None and (rej.namespace, rej.name) in self.accounts:
            cause = f"{cause}: {self._quarantine((rej.namespace, rej.name), rej, now)}"
            if self.slots.get(slot.plan.id) is not slot:
                return  # it hosted only that account
        names = sorted(a[1] for a in slot.plan.accounts)
        message = (f"worker {slot.plan.id} (pid {proc.pid}) {cause}; restarting it in {delay:.1f} s "
                   f"(restart {slot.restart.restarts}); its accounts re-register: {', '.join(names)}")
        log(LOG, logging.WARNING, "worker failed: restarting", worker=slot.plan.id, pid=proc.pid, cause=cause,
            restart_in_s=delay, restarts=slot.restart.restarts, accounts=names)
        for key in sorted(slot.plan.accounts, key=lambda k: (k[0] or "", k[1])):
            self._synthetic(key, {"state": "Failed", "code": None, "reason": message[:1024], "lastFailure": now_iso()})
            self.edge.event(key, key[1], "Warning", "WorkerRestarted", message[:1024])

    def _quarantine(self, key: tuple, rej: p.Rejected, now: float) -> str:
        """Keep ``key`` out of every worker for a while (lock held); returns the cause for the worker's message."""
        entry = self.quarantine[key] = on_reject(self.qpolicy, self.quarantine.get(key), now, rej.reason, rej.message)
        message = status_message(entry, now)
        log(LOG, logging.WARNING, "account quarantined", account=key[1], reason=rej.reason, detail=rej.message,
            quarantined_s=entry.until - now, strikes=entry.strikes)
        self._synthetic(key, {"state": "Failed", "reason": message, "failureReason": rej.reason,
                              "lastFailure": now_iso()})
        self.edge.event(key, key[1], "Warning", rej.reason, message)
        self._replan()
        if rej.reason == REGISTRAR_RESPONSE_CRASHED_WORKER:
            return f"blamed on {key[1]} ({rej.reason})"
        return f"it refused a registrar's answer to {key[1]} ({rej.reason}) and ended itself"

    def _stop(self, exit_code: int) -> None:
        with self._lock:
            self._stopping = True
            self.exit_code = exit_code
            self.pacing.stop()
            procs = [s.proc for s in self.slots.values() if s.proc is not None] + self.retiring
            log(LOG, logging.INFO, "stopping: every worker un-REGISTERs its accounts", workers=len(procs))
            for proc in procs:
                proc.retiring = True
                proc.send(p.Stop(0))
        deadline = time.monotonic() + self.grace_s
        for proc in procs:
            if proc.wait(max(0.05, deadline - time.monotonic())) is None:
                LOG.warning("worker %s (pid %s) did not stop in time: killed", proc.id, proc.pid)
                proc.kill()
                proc.wait(5)
            proc.join_reader(2.0)
        self.launcher.stop()

    def _kill_all(self) -> None:
        with self._lock:
            for proc in [s.proc for s in self.slots.values() if s.proc is not None] + self.retiring:
                proc.kill()
        self.launcher.stop()
