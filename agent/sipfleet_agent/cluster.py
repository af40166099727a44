"""Cluster mode: the assignment comes from the agent's ConfigMap, credentials from Secrets, status goes to
the ``status`` subresource of the agent's own SipAccounts (JSON merge patches, only when something changed).

Environment (docs/architecture.md): ``SIPFLEET_AGENT_NAME``, ``SIPFLEET_ASSIGNMENT_CONFIGMAP``, ``POD_NAME``,
``POD_NAMESPACE``, ``POD_IP``. SIP and HTTP bind to ``POD_IP`` (it cannot be in the ConfigMap, which is
written before the Pod exists). RBAC needed: configmaps get/list/watch on the one name (the watch uses a
``metadata.name`` field selector), secrets get, sipaccounts get, sipaccounts/status get/patch.

The same :class:`~sipfleet_agent.engine.Agent` as standalone mode: only the edges differ.
"""

from __future__ import annotations

import base64
import logging
import os
import random
import threading
import time
from typing import Any

from sipfleet.api.models import GROUP, PLURAL, VERSION, AgentAccount, AgentAssignment

from . import __version__, logs
from .config import ConfigError, ResolvedAccount, Secretish, parse_assignment
from .engine import EXIT_RESTART, Agent, AgentError, RestartRequired
from .httpserver import serve
from .main import install_signals
from .status import apply_merge_patch, merge_patch, now_iso

LOG = logging.getLogger("sipfleet_agent.cluster")
ASSIGNMENT_KEY = "assignment.json"
SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
OWNED = ("registration", "route", "agent")


def _load_kube_config() -> Any:
    from kubernetes import client, config

    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
    else:
        config.load_kube_config()
    return client.ApiClient()


class StatusWriter:
    """Patches ``status.registration/route/agent`` of SipAccounts from its own thread.

    Keeps a copy of what the server holds (read once, then updated from each successful patch) and
    sends only the merge patch between that copy and the new document; no request when it is empty.
    Newer documents for the same account replace queued ones.
    """

    def __init__(self, custom: Any, default_namespace: str):
        self.custom = custom
        self.ns = default_namespace
        self._pending: dict[tuple[str, str], dict] = {}
        self._known: dict[tuple[str, str], dict] = {}
        self._cond = threading.Condition()
        self._stop = False
        self.patches = 0
        self._thread = threading.Thread(target=self._run, name="status-writer", daemon=True)
        self._thread.start()

    def submit(self, key: tuple[str | None, str], name: str, doc: dict) -> None:
        ns = key[0] or self.ns
        with self._cond:
            self._pending[(ns, name)] = doc
            self._cond.notify()

    def stop(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending and time.monotonic() < deadline:
                self._cond.wait(0.1)
            self._stop = True
            self._cond.notify()
        self._thread.join(max(0.1, deadline - time.monotonic()))

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stop:
                    self._cond.wait()
                if self._stop and not self._pending:
                    return
                batch = self._pending
                self._pending = {}
            for (ns, name), doc in batch.items():
                if not self._write(ns, name, doc):
                    with self._cond:
                        self._pending.setdefault((ns, name), doc)
                    time.sleep(1 + random.random())

    def _current(self, ns: str, name: str) -> dict | None:
        from kubernetes.client.exceptions import ApiException

        if (ns, name) in self._known:
            return self._known[(ns, name)]
        try:
            obj = self.custom.get_namespaced_custom_object_status(GROUP, VERSION, ns, PLURAL, name)
        except ApiException as e:
            if e.status == 404:
                return None
            LOG.warning("cannot read SipAccount %s/%s status: %s", ns, name, e.reason)
            cur: dict = {}
        else:
            status = (obj or {}).get("status") or {}
            cur = {k: status[k] for k in OWNED if k in status}
        self._known[(ns, name)] = cur
        return cur

    def _write(self, ns: str, name: str, doc: dict) -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            cur = self._current(ns, name)
            if cur is None:
                LOG.info("SipAccount %s/%s not found: status not written", ns, name)
                return True
            patch = merge_patch(cur, {k: doc[k] for k in OWNED if k in doc} | {k: cur[k] for k in cur if k not in doc})
            if patch is None:
                return True
            self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, ns, PLURAL, name, {"status": patch}, _content_type="application/merge-patch+json"
            )
            self._known[(ns, name)] = apply_merge_patch(cur, patch)
            self.patches += 1
            return True
        except ApiException as e:
            if e.status == 404:
                self._known.pop((ns, name), None)
                return True
            if e.status == 409 or e.status == 422:
                self._known.pop((ns, name), None)  # re-read what the server holds
            LOG.warning("status patch for %s/%s failed: %s %s", ns, name, e.status, e.reason)
            return False
        except Exception as e:  # noqa: BLE001 - connection problems: retry
            LOG.warning("status patch for %s/%s failed: %s", ns, name, e)
            return False


