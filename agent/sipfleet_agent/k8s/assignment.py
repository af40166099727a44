"""The agent's assignment ConfigMap: read it (list by name, as RBAC allows) and watch it, calling back with every
new AgentAssignment. Promise: a 410 (too old) re-lists; connection drops watch again; a deleted ConfigMap means
"no accounts"; assignments that cannot be parsed are logged and skipped.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from sipfleet.api import kerrors
from sipfleet.api.models import AgentAssignment

from .. import logs
from ..config import ConfigError, parse_assignment
from . import API_TIMEOUT_S

LOG = logging.getLogger("sipfleet_agent.cluster")
ASSIGNMENT_KEY = "assignment.json"


class AssignmentSource:
    def __init__(self, core: Any, namespace: str, name: str, agent_name: str, watch_timeout: int = 120):
        self.core = core
        self.ns = namespace
        self.name = name
        self.agent_name = agent_name
        self.watch_timeout = watch_timeout
        self.rv: str | None = None
        self.text: str | None = None

    def read(self) -> AgentAssignment:
        # A list (one name, by field selector) answers with the collection's current resourceVersion: a watch
        # from there never starts "too old", unlike the object's own version.
        lst = self.core.list_namespaced_config_map(self.ns, field_selector=f"metadata.name={self.name}",
                                             _request_timeout=API_TIMEOUT_S)
        if not lst.items:
            raise ConfigError(f"ConfigMap {self.ns}/{self.name} not found")
        text = (lst.items[0].data or {}).get(ASSIGNMENT_KEY)
        if text is None:
            raise ConfigError(f"ConfigMap {self.ns}/{self.name} has no key {ASSIGNMENT_KEY}")
        a = parse_assignment(text)
        self.rv = lst.metadata.resource_version
        self.text = a.model_dump_json()
        return a

    def wait_first(self, stopped: Callable[[float], bool]) -> AgentAssignment | None:
        from kubernetes.client.exceptions import ApiException

        delay = 1.0
        while not stopped(0):
            try:
                return self.read()
            except (ApiException, ConfigError) as e:
                LOG.warning("waiting for the assignment ConfigMap %s/%s: %s", self.ns, self.name, getattr(e, "reason", e))
                if stopped(delay):
                    return None
                delay = min(10.0, delay * 2)
        return None

    def watch(self, apply: Callable[[AgentAssignment], None], stopped: Callable[[float], bool],
              retry_needed: Callable[[], bool]) -> None:
        """Until ``stopped(0)``: call ``apply`` with each changed assignment (also the same one again while
        ``retry_needed()``, e.g. Secrets not readable yet)."""
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        while not stopped(0):
            w = watch.Watch()
            try:
                for ev in w.stream(self.core.list_namespaced_config_map, self.ns,
                                   field_selector=f"metadata.name={self.name}", resource_version=self.rv,
                                   timeout_seconds=self.watch_timeout, allow_watch_bookmarks=True,
                                   _request_timeout=self.watch_timeout + API_TIMEOUT_S):
                    if stopped(0):
                        break
                    obj, kind = ev["object"], ev["type"]
                    # BOOKMARK (and ERROR) objects can arrive as plain dicts, not V1ConfigMap
                    if isinstance(obj, dict):
                        rv_now = (obj.get("metadata") or {}).get("resourceVersion")
                        data = obj.get("data") or {}
                    else:
                        rv_now = obj.metadata.resource_version if obj.metadata else None
                        data = obj.data or {}
                    if kind == "ERROR":
                        if isinstance(obj, dict) and obj.get("code") == 410:
                            raise ApiException(status=410, reason="Gone")
                        LOG.warning("assignment watch error event: %s", obj)
                        break
                    if rv_now:
                        self.rv = rv_now
                    if kind == "BOOKMARK":
                        continue
                    if kind == "DELETED":
                        LOG.warning("assignment ConfigMap deleted: removing all accounts")
                        apply(AgentAssignment(agent=self.agent_name))
                        continue
                    try:
                        a = parse_assignment(data.get(ASSIGNMENT_KEY) or "")
                    except ConfigError as e:
                        LOG.error("assignment ignored: %s", e)
                        continue
                    if a.model_dump_json() == self.text and not retry_needed():
                        continue
                    self.text = a.model_dump_json()
                    logs.log(LOG, logging.INFO, "assignment changed: applying", accounts=len(a.accounts))
                    apply(a)
            except ApiException as e:
                if isinstance(kerrors.from_api_exception(e), kerrors.Gone):  # version too old: re-list, carry on
                    time.sleep(0.5)
                    try:
                        apply(self.read())
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
            if retry_needed() and not stopped(0):
                # Secrets that could not be read are tried again after every watch round.
                try:
                    apply(self.read())
                except (ApiException, ConfigError) as e:
                    LOG.warning("re-reading the assignment failed: %s", e)
