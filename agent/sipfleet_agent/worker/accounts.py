"""The pjsua accounts of one worker: per-account runtime state (surviving re-creation of the pjsua account),
the ``AccountConfig`` built from it, and create/delete with exactly one Python object per live pjsua account.

Promise: :meth:`AccountSet.create` refuses a 9th account before pjsua sees it (``Account.create`` beyond
PJSUA_MAX_ACC aborts the process) and reports failures as text, never with a password; :meth:`AccountSet.drop`
hangs up the account's calls, ``shutdown()``s it and releases its only Python object (a stale one would keep the
slot); it says whether an un-REGISTER went out.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pjsua2 as pj

from sipfleet.api.models import AgentRef, AgentSettings, RepairRecord

from ..config import ResolvedAccount
from ..siplog import TxRequest, with_transport
from ..status import AccountStatus
from .pjbind import Account, release
from .refreshplan import delay_before_refresh
from .repair import SelfHealGate
from .routemeter import RouteMeter, aor_key

LOG = logging.getLogger("sipfleet_agent")


class AccountRuntime:
    def __init__(self, res: ResolvedAccount, agent: AgentRef):
        self.failures = 0  # consecutive failed REGISTERs (the back-off's n)
        self.meter = RouteMeter(list(res.spec.route), res.spec.transport)
        self.res = res
        self.acc: Account | None = None
        self.removed = False
        self.busy = False  # a re-create / re-register task is running
        self.repair: RepairRecord | None = None
        self.repair_t0: float | None = None
        self.repair_drift_t0: float | None = None
        self.pending_tokens: list[str] = []
        self.heal = SelfHealGate()
        self.heal_pending = False  # a drift was seen while busy: self-heal when the running task ends
        self.heal_timer: Any = None
        self.last_tx_register = 0.0
        self.last_failure_mono = 0.0
        self.last_register: tuple[TxRequest, str] | None = None
        self.retry_timer: Any = None  # the agent's own next REGISTER after a failure (.retrier)
        self.next_attempt: tuple[float, str] | None = None  # (epoch, reason) of the scheduled attempt
        self.created_registrar: str | None = None  # the registrar URI the live pjsua account was created with
        self.refresh_timer: Any = None  # the agent's own refresh (a grant pjsip would not refresh in time)
        self.lapse_timer: Any = None  # the granted binding's expiry
        self.dropped_answer: tuple | None = None  # (message, monotonic, call-id): pjsip dropped an answer
        self.truncated_answer: Any = None  # responseguard.Truncated: the last answer cut at pjsip's UDP buffer
        self.grant_seq = 0  # 2xx grants seen, so a lapse timer knows whether a newer grant came
        self.reg_attempt: Any = None  # regattempts.Pending: the registration attempt waiting for its final answer
        self.flow_timer: int | None = None  # RFC 5626 Flow-Timer of the last 2xx (the registrar offers outbound)
        self.status = AccountStatus(mode=res.spec.route_mode, desired=list(res.spec.route), agent=agent)

    @property
    def name(self) -> str:
        return self.res.name

    @property
    def key(self) -> tuple:
        return self.res.key

    @property
    def res(self) -> ResolvedAccount:
        return self._res

    @res.setter
    def res(self, value: ResolvedAccount) -> None:
        old = getattr(self, "_res", None)
        self._res = value
        if old is None or old.recreate_key() != value.recreate_key():
            # a changed account starts over at its configured registrar (a followed 3xx is forgotten)
            self.registrar_override: str | None = None
            self.redirect_chain: tuple[str, ...] = ()
            self.failures = 0
        self.aor_key = aor_key(value.spec.aor)
        self.meter.reconfigure(list(value.spec.route), value.spec.transport)

    def registrar_uri(self) -> str:
        """Where the next REGISTER goes: the target of a followed 3xx, else the configured registrar."""
        if self.registrar_override is None:
            return self.res.applied_registrar()
        if self.res.spec.route:
            return self.registrar_override
        return with_transport(self.registrar_override, self.res.spec.transport)

    def doc(self) -> dict:
        return self.status.document()


def account_config(rt: AccountRuntime, settings: AgentSettings, global_proxy: list[str],
                   transport_ids: dict) -> "pj.AccountConfig":
    res, spec = rt.res, rt.res.spec
    cfg = pj.AccountConfig()
    cfg.idUri = spec.aor
    cfg.regConfig.registrarUri = rt.registrar_uri()
    cfg.regConfig.timeoutSec = res.expires
    # pjsua's own retry timer off (retryIntervalSec 0: schedule_reregistration() in pjsua_acc.c returns at
    # once, for failures and for lost transports alike): the agent decides when to retry (.retrypolicy)
    cfg.regConfig.retryIntervalSec = 0
    cfg.regConfig.firstRetryIntervalSec = 0
    cfg.regConfig.randomRetryIntervalSec = 0
    cfg.regConfig.delayBeforeRefreshSec = delay_before_refresh(res.expires)
    cfg.regConfig.unregWaitMsec = int(settings.unregister_timeout_seconds * 1000)
    # routeMode account: the route per account. In a worker started with a global outbound proxy (prevent
    # mode) the proxy is already there for every account: adding it again would put it twice into the Route set.
    if spec.route_mode == "account" and not global_proxy:
        for uri in res.applied_route():
            cfg.sipConfig.proxies.append(uri)
    cfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", res.creds.realm, res.creds.username, 0, res.creds.password))
    if spec.transport not in transport_ids:
        raise ValueError(f"transport {spec.transport} is not available in this agent")
    cfg.sipConfig.transportId = transport_ids[spec.transport]
    if spec.registration.outbound:  # RFC 5626: reg-id, a +sip.instance that survives restarts, a CRLF CRLF ping
        cfg.natConfig.sipOutboundUse = 1
        cfg.natConfig.sipOutboundInstanceId = instance_id(spec)
        cfg.natConfig.sipOutboundRegId = "1"
        cfg.natConfig.udpKaData = "\r\n\r\n"
    else:
        cfg.natConfig.sipOutboundUse = 0
    cfg.natConfig.viaRewriteUse = 0
    cfg.natConfig.sdpNatRewriteUse = 0
    cfg.mediaConfig.transportConfig.boundAddress = settings.sip_address
    cfg.mediaConfig.transportConfig.publicAddress = settings.sip_address
    return cfg


def instance_id(spec: Any) -> str:
    """The account's RFC 5626 ``+sip.instance``: a UUID of its namespace, name and AoR, the same in every agent and
    after every restart (a registrar replaces the flow of the same instance instead of adding a binding)."""
    return f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'sipfleet:{spec.namespace}/{spec.name}/{spec.aor}')}>"


class AccountSet:
    def __init__(self, owner: Any, settings: AgentSettings, max_accounts: int):
        self.owner = owner
        self.settings = settings
        self.max_accounts = max_accounts
        self.count = 0

    def create(self, rt: AccountRuntime, global_proxy: list[str], transport_ids: dict,
               register: bool = True) -> str | None:
        """None when created, else why not. ``register`` False: no REGISTER yet (a paced account's waits for the
        supervisor's Go, .pacing)."""
        if rt.acc is not None:
            return None
        if self.count >= self.max_accounts:
            return f"refused: this worker already hosts {self.max_accounts} accounts (pjsua limit)"
        acc = Account(self.owner, rt)
        rt.acc = acc
        try:
            cfg = account_config(rt, self.settings, global_proxy, transport_ids)
            rt.created_registrar = cfg.regConfig.registrarUri
            cfg.regConfig.registerOnAdd = register
            acc.create(cfg, False)
        except (pj.Error, ValueError) as e:
            rt.acc = None
            acc.rt = None
            release(acc)
            del acc
            return f"account create failed: {e.info() if isinstance(e, pj.Error) else e}"
        self.count += 1
        return None

    def drop(self, rt: AccountRuntime, calls: Any) -> bool:
        acc = rt.acc
        if acc is None:
            return False
        calls.hangup_of(rt)
        rt.meter.retire()
        rt.acc = None
        acc.rt = None
        try:
            acc.shutdown()
        except pj.Error as e:
            LOG.warning("account shutdown failed: %s", e.info())
        release(acc)
        del acc
        self.count -= 1
        # something to wait for: its un-REGISTER, or a REGISTER of it still in its challenge (pjsip answers it
        # even now, and that answer must not reach the registrar after the new client's REGISTER)
        return rt.meter.unreg_sent or rt.meter.retired_busy