class SecretResolver:
    """Reads each account's Secret through the API (``get``), cached by (namespace, name, secretVersion)."""

    def __init__(self, core: Any, default_namespace: str):
        self.core = core
        self.ns = default_namespace
        self._cache: dict[tuple[str, str, str | None], Secretish] = {}

    def __call__(self, acc: AgentAccount) -> Secretish:
        from kubernetes.client.exceptions import ApiException

        c = acc.credentials
        if not c.secret_name:
            raise ConfigError(f"account {acc.name}: cluster mode needs credentials.secretName")
        ns = acc.namespace or self.ns
        key = (ns, c.secret_name, c.secret_version)
        if key in self._cache:
            return self._cache[key]
        try:
            secret = self.core.read_namespaced_secret(c.secret_name, ns)
        except ApiException as e:
            raise ConfigError(f"credentials: Secret {ns}/{c.secret_name} not readable ({e.status} {e.reason})") from None
        data = secret.data or {}

        def field(k: str) -> str | None:
            v = data.get(k)
            return base64.b64decode(v).decode().rstrip("\r\n") if v is not None else None

        username = field(c.username_key) or c.username
        password = field(c.password_key)
        if not username or password is None:
            missing = c.username_key if not username else c.password_key
            raise ConfigError(f"credentials: Secret {ns}/{c.secret_name} has no key {missing!r}")
        creds = Secretish(username=username, password=password, realm=c.realm or "*")
        self._cache = {k: v for k, v in self._cache.items() if k[:2] != key[:2]}
        self._cache[key] = creds
        return creds


