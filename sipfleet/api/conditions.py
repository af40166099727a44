"""The condition types of a SipAccount's ``status.conditions`` and the reasons the operator gives them: the names
users and tools match on (``kubectl wait --for=condition=Ready``, the kubectl plugin, alerts). The operator computes
them (``operator/sipfleet_operator/conditions.py``); a registration failure's reason may also be one of the agent's
:mod:`sipfleet.api.reasons` or :mod:`sipfleet.api.credentials`' reasons, carried into ``Registered``.
"""

from __future__ import annotations

from . import keys

# ---- types (status.conditions[].type), in the order the operator writes them
READY = "Ready"
REGISTERED = "Registered"
ROUTE_IN_SYNC = "RouteInSync"
ROUTE_FLAPPING = keys.CONDITION_ROUTE_FLAPPING
AGENT_READY = "AgentReady"
DEGRADED = "Degraded"
TYPES = (READY, REGISTERED, ROUTE_IN_SYNC, ROUTE_FLAPPING, AGENT_READY, DEGRADED)

# ---- reasons
#: AgentReady True; not placed or the agent pod is starting; the pod went away or stopped reporting; the scheduler
#: cannot place it
AGENT_READY_REASON = "AgentReady"
AGENT_PENDING = "AgentPending"
AGENT_NOT_REPORTING = "AgentNotReporting"
UNSCHEDULABLE = "Unschedulable"
#: Registered: what the agent measured
REGISTERED_REASON = "Registered"
REGISTERING = "Registering"
UNREGISTERED = "Unregistered"
REGISTRATION_FAILED = "RegistrationFailed"  # a failure without a more precise reason of the agent's
#: RouteInSync
NOT_OBSERVED = "NotObserved"
IN_SYNC = "InSync"
#: in sync with a fallback route (spec.fallbackRoutes): the account failed over, the wire matches the active route
FAILED_OVER = keys.EVENT_FAILED_OVER
ROUTE_DRIFT = "RouteDrift"
#: RouteFlapping
FLAPPING = keys.REASON_FLAPPING
STABLE = keys.REASON_STABLE
#: Degraded
REPAIR_BACKOFF = "RepairBackoff"
AS_EXPECTED = "AsExpected"
#: Ready
READY_REASON = "Ready"
PAUSED = "Paused"
