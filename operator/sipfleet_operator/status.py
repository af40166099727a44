"""A SipAccount's operator-written status (conditions, the repair ladder, observedGeneration) and the ladder's
actions.

``refresh`` recomputes with the pure modules (conditions.compute, ladder.step, time passed in) from what is in
memory and promises: at most one status write per call, none when nothing changed (recomputing is idempotent),
so a status write happens once per real transition; one refresh of an account at a time; the ladder's next
wake-up scheduled (wakeups.py); its actions carried out after the status write (the repair token reaches the
agent with its children, a pod restart at most once a minute per pod, events last: nobody waits for them).
A repair token written here reaches the agent through that sync, so the watch event of our own write is not a
change to reconcile (``AccountRecord.reconciled`` moves to the new inputs): a reconcile per token re-read the
account's Secret and ran another pass of its agent, during a fleet-wide repair one per drifted account.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from pydantic import ValidationError

from sipfleet.api import credentials as creds_rules
from sipfleet.api import models as m

from . import conditions as cond
from . import ladder as lad
from . import metrics
from . import placement as pl
from .children import Children
from .events import Events
from .k8s import ApiError
from .observed import inputs_digest, is_deleting, is_paused, ref
from .state import State
from .wakeups import Wakeups

log = logging.getLogger("sipfleet.operator")

#: a pod the ladder deleted is not deleted again (for another account of its agent) within this long
RESTART_DEDUP_SECONDS = 60


class Status:
    def __init__(self, state: State, children: Children, events: Events, wakeups: Wakeups, clock: Callable):
        self.state, self.children, self.events, self.wakeups, self.clock = state, children, events, wakeups, clock

    async def refresh(self, ns: str, name: str) -> None:
        """Recompute conditions and run the ladder; patch status only when it changes; carry out actions."""
        st = self.state
        rec = st.accounts.get((ns, name))
        if rec is None:
            self.wakeups.schedule((ns, name), None)
            return
        async with rec.lock:
            body = rec.body
            if is_deleting(body):
                self.wakeups.schedule((ns, name), None)
                return
            try:
                spec = m.SipAccountSpec.model_validate(body.get("spec") or {})
                status = m.SipAccountStatus.model_validate(body.get("status") or {})
            except ValidationError as e:
                log.warning("%s/%s: cannot read spec/status: %s", ns, name, e.errors()[:1])
                metrics.RECONCILE_ERRORS.labels(where="status-parse").inc()
                return
            t = self.clock()
            paused = is_paused(body)
            placed = pl.find(st.fleet, ns, name)
            pod = st.pod_for(placed)
            info = st.secrets.get((ns, spec.credentials.secret_name))
            step = None
            if placed and not paused:
                step = lad.step(lad.Inputs(
                    drift=spec.drift, route=status.route, ladder=status.ladder, pod=pod, now=t,
                    backoff_cap_seconds=st.settings.degraded_backoff_cap_seconds,
                ))
            new_ladder = step.ladder if step is not None else status.ladder
            gen = (body.get("metadata") or {}).get("generation")
            conds = cond.compute(
                cond.Inputs(
                    generation=gen, placed_in=placed, credentials_problem=info.problem if info else None,
                    credentials_reason=info.reason if info else creds_rules.MISSING,
                    pod=pod, status=status.model_copy(update={"ladder": new_ladder}), paused=paused,
                ),
                t,
            )
            patch: dict[str, Any] = {}
            if conds != list(status.conditions):
                patch["conditions"] = cond.conditions_api(conds)
            if new_ladder != status.ladder and new_ladder is not None:
                patch["ladder"] = new_ladder.model_dump(mode="json", by_alias=True)
            if rec.synced_generation is not None and rec.synced_generation != status.observed_generation:
                patch["observedGeneration"] = rec.synced_generation
            if patch:
                try:
                    fresh = await st.client.merge_patch("SipAccount", ns, name, {"status": patch}, sub="status")
                except ApiError as e:
                    if e.status == 404:
                        self.wakeups.schedule((ns, name), None)
                        return
                    raise  # the ladder's state is not written: its wake-up stays as it was
                metrics.STATUS_PATCHES.inc()
                st.remember(fresh)
                if "ladder" in patch and rec.reconciled == inputs_digest(body) and step is not None and any(
                        isinstance(a, lad.RequestRepair) for a in step.actions):
                    # _act's sync_agent carries the new token; anything else that changed meanwhile still differs
                    rec.reconciled = inputs_digest({**body, "status": {**(body.get("status") or {}),
                                                                       "ladder": patch["ladder"]}})
            self.wakeups.schedule((ns, name), step.wake_at if step is not None else None)
            if step is not None and step.actions:
                await self._act(body, placed, step.actions)

    async def _act(self, body: dict, agent: str | None, actions) -> None:
        ns, name = ref(body)
        # events are best effort and nobody waits for them: post them after the repair request / pod restart
        # is on its way (one apiserver round trip less between drift seen and the new token reaching the agent)
        for a in sorted(actions, key=lambda a: isinstance(a, lad.Event)):
            if isinstance(a, lad.DriftSeen):
                metrics.DRIFT_SEEN.inc()
            elif isinstance(a, lad.Repaired):
                metrics.DRIFT_REPAIRED.labels(method=a.method).inc()
                metrics.REPAIR_SECONDS.observe(a.duration_ms / 1000.0)
            elif isinstance(a, lad.RequestRepair):
                if agent:
                    await self.children.sync_agent(agent)  # the new token is in status.ladder now: to the agent
            elif isinstance(a, lad.RestartPod):
                await self._restart_pod(ns, a.pod)
            elif isinstance(a, lad.Event):
                log.log(logging.WARNING if a.type == "Warning" else logging.INFO, "%s/%s %s: %s", ns, name,
                        a.reason, a.message)
                await self.events.post(body, a.type, a.reason, a.message)

    async def _restart_pod(self, ns: str, pod: str) -> None:
        loop = asyncio.get_running_loop()
        last = self.state.restarted_pods.get(pod)
        if last is not None and loop.time() - last < RESTART_DEDUP_SECONDS:
            return  # another account of the same agent asked for this restart already
        self.state.restarted_pods[pod] = loop.time()
        metrics.POD_RESTARTS.inc()
        await self.state.client.delete("Pod", ns, pod)
