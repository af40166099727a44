"""Every label, annotation and key name sipfleet uses, and the reasons of the Events it posts: the one place they
are defined. The operator (which builds the objects), the agent, the kubectl plugin and scripts import them from
here; condition types and reasons are in :mod:`sipfleet.api.conditions`, the agent's failure reasons in
:mod:`sipfleet.api.reasons`.
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

# annotations the operator keeps on the objects it builds
#: the agent's group key (placement.GroupKey as JSON) on its ConfigMap: what a restarted operator places by
ANNOTATION_GROUP_KEY = "sipfleet.io/group-key"
ANNOTATION_TEMPLATE_HASH = "sipfleet.io/template-hash"
#: the size class (sizing.py) the Deployment's resources were built for: a restarted operator keeps it
ANNOTATION_SIZE = "sipfleet.io/size-class"
#: digest of the desired object as last applied (lets a restarted operator skip unchanged children)
ANNOTATION_APPLIED = "sipfleet.io/applied-digest"

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
#: the agent's events of failover (spec.fallbackRoutes): the account left its active route for the next one, and came
#: back to the primary once it answered again (agent/sipfleet_agent/supervisor/failover.py)
EVENT_FAILED_OVER = "FailedOver"
EVENT_FAILED_BACK = "FailedBack"
#: the ladder restarts (or waits to restart) the agent pod of an account that stays drifted
EVENT_RESTARTING_AGENT = "RestartingAgent"
#: the ladder gave up for now on an account's route and backs off (its Degraded condition says the same)
EVENT_DEGRADED = "Degraded"
#: reportingComponent of the operator's Events
EVENT_REPORTING_COMPONENT = "sipfleet.io/operator"
#: an assignment ConfigMap a (restarted) operator cannot read: its accounts are placed again (restore.py)
EVENT_ASSIGNMENT_UNREADABLE = "AssignmentUnreadable"
#: RepairRecord.trigger / LadderStatus.cause values used in code
TRIGGER_SELF_HEAL = "self-heal"
CAUSE_DRIFT = "Drift"
CAUSE_FLAPPING = "Flapping"
