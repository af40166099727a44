"""kopf handlers: one small handler per concern, each a thin call into the engine.

Importing this module registers the handlers with kopf's default registry.
"""

from __future__ import annotations

import logging

import kopf
from pydantic import ValidationError

from sipfleet.api import models as m

from . import builders as b
from . import metrics
from .config import Settings
from .engine import Engine
from .k8s import ApiError
from .loading import NotLoaded

log = logging.getLogger("sipfleet.operator")

ENGINE: Engine | None = None
AGENT_LABELS = {b.LABEL_MANAGED_BY: b.MANAGED_BY, b.LABEL_COMPONENT: "agent"}


def engine() -> Engine:
    assert ENGINE is not None, "operator not started"
    return ENGINE


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
        settings.peering.priority = ours.priority
    settings.batching.error_delays = (1, 2, 5, 10, 30, 60)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_) -> None:
    global ENGINE
    ours = Settings.from_env()
    configure(settings, ours)
    ENGINE = Engine(ours)
    await ENGINE.load()
    ENGINE.start_background()


@kopf.on.cleanup()
async def cleanup(**_) -> None:
    if ENGINE is not None:
        await ENGINE.stop()


def _temporary(e: Exception, where: str) -> kopf.TemporaryError:
    metrics.RECONCILE_ERRORS.labels(where=where).inc()
    return kopf.TemporaryError(str(e), delay=5)


# ---- SipAccount lifecycle: placement and children ----------------------------------------------------------------


@kopf.on.resume(m.GROUP, m.VERSION, m.PLURAL)
@kopf.on.create(m.GROUP, m.VERSION, m.PLURAL)
@kopf.on.update(m.GROUP, m.VERSION, m.PLURAL)
async def reconcile(body, **_) -> None:
    try:
        await engine().reconcile_account(dict(body))
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
async def delete(body, **_) -> None:
    try:
        await engine().remove_account(dict(body))
    except NotLoaded as e:
        raise kopf.TemporaryError(str(e), delay=10) from e
    except ApiError as e:
        raise _temporary(e, "delete") from e


# ---- SipAccount status written by the agent: conditions and the repair ladder ----------------------------------


@kopf.on.event(m.GROUP, m.VERSION, m.PLURAL)
async def account_event(event, body, **_) -> None:
    eng = engine()
    ns, name = body.get("metadata", {}).get("namespace"), body.get("metadata", {}).get("name")
    if event.get("type") == "DELETED":
        try:
            await eng.remove_account(dict(body))
        except (NotLoaded, ApiError) as e:  # the sweep finds the agent still hosting it and tries again
            metrics.RECONCILE_ERRORS.labels(where="delete").inc()
            log.warning("%s/%s deleted; taking it out of its agent failed (the sweep retries): %s", ns, name, e)
            eng.forget(ns, name)
        return
    eng.remember(dict(body))
    if not eng.loader.is_loaded(ns):
        return  # its resume handler places it (and refreshes its status) once the namespace is read
    try:
        if eng.needs_reconcile(dict(body)):  # annotations (repair, reregister, paused) and un-pausing
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
async def pod_event(event, body, **_) -> None:
    eng = engine()  # the pod cache does not depend on the fleet being read
    try:
        await eng.on_pod(event.get("type") or "", dict(body))
    except ApiError as e:
        metrics.RECONCILE_ERRORS.labels(where="pod").inc()
        log.warning("pod event handling failed: %s", e)


def _referenced_secret(name, namespace, **_) -> bool:
    return ENGINE is not None and ENGINE.references_secret(namespace, name)


@kopf.on.event("", "v1", "secrets", when=_referenced_secret)
async def secret_event(event, body, **_) -> None:
    eng = engine()
    try:
        await eng.on_secret(event.get("type") or "", dict(body))
    except ApiError as e:
        metrics.RECONCILE_ERRORS.labels(where="secret").inc()
        log.warning("secret event handling failed: %s", e)


@kopf.on.event("", "v1", "configmaps", labels=AGENT_LABELS)
@kopf.on.event("apps", "v1", "deployments", labels=AGENT_LABELS)
async def child_event(event, body, resource, **_) -> None:
    if event.get("type") != "DELETED":
        return
    eng = engine()  # acts only on agents already in the fleet
    kind = "ConfigMap" if resource.plural == "configmaps" else "Deployment"
    meta = body.get("metadata", {})
    try:
        await eng.child_deleted(kind, meta.get("namespace"), meta.get("name"))
    except ApiError as e:
        metrics.RECONCILE_ERRORS.labels(where="child").inc()
        log.warning("re-creating %s failed: %s", meta.get("name"), e)
