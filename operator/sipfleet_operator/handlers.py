"""kopf handlers: one small handler per concern, each a thin call into the engine.

Importing this module registers the handlers with kopf's default registry. The operator's state lives in kopf's
own containers, none in this module: the engine's holder in the operator ``memo`` (``memo.activation``, built by
the startup handler from the settings ``main`` put there; every resource's memo is a copy of the operator's, so
all share the holder; activation.py builds the engine while this replica is the active one), and
two ``@kopf.index``es kopf keeps current from its watch streams before any other handler runs:
``agent_pods`` (agent name -> its pods' states) and ``accounts_by_secret`` ((namespace, Secret) -> SipAccount
names, which the Secret handler's filter reads).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone

import kopf
from pydantic import ValidationError

from sipfleet.api import models as m

from . import builders as b
from . import metrics
from .activation import Activation
from .config import Settings
from .engine import Engine
from .k8s import ApiError, Client
from .loading import NotLoaded
from .observed import pod_state
from .peering import Leadership

log = logging.getLogger("sipfleet.operator")

AGENT_LABELS = {b.LABEL_MANAGED_BY: b.MANAGED_BY, b.LABEL_COMPONENT: "agent"}


async def engine(memo: kopf.Memo) -> Engine:
    """The active replica's engine (activation.py: built on first use after this replica became active)."""
    act = memo.get("activation")
    assert act is not None, "operator not started"
    return await act.engine()


def configure(settings: kopf.OperatorSettings, ours: Settings) -> None:
    """kopf settings: our own annotations for kopf's bookkeeping (status is pruned by the CRD schema), quiet
    event posting, watch timeouts, peering."""
    settings.persistence.finalizer = f"{m.GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=m.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=m.GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # our own events are posted explicitly
    settings.watching.server_timeout = ours.server_timeout
    settings.watching.client_timeout = ours.client_timeout
    settings.watching.connect_timeout = ours.connect_timeout
    settings.peering.standalone = ours.standalone
    settings.peering.mandatory = not ours.standalone
    if not ours.standalone:
        settings.peering.name = ours.peering_name
        settings.peering.priority = ours.priority or 0
        settings.peering.lifetime = ours.peering_lifetime  # a replica that died is given up after this long
    settings.batching.error_delays = (1, 2, 5, 10, 30, 60)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, agent_pods: kopf.Index,
                  accounts_by_secret: kopf.Index, **_) -> None:
    ours = memo.get("settings")
    if ours is None:  # run by `kopf run` rather than sipfleet-operator: the settings are built here, once
        ours = memo["settings"] = Settings.from_env()
    configure(settings, ours)
    leadership = Leadership(Client(), name=ours.peering_name, namespaces=ours.namespaces,
                            identity=ours.identity, priority=ours.priority or 0, standalone=ours.standalone,
                            clock=lambda: datetime.now(timezone.utc), monotonic=time.monotonic)
    act = memo["activation"] = Activation(
        lambda: Engine(ours, pods=agent_pods, accounts_by_secret=accounts_by_secret), leadership)
    await act.start()


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_) -> None:
    act = memo.get("activation")
    if act is not None:
        await act.stop()
        await act.leadership.client.close()


# ---- indexes (kopf fills them from its watch streams before any resource handler runs) ------------------------


@kopf.index("", "v1", "pods", labels=AGENT_LABELS)
async def agent_pods(body, labels, memo: kopf.Memo, **_):
    """agent -> the state of each of its pods. Whether a pod was Ready once is kept in that pod's own memo.
    (async: kopf runs it in its event loop, not in a thread)"""
    agent = labels.get(b.LABEL_AGENT)
    if not agent:
        return None
    st = pod_state(dict(body), bool(memo.get("ever_ready")))
    if st.ready:
        memo["ever_ready"] = True
    return {agent: st}


@kopf.index(m.GROUP, m.VERSION, m.PLURAL)
async def accounts_by_secret(namespace, name, spec, **_):
    """(namespace, Secret name) -> the SipAccounts whose credentials it holds."""
    secret = (spec.get("credentials") or {}).get("secretName")
    return {(namespace, secret): name} if secret else None


def _temporary(e: Exception, where: str) -> kopf.TemporaryError:
    metrics.RECONCILE_ERRORS.labels(where=where).inc()
    return kopf.TemporaryError(str(e), delay=5)


# ---- SipAccount lifecycle: placement and children ----------------------------------------------------------------


@kopf.on.resume(m.GROUP, m.VERSION, m.PLURAL)
@kopf.on.create(m.GROUP, m.VERSION, m.PLURAL)
@kopf.on.update(m.GROUP, m.VERSION, m.PLURAL)
async def reconcile(body, memo: kopf.Memo, **_) -> None:
    try:
        eng = await engine(memo)
        if not eng.needs_reconcile(dict(body)):
            # account_event (kopf runs it first, for the same version) reconciled it already; one that failed
            # there is not marked reconciled, so kopf's retries of this handler still carry it out
            return
        await eng.reconcile_account(dict(body))
    except NotLoaded as e:  # its namespace's placements are not read yet: nothing may be placed before that
        raise kopf.TemporaryError(str(e), delay=10) from e
    except ApiError as e:
        raise _temporary(e, "reconcile") from e
    except ValidationError as e:  # the CRD admitted it, the models do not: a bug, retrying will not help
        metrics.RECONCILE_ERRORS.labels(where="spec").inc()
        raise kopf.PermanentError(f"spec rejected by the API models: {e.errors()[:1]}") from e


