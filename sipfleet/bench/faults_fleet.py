"""The fleet as the faults of ``sipfleet bench faults`` read it: agent pods, whether they are all ready, and who
hosts what (assignment ConfigMaps, agent Deployments). Reads only."""

from __future__ import annotations

import json

from sipfleet.api import keys

from .fleet import Env


#: the fleet's retry policy: the defaults wait up to 10 min after a 403 and 30 min after a 404 (an SRE's choice
#: for a real registrar); here back-off 5 s doubling to 20 s, auth and permanent failures retried every 20 s, so
#: "recovered after end" measures the fleet, bounded by these waits
BENCH_REGISTRATION = {"retryIntervalSeconds": 5, "firstRetryIntervalSeconds": 1, "jitterSeconds": 1,
                      "maxRetryIntervalSeconds": 20, "authFailureRetrySeconds": 20,
                      "permanentFailureRetrySeconds": 20}


def agent_pods(env: Env) -> list:
    """The fleet's Running agent pods that are not being deleted."""
    return [p for p in env.core.list_namespaced_pod(env.ns, label_selector=keys.AGENT_SELECTOR).items
            if not p.metadata.deletion_timestamp and p.status.phase == "Running"]


def agents_ready(env: Env) -> bool:
    """Every agent pod of the fleet Running with all containers ready (False when it cannot be read)."""
    try:
        pods = env.core.list_namespaced_pod(env.ns, label_selector=keys.AGENT_SELECTOR).items
    except Exception:  # noqa: BLE001 - the apiserver may be the fault
        return False
    return bool(pods) and all(not p.metadata.deletion_timestamp and p.status.phase == "Running" and all(
        cs.ready for cs in p.status.container_statuses or []) for p in pods)


def assignments(env: Env) -> dict[str, list[str]]:
    """Agent name -> the accounts its assignment ConfigMap names."""
    cms = env.core.list_namespaced_config_map(env.ns, label_selector=keys.AGENT_SELECTOR).items
    return {cm.metadata.name: [a["name"] for a in json.loads((cm.data or {}).get(keys.ASSIGNMENT_KEY)
                                                                or "{}").get("accounts", [])] for cm in cms}


def fleet_state(env: Env) -> tuple[list[dict], dict[str, list[str]], list[str]]:
    """The SipAccounts, the assignments and the agent Deployments' names."""
    from kubernetes import client

    deps = [d.metadata.name for d in client.AppsV1Api(env.api).list_namespaced_deployment(
        env.ns, label_selector=keys.AGENT_SELECTOR).items]
    return env.accounts(), assignments(env), deps
