"""Label, annotation and key names that clients outside the operator need (the kubectl plugin, scripts).

The operator defines these in ``operator/sipfleet_operator/builders.py`` for what it builds; this module holds the
same strings for readers that must not import the operator. ``tests/unit/test_kubectl_keys.py`` fails when the two
disagree.
"""

from __future__ import annotations

# user-facing annotations on a SipAccount (docs/architecture.md, "Annotations")
ANNOTATION_PAUSED = "sipfleet.io/paused"
ANNOTATION_REPAIR = "sipfleet.io/repair"
ANNOTATION_REREGISTER = "sipfleet.io/reregister"

# labels on every per-agent object the operator creates (ConfigMap, ServiceAccount, Role, RoleBinding, Deployment)
# and on the agent pods
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_AGENT = "sipfleet.io/agent"
LABEL_GROUP = "sipfleet.io/group"
MANAGED_BY = "sipfleet-operator"
AGENT_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_COMPONENT}=agent"

#: key of the agent's assignment (an ``AgentAssignment``) in its ConfigMap
ASSIGNMENT_KEY = "assignment.json"

# labels the Helm chart (charts/sipfleet) puts on the operator's Deployment and pod
LABEL_PART_OF = "app.kubernetes.io/part-of"
OPERATOR_SELECTOR = f"{LABEL_COMPONENT}=operator,{LABEL_PART_OF}=sipfleet"
#: the operator container's environment variable naming the namespaces it watches (empty: all)
ENV_WATCH_NAMESPACES = "SIPFLEET_WATCH_NAMESPACES"

# event reasons the operator posts on SipAccounts (operator/sipfleet_operator/ladder.py)
EVENT_ROUTE_DRIFT = "RouteDrift"
EVENT_ROUTE_REPAIRED = "RouteRepaired"
#: the flapping-route escalation (issue 11): a route that drifts more than spec.drift.flapThreshold times within
#: spec.drift.flapWindowSeconds (operator/sipfleet_operator/ladder.py, conditions.py)
EVENT_ROUTE_FLAPPING = "RouteFlapping"
CONDITION_ROUTE_FLAPPING = "RouteFlapping"
REASON_FLAPPING = "Flapping"
REASON_STABLE = "Stable"
#: the agent's aggregated event for its own repairs: one Event per account and burst, its count raised per self-heal
EVENT_ROUTE_SELF_HEALED = "RouteSelfHealed"
#: RepairRecord.trigger / LadderStatus.cause values used in code
TRIGGER_SELF_HEAL = "self-heal"
CAUSE_DRIFT = "Drift"
CAUSE_FLAPPING = "Flapping"
