"""Cluster mode's edges around the shared :class:`~sipfleet_agent.supervisor.runtime.Supervisor`: the assignment
from the agent's ConfigMap, credentials from Secrets, status to the SipAccounts' ``status`` subresource, Events.

Environment (docs/architecture.md): ``SIPFLEET_AGENT_NAME``, ``SIPFLEET_ASSIGNMENT_CONFIGMAP``, ``POD_NAME``,
``POD_NAMESPACE``, ``POD_IP``. SIP and HTTP bind to ``POD_IP`` (it cannot be in the ConfigMap, which is written
before the Pod exists). RBAC: configmaps get/list/watch on the one name, secrets get, sipaccounts get,
sipaccounts/status get/patch, events create.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from sipfleet.api.models import AgentAssignment
from sipfleet.api.reasons import TLS_CONFIG_INVALID

from .. import __version__, logs
from ..config import ConfigError, ResolvedAccount
from ..tlsmaterial import TlsError
from ..httpserver import serve
from ..status import now_iso
from ..supervisor.procenv import claim_stdout, install_signals
from ..supervisor.runtime import Supervisor
from .assignment import AssignmentSource
from .events import EventRecorder
from .secrets import SecretResolver
from .tlsrefs import TlsResolver
from .statuswriter import StatusWriter

LOG = logging.getLogger("sipfleet_agent.cluster")
SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


class KubeEdge:
    def __init__(self, writer: StatusWriter, events: EventRecorder):
        self.writer = writer
        self.events = events

    def status(self, key: tuple, name: str, doc: dict) -> None:
        self.writer.submit(key, name, doc)

    def event(self, key: tuple, name: str, type_: str, reason: str, message: str, count: int = 1) -> None:
        self.events.record(key[0], name, type_, reason, message, count)


def _load_kube_config() -> Any:
    from kubernetes import client, config

    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
    else:
        config.load_kube_config()
    return client.ApiClient()


def run_cluster(args: Any) -> int:
    from kubernetes import client

    claim_stdout()
    logs.setup(args.log_level)
    env = os.environ
    agent_name = env.get("SIPFLEET_AGENT_NAME")
    if not agent_name:
        LOG.error("SIPFLEET_AGENT_NAME is not set")
        return 2
    cm_name = env.get("SIPFLEET_ASSIGNMENT_CONFIGMAP") or agent_name
    ns = env.get("POD_NAMESPACE")
    if not ns:
        try:
            ns = open(SA_NAMESPACE_FILE).read().strip()
        except OSError:
            LOG.error("POD_NAMESPACE is not set")
            return 2
    pod, pod_ip = env.get("POD_NAME"), env.get("POD_IP")
    api = _load_kube_config()
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    source = AssignmentSource(core, ns, cm_name, agent_name, max(1, int(env.get("SIPFLEET_AGENT_WATCH_TIMEOUT", "120"))))
    early_stop = threading.Event()
    import signal as _signal

    _signal.signal(_signal.SIGTERM, lambda s, f: early_stop.set())
    assignment = source.wait_first(early_stop.wait)
    if assignment is None:
        return 0
    settings = assignment.settings
    if pod_ip:
        settings = settings.model_copy(update={"sip_address": pod_ip, "http_address": pod_ip})
    writer = StatusWriter(custom, ns)
    resolver = SecretResolver(core, ns)
    tls_resolver = TlsResolver(core, ns)
    broken: dict[tuple, str] = {}

    def resolve(a: AgentAssignment) -> list[ResolvedAccount]:
        out = []
        tls_resolver.pass_cache.clear()
        resolver.prefetch(a.accounts)
        for acc in a.accounts:
            key = (acc.namespace, acc.name)
            try:
                out.append(ResolvedAccount(acc, resolver(acc), tls=tls_resolver(acc)))
                broken.pop(key, None)
            except ConfigError as e:
                msg = str(e)
                if broken.get(key) != msg:
                    LOG.error("account %s: %s", acc.name, msg)
                    reg = {"state": "Failed", "reason": msg, "lastFailure": now_iso()}
                    if isinstance(e, TlsError):
                        reg["failureReason"] = TLS_CONFIG_INVALID
                    writer.submit(key, acc.name, {"registration": reg})
                broken[key] = msg
        return out

    sup = Supervisor(settings, KubeEdge(writer, EventRecorder(core, ns, pod)), name=agent_name, pod=pod,
                     self_heal=args.self_heal or settings.self_heal, pjsip_log_level=getattr(args, "pjsip_log_level", 2),
                     log_level=args.log_level)
    install_signals(sup)
    if early_stop.is_set():
        return 0
    try:
        http = serve(sup, settings.http_address, settings.http_port, args.debug_hooks)
    except OSError as e:
        LOG.error("cannot bind HTTP on %s:%s: %s", settings.http_address, settings.http_port, e)
        return 1
    logs.log(LOG, logging.INFO, "agent starting (cluster)", version=__version__, agent=agent_name, namespace=ns,
             configmap=cm_name, pod=pod, pod_ip=pod_ip, accounts=len(assignment.accounts))
    sup.start(resolve(assignment))
    lock, current = threading.Lock(), [assignment]

    def apply(a: AgentAssignment) -> None:
        if a.settings.model_dump_json() != assignment.settings.model_dump_json():
            LOG.warning("settings changes need a restart; applying account changes only")
        with lock:
            current[0] = a
            sup.apply(resolve(a))

    threading.Thread(target=source.watch, args=(apply, sup.wait, lambda: bool(broken)), name="assignment-watch",
                     daemon=True).start()
    # TLS material is read again every resync period: a rotated CA or client certificate (same names, new
    # content) gets a worker with a new TLS transport; the other workers are not touched (Supervisor.apply)
    resync_s = max(1.0, float(env.get("SIPFLEET_AGENT_TLS_RESYNC_SECONDS", "60")))
    next_resync = time.monotonic() + resync_s
    while not sup.wait(1.0):
        if time.monotonic() >= next_resync:
            next_resync = time.monotonic() + resync_s
            if any(acc.tls is not None for acc in current[0].accounts):
                apply(current[0])
    writer.stop()
    http.shutdown()
    logs.log(LOG, logging.INFO, "agent exited", exit_code=sup.exit_code, status_patches=writer.patches)
    return sup.exit_code
