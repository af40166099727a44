"""`sipfleet-operator`: run the kopf operator with metrics, liveness, JSON logs and settings from the env.

Environment (all optional): SIPFLEET_AGENT_IMAGE (default sipfleet/agent:0.1.0), SIPFLEET_WATCH_NAMESPACES
(comma-separated; empty = cluster-wide), SIPFLEET_METRICS_PORT (9090; 0 = off), SIPFLEET_LIVENESS_ENDPOINT
(http://127.0.0.1:8081/healthz; empty = off), SIPFLEET_STANDALONE (true; false enables kopf peering, which needs
kopf's KopfPeering/ClusterKopfPeering CRDs: see `sipfleet-operator peering-crds`; the peering objects are created
at start), SIPFLEET_PRIORITY (an integer, or auto: derived from the pod's name, so replicas differ),
SIPFLEET_PEERING_LIFETIME_SECONDS (15: a replica that stopped is given up after this long), SIPFLEET_LOG_FORMAT
(json|text), SIPFLEET_LOG_LEVEL, SIPFLEET_WATCH_SERVER_TIMEOUT/CLIENT_TIMEOUT/CONNECT_TIMEOUT.
Outside a cluster the operator uses KUBECONFIG.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
import sys
from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:
    from .config import Settings

PEERING_CRDS = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: clusterkopfpeerings.kopf.dev}
spec:
  scope: Cluster
  group: kopf.dev
  names: {kind: ClusterKopfPeering, plural: clusterkopfpeerings, singular: clusterkopfpeering}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          status: {type: object, x-kubernetes-preserve-unknown-fields: true}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: kopfpeerings.kopf.dev}
spec:
  scope: Namespaced
  group: kopf.dev
  names: {kind: KopfPeering, plural: kopfpeerings, singular: kopfpeering}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          status: {type: object, x-kubernetes-preserve-unknown-fields: true}
"""


def own_identity(env: dict[str, str], uid: int, host: str) -> str:
    """The operator's kopf identity: the pod's name in a cluster (``POD_ID``, else ``POD_NAME`` from the
    Downward API), else ``<user>@<host>``. kopf's own default asks the passwd database for the user name, which
    fails for a numeric non-root user without an /etc/passwd entry (the image runs as 65532)."""
    pod = env.get("POD_ID") or env.get("POD_NAME")
    if pod:
        return pod
    user = env.get("USER") or env.get("LOGNAME") or f"uid{uid}"
    return f"{user}@{host}"


def settings_from(args: argparse.Namespace, env: Mapping[str, str]) -> "Settings":
    """The operator's settings: the environment, with the command-line options on top (built once; the
    environment is read, never written)."""
    from .config import Settings

    settings = Settings.from_env(env)
    overrides: dict = {}
    if args.namespace:
        overrides["namespaces"] = tuple(dict.fromkeys(args.namespace))
    if args.metrics_port is not None:
        overrides["metrics_port"] = args.metrics_port
    if args.liveness is not None:
        overrides["liveness_endpoint"] = args.liveness or None
    if args.peering:
        overrides["standalone"] = False
    if args.agent_image:
        overrides["agent_image"] = args.agent_image
    return dataclasses.replace(settings, **overrides)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sipfleet-operator", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs="?", default="run", choices=["run", "peering-crds"])
    parser.add_argument("--namespace", "-n", action="append", default=[], help="watch this namespace (repeatable)")
    parser.add_argument("--metrics-port", type=int)
    parser.add_argument("--liveness", help="liveness endpoint URL, e.g. http://0.0.0.0:8081/healthz")
    parser.add_argument("--peering", action="store_true", help="use kopf peering (HA) instead of standalone")
    parser.add_argument("--agent-image")
    args = parser.parse_args(argv)
    if args.command == "peering-crds":
        # kopf's peering CRDs plus the peering object(s) an HA deployment needs: one ClusterKopfPeering when
        # watching cluster-wide, one KopfPeering per watched namespace otherwise (kopf pauses without them)
        sys.stdout.write(PEERING_CRDS)
        name = os.environ.get("SIPFLEET_PEERING_NAME", "sipfleet")
        if args.namespace:
            for ns in args.namespace:
                sys.stdout.write(f"---\napiVersion: kopf.dev/v1\nkind: KopfPeering\n"
                                 f"metadata: {{name: {name}, namespace: {ns}}}\n")
        else:
            sys.stdout.write(f"---\napiVersion: kopf.dev/v1\nkind: ClusterKopfPeering\nmetadata: {{name: {name}}}\n")
        return 0
    import kopf
    from prometheus_client import start_http_server

    from . import handlers  # noqa: F401  (registers the handlers)
    from . import kopf_namespaces, logs

    try:
        settings = settings_from(args, os.environ)
    except ValueError as e:  # a misconfiguration: one line naming the variable, not a traceback
        print(f"sipfleet-operator: bad setting: {e}", file=sys.stderr)
        return 2
    from .peering import auto_priority

    identity = own_identity(dict(os.environ), os.getuid(), socket.gethostname())
    settings = dataclasses.replace(settings, identity=identity, priority=(
        auto_priority(identity) if settings.priority is None else settings.priority))
    logs.setup(settings.log_format, settings.log_level)
    if settings.namespaces:  # only a namespaced kopf observes namespaces
        kopf_namespaces.install()
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_address)
    kopf.run(
        identity=identity,
        standalone=settings.standalone,
        peering_name=None if settings.standalone else settings.peering_name,
        priority=None if settings.standalone else settings.priority,
        namespaces=list(settings.namespaces),
        clusterwide=not settings.namespaces,
        liveness_endpoint=settings.liveness_endpoint,
        memo=kopf.Memo(settings=settings),  # the startup handler builds the engine from these (handlers.py)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
