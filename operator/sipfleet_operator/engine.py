"""The operator's engine: the parts wired together, and the entry points kopf's handlers (handlers.py) call.

One ``Engine`` per operator process, kept in kopf's operator memo. Its parts, one concern each:
state.py (what is in memory), restore.py (the fleet rebuilt at start), accounts.py (reconcile: placement
carried out), children.py (an agent's children applied), status.py (conditions, the ladder and its actions),
wakeups.py + background.py (the ladder's wake-ups and the periodic sweeps), events.py. The decisions are pure
modules (placement, builders, conditions, ladder, sizing, stored, observed); the parts carry them out.
"""

from __future__ import annotations

import asyncio
import socket
from datetime import datetime, timezone

from . import metrics
from .accounts import Accounts
from .background import Background
from .children import Children
from .config import Settings
from .events import Events
from .k8s import Client
from .restore import Restore
from .state import AccountsBySecret, PodsByAgent, State
from .status import Status
from .wakeups import Wakeups


def now() -> datetime:
    return datetime.now(timezone.utc)


class Engine:
    def __init__(self, settings: Settings, client: Client | None = None, *, pods: PodsByAgent | None = None,
                 accounts_by_secret: AccountsBySecret | None = None, clock=now):
        self.settings = settings
        self.client = client or Client(on_write=metrics.count_write)
        self.state = State(settings, self.client, pods=pods, accounts_by_secret=accounts_by_secret)
        self.wakeups = Wakeups()
        self.events = Events(self.client, settings.instance or socket.gethostname(), clock)
        self.children = Children(self.state)
        self.status = Status(self.state, self.children, self.events, self.wakeups, clock)
        self.restore = Restore(self.state, self.children, self.events)
        self.accounts = Accounts(self.state, self.children, self.status, self.restore)
        self.background = Background(self.state, self.accounts, self.status, self.wakeups, clock)
        self._tasks: list[asyncio.Task] = []

    @property
    def loader(self):
        return self.restore.loader

    # ---- start / stop

    async def load(self) -> None:
        """Rebuild placements from the assignment ConfigMaps, scope by scope. Never raises: a scope that cannot
        be read is retried in the background while the others are served (loading.py)."""
        await self.restore.loader.start()

    def start_background(self) -> None:
        self._tasks.append(asyncio.create_task(self.background.run(), name="sipfleet-background"))

    async def stop(self) -> None:
        await self.restore.loader.stop()
        self.children.stop()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        await self.client.close()

    # ---- what kopf's handlers call

    def is_loaded(self, ns: str) -> bool:
        return self.restore.loader.is_loaded(ns)

    def is_terminating(self, ns: str) -> bool:
        """The namespace was forgotten while being deleted, and is neither gone nor created again yet."""
        return ns in self.state.terminating

    def remember(self, body: dict) -> None:
        self.state.remember(body)

    def forget(self, ns: str, name: str) -> None:
        self.state.forget(ns, name)
        self.wakeups.schedule((ns, name), None)

    def needs_reconcile(self, body: dict) -> bool:
        return self.accounts.needs_reconcile(body)

    async def reconcile_account(self, body: dict) -> None:
        await self.accounts.reconcile(body)

    async def remove_account(self, body: dict) -> None:
        await self.accounts.remove(body)

    async def refresh_status(self, ns: str, name: str) -> None:
        await self.status.refresh(ns, name)

    async def on_secret(self, event_type: str, secret: dict) -> None:
        await self.accounts.on_secret(event_type, secret)

    async def on_pod(self, agent: str) -> None:
        """One of the agent's pods changed (kopf's pod index has it already): when the pod its accounts' status is
        made from changed, refresh their status."""
        st = self.state
        st.count_pods()
        pod = st.pod_for(agent)
        rec = st.agent(agent)
        if rec.pod_seen and rec.seen_pod == pod:
            return
        rec.seen_pod, rec.pod_seen = pod, True
        a = st.fleet.get(agent)
        if a is not None:
            for n in a.accounts:
                await self.status.refresh(a.namespace, n)

    async def child_deleted(self, kind: str, ns: str, name: str) -> None:
        await self.children.child_deleted(kind, ns, name)