def run_cluster(args: Any) -> int:
    from kubernetes import client, watch
    from kubernetes.client.exceptions import ApiException

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
    pod = env.get("POD_NAME")
    pod_ip = env.get("POD_IP")
    api = _load_kube_config()
    core = client.CoreV1Api(api)
    custom = client.CustomObjectsApi(api)

    def read_assignment() -> tuple[AgentAssignment, str]:
        # A list (one name, by field selector, as RBAC allows) answers with the collection's current
        # resourceVersion: a watch from there never starts "too old", unlike the object's own version.
        lst = core.list_namespaced_config_map(ns, field_selector=f"metadata.name={cm_name}")
        if not lst.items:
            raise ConfigError(f"ConfigMap {ns}/{cm_name} not found")
        text = (lst.items[0].data or {}).get(ASSIGNMENT_KEY)
        if text is None:
            raise ConfigError(f"ConfigMap {ns}/{cm_name} has no key {ASSIGNMENT_KEY}")
        return parse_assignment(text), lst.metadata.resource_version

    delay = 1.0
    while True:
        try:
            assignment, rv = read_assignment()
            break
        except (ApiException, ConfigError) as e:
            LOG.warning("waiting for the assignment ConfigMap %s/%s: %s", ns, cm_name, getattr(e, "reason", e))
            time.sleep(delay)
            delay = min(10.0, delay * 2)

    settings = assignment.settings
    if pod_ip:
        settings = settings.model_copy(update={"sip_address": pod_ip, "http_address": pod_ip})
    writer = StatusWriter(custom, ns)
    resolver = SecretResolver(core, ns)
    broken: dict[tuple, str] = {}

    def resolve(a: AgentAssignment) -> list[ResolvedAccount]:
        out = []
        for acc in a.accounts:
            key = (acc.namespace, acc.name)
            try:
                out.append(ResolvedAccount(acc, resolver(acc)))
                broken.pop(key, None)
            except ConfigError as e:
                msg = str(e)
                if broken.get(key) != msg:
                    LOG.error("account %s: %s", acc.name, msg)
                    writer.submit(key, acc.name, {"registration": {"state": "Failed", "reason": msg, "lastFailure": now_iso()}})
                broken[key] = msg
        return out

    agent = Agent(settings, writer.submit, name=agent_name, pod=pod, self_heal=args.self_heal)
    agent.pjsip_log_level = getattr(args, "pjsip_log_level", 2)
    install_signals(agent)
    try:
        http = serve(agent, settings.http_address, settings.http_port, args.debug_hooks)
    except OSError as e:
        LOG.error("cannot bind HTTP on %s:%s: %s", settings.http_address, settings.http_port, e)
        return 1
    logs.log(LOG, logging.INFO, "agent starting (cluster)", version=__version__, agent=agent_name, namespace=ns,
             configmap=cm_name, pod=pod, pod_ip=pod_ip, accounts=len(assignment.accounts))
    try:
        agent.start(resolve(assignment), specs=list(assignment.accounts))
    except RestartRequired:
        agent.wait(30)
        writer.stop()
        return EXIT_RESTART
    except (AgentError, ValueError) as e:
        LOG.error("start failed: %s", e)
        agent.request_stop(1)
        agent.wait(30)
        writer.stop()
        return 1

    state = {"rv": rv, "text": assignment.model_dump_json()}
    watch_timeout = max(1, int(env.get("SIPFLEET_AGENT_WATCH_TIMEOUT", "120")))

    def apply(a: AgentAssignment) -> None:
        if a.settings.model_dump_json() != assignment.settings.model_dump_json():
            LOG.warning("settings changes need a restart; applying account changes only")
        try:
            agent.apply(resolve(a)).result(60)
        except RestartRequired:
            pass
        except Exception as e:  # noqa: BLE001
            if agent.wait(0):
                return  # stopping: nothing to apply any more
            LOG.error("applying the assignment failed: %s", e)

    def watch_loop() -> None:
        while not agent.wait(0):
            w = watch.Watch()
            try:
                for ev in w.stream(core.list_namespaced_config_map, ns, field_selector=f"metadata.name={cm_name}",
                                   resource_version=state["rv"], timeout_seconds=watch_timeout,
                                   allow_watch_bookmarks=True):
                    if agent.wait(0):
                        break
                    obj = ev["object"]
                    kind = ev["type"]
                    # BOOKMARK (and ERROR) objects can arrive as plain dicts, not V1ConfigMap
                    if isinstance(obj, dict):
                        meta = obj.get("metadata") or {}
                        rv_now = meta.get("resourceVersion")
                        data = obj.get("data") or {}
                    else:
                        rv_now = obj.metadata.resource_version if obj.metadata else None
                        data = obj.data or {}
                    if kind == "ERROR":
                        code = obj.get("code") if isinstance(obj, dict) else None
                        if code == 410:
                            raise ApiException(status=410, reason="Gone")
                        LOG.warning("assignment watch error event: %s", obj)
                        break
                    if rv_now:
                        state["rv"] = rv_now
                    if kind == "BOOKMARK":
                        continue
                    if kind == "DELETED":
                        LOG.warning("assignment ConfigMap deleted: removing all accounts")
                        apply(AgentAssignment(agent=agent_name))
                        continue
                    text = data.get(ASSIGNMENT_KEY)
                    try:
                        a = parse_assignment(text or "")
                    except ConfigError as e:
                        LOG.error("assignment ignored: %s", e)
                        continue
                    if a.model_dump_json() == state["text"] and not broken:
                        continue
                    state["text"] = a.model_dump_json()
                    logs.log(LOG, logging.INFO, "assignment changed: applying", accounts=len(a.accounts))
                    apply(a)
            except ApiException as e:
                if e.status == 410:  # resource version too old: re-list and carry on
                    time.sleep(0.5)
                    try:
                        a, state["rv"] = read_assignment()
                        state["text"] = a.model_dump_json()
                        apply(a)
                    except (ApiException, ConfigError) as e2:
                        LOG.warning("re-reading the assignment failed: %s", e2)
                else:
                    LOG.warning("assignment watch failed: %s %s", e.status, e.reason)
                    time.sleep(2)
            except Exception as e:  # noqa: BLE001 - connection drops: watch again
                LOG.warning("assignment watch interrupted: %s", e)
                time.sleep(2)
            finally:
                w.stop()
            if broken and not agent.wait(0):
                # Secrets that could not be read are tried again after every watch round.
                try:
                    a, _ = read_assignment()
                    apply(a)
                except (ApiException, ConfigError) as e:
                    LOG.warning("re-reading the assignment failed: %s", e)

    t = threading.Thread(target=watch_loop, name="assignment-watch", daemon=True)
    t.start()
    while not agent.wait(1.0):
        pass
    writer.stop()
    http.shutdown()
    logs.log(LOG, logging.INFO, "agent exited", exit_code=agent.exit_code, status_patches=writer.patches)
    return agent.exit_code