# No finalizer (optional=True): a deleted account goes at once, and nothing of ours can hold a namespace that is
# being deleted. Its agent's objects carry an ownerReference to every account they host, so the garbage collector
# removes them (and the agent unregisters on SIGTERM) even while no operator runs. A running operator takes the
# account out of its agent on the DELETED event (below), or here when deletion waits for other finalizers; the
# periodic sweep catches what both missed. kopf removes the finalizer older versions put on SipAccounts.
@kopf.on.delete(m.GROUP, m.VERSION, m.PLURAL, optional=True)
async def delete(body, memo: kopf.Memo, **_) -> None:
    try:
        await (await engine(memo)).remove_account(dict(body))
    except NotLoaded as e:
        raise kopf.TemporaryError(str(e), delay=10) from e
    except ApiError as e:
        raise _temporary(e, "delete") from e


# ---- SipAccount status written by the agent: conditions and the repair ladder ----------------------------------


@kopf.on.event(m.GROUP, m.VERSION, m.PLURAL)
async def account_event(event, body, memo: kopf.Memo, **_) -> None:
    eng = await engine(memo)
    ns, name = body.get("metadata", {}).get("namespace"), body.get("metadata", {}).get("name")
    if event.get("type") == "DELETED":
        try:
            await eng.remove_account(dict(body))
        except (NotLoaded, ApiError) as e:  # the sweep finds the agent still hosting it and tries again
            metrics.RECONCILE_ERRORS.labels(where="delete").inc()
            log.warning("%s/%s deleted; taking it out of its agent failed (the sweep retries): %s", ns, name, e)
            eng.forget(ns, name)
        return
    if eng.is_terminating(ns):
        return  # forgotten with its namespace (background.forget_terminating_namespaces): nothing to place
    eng.remember(dict(body))
    if not eng.is_loaded(ns):
        return  # its resume handler places it (and refreshes its status) once the namespace is read
    try:
        # Our annotations (repair, reregister, paused) reach reconcile here, not through kopf's update handler:
        # kopf's change detection drops every annotation under its storage prefix (sipfleet.io/, the progress
        # storage's ``clear``), so it never sees them change.
        if eng.needs_reconcile(dict(body)):
            await eng.reconcile_account(dict(body))
        else:
            await eng.refresh_status(ns, name)
    except ValidationError as e:
        metrics.RECONCILE_ERRORS.labels(where="spec").inc()
        log.error("%s/%s: spec rejected by the API models: %s", ns, name, e.errors()[:1])
    except ApiError as e:
        metrics.RECONCILE_ERRORS.labels(where="status").inc()
        log.warning("%s/%s: status update failed: %s", ns, name, e)


# ---- agent pods, Secrets, and children that vanish -------------------------------------------------------------


@kopf.on.event("", "v1", "pods", labels=AGENT_LABELS)
async def pod_event(labels, memo: kopf.Memo, **_) -> None:
    agent = labels.get(b.LABEL_AGENT)
    if not agent:
        return
    try:  # agent_pods has this event already
        await (await engine(memo)).on_pod(agent)
    except ApiError as e:
        metrics.RECONCILE_ERRORS.labels(where="pod").inc()
        log.warning("pod event handling failed: %s", e)


def _referenced_secret(name, namespace, accounts_by_secret: kopf.Index, **_) -> bool:
    return (namespace, name) in accounts_by_secret


@kopf.on.event("", "v1", "secrets", when=_referenced_secret)
async def secret_event(event, body, memo: kopf.Memo, **_) -> None:
    eng = await engine(memo)
    try:
        await eng.on_secret(event.get("type") or "", dict(body))
    except ApiError as e:
        metrics.RECONCILE_ERRORS.labels(where="secret").inc()
        log.warning("secret event handling failed: %s", e)


@kopf.on.event("", "v1", "configmaps", labels=AGENT_LABELS)
@kopf.on.event("apps", "v1", "deployments", labels=AGENT_LABELS)
async def child_event(event, body, resource, memo: kopf.Memo, **_) -> None:
    if event.get("type") != "DELETED":
        return
    eng = await engine(memo)  # acts only on agents already in the fleet
    kind = "ConfigMap" if resource.plural == "configmaps" else "Deployment"
    meta = body.get("metadata", {})
    try:
        await eng.child_deleted(kind, meta.get("namespace"), meta.get("name"))
    except ApiError as e:
        metrics.RECONCILE_ERRORS.labels(where="child").inc()
        log.warning("re-creating %s failed: %s", meta.get("name"), e)
