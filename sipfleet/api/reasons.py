"""Machine-readable reasons the agent reports in ``status.registration.failureReason`` (and the operator carries
into the ``Registered`` condition), and the pjsua 2.15.1 limits they are about.

The limits are facts of the wheel we cannot patch (pjproject 2.15.1, see docs/hostile-registrars.md):

* ``PJSUA_ACC_MAX_PROXIES`` (8): ``update_service_route()`` in ``pjsip/src/pjsua-lib/pjsua_acc.c`` copies the
  Service-Route URIs of a 2xx into an array of this size; more URIs across several headers write past it and the
  process dies (SIGSEGV).
* ``PJSIP_REGISTER_CLIENT_DELAY_BEFORE_REFRESH`` (5 s): ``schedule_registration()`` in
  ``pjsip/src/pjsip-ua/sip_reg.c`` refreshes at ``expiry - delay`` in unsigned arithmetic, at least 5 s after the
  answer: a granted expiry at or below the margin is never refreshed in time (or at all).
* ``PJSIP_MAX_PKT_LEN`` (4000 bytes): the receive buffer of every transport (``pjsip/include/pjsip/sip_config.h``);
  a longer UDP datagram is cut to it by ``recvfrom()`` and parsed as if whole, a longer TCP message is dropped.
"""

from __future__ import annotations

#: pjsip's receive buffer in bytes (PJSIP_MAX_PKT_LEN): a UDP answer this long may have been cut.
PJSIP_MAX_PKT_LEN = 4000
#: Service-Route URIs pjsua 2.15.1 holds per account (PJSUA_ACC_MAX_PROXIES).
PJSUA_MAX_SERVICE_ROUTE_URIS = 8
#: pjsip's refresh margin and minimum refresh delay in seconds (PJSIP_REGISTER_CLIENT_DELAY_BEFORE_REFRESH).
PJSIP_REFRESH_MARGIN_SECONDS = 5

#: A 2xx to REGISTER that pjsua would mishandle fatally was refused; the account is quarantined for a while.
REGISTRAR_RESPONSE_REJECTED = "RegistrarResponseRejected"
#: The granted binding expired without a successful refresh: no longer registered.
REGISTRATION_LAPSED = "RegistrationLapsed"

#: A 2xx to a REGISTER that asked for a binding granted none (expires 0 / no Contact of ours): not registered, and
#: retried with back-off like a failure (a quiet "Unregistered" would never be retried).
REGISTRAR_GRANTED_NO_BINDING = "RegistrarGrantedNoBinding"

#: The registrar answered, but pjsip dropped the answer as unparsable (e.g. a Contact with a syntax error).
REGISTRAR_RESPONSE_UNPARSABLE = "RegistrarResponseUnparsable"

#: Without detection: the worker died by a crash signal right after receiving a 2xx to this account's REGISTER,
#: in a crash loop (the supervisor's attribution, :mod:`sipfleet_agent.supervisor.runtime`).
REGISTRAR_RESPONSE_CRASHED_WORKER = "RegistrarResponseCrashedWorker"

#: The registrar's answer did not fit pjsip's receive buffer (PJSIP_MAX_PKT_LEN, 4000 bytes): dropped (TCP).
REGISTRAR_RESPONSE_OVERSIZED = "RegistrarResponseOversized"

#: The registrar's answer over UDP filled pjsip's receive buffer (PJSIP_MAX_PKT_LEN): the datagram was cut there
#: and pjsip parsed the rest as if it were whole, so what the answer granted (Expires, Service-Route) is unknown.
#: A 2xx so cut is not counted as a binding: ``Failed``, retried with back-off.
REGISTRAR_RESPONSE_TRUNCATED = "RegistrarResponseTruncated"

# Failure classes of a REGISTER (the agent's retry policy, agent/sipfleet_agent/worker/retrypolicy.py;
# docs/registration-policy.md). As ``failureReason`` they name what failed; as ``nextAttemptReason`` why the next
# REGISTER waits as long as it does.

#: 401/407 to a REGISTER that answered a fresh challenge, or 403: the credentials were refused. Retried only every
#: ``spec.registration.authFailureRetrySeconds``.
AUTH_FAILED = "AuthFailed"
#: 404 or 6xx: an answer that does not change by retrying soon; slow retries (``permanentFailureRetrySeconds``).
PERMANENT_FAILURE = "PermanentFailure"
#: a 3xx the account does not follow (``redirectPolicy: refuse``, more than ``maxRedirects`` in a row, a target
#: already seen in the chain, or no usable Contact); back-off from the configured registrar.
REDIRECT_REFUSED = "RedirectRefused"
#: next attempt: exponential back-off with jitter.
BACKOFF = "Backoff"
#: next attempt: the registrar's Retry-After (bounded by ``retryAfterMaxSeconds``).
RETRY_AFTER = "RetryAfter"
#: next attempt: the first REGISTER after the transport (TCP/TLS connection) went away.
TRANSPORT_LOST = "TransportLost"
#: next attempt: at once, to the Contact of a 3xx (``redirectPolicy: follow``).
REDIRECT = "Redirect"
#: next attempt: the first REGISTER after the worker's OPTIONS probes through the UDP route went unanswered for
#: ``udpDeadFlowSeconds`` (worker/flowprobe.py).
DEAD_FLOW = "DeadFlow"
#: next attempt: when the agent's share of the operator's REGISTER budget allows it; while the registrar does not
#: answer, after the agent's probe REGISTER is answered (agent/supervisor/paceplan.py). No time is known ahead.
PACED = "Paced"

# Failover (spec.fallbackRoutes; agent/sipfleet_agent/supervisor/failoverplan.py): why a route is active
# (``status.route.active.reason``).

#: the active route is the primary one (spec.route)
PRIMARY = "Primary"
#: the previous route's first hop did not answer a REGISTER (pjsip's own timeout: no response came back)
FIRST_HOP_UNANSWERED = "FirstHopUnanswered"
#: a REGISTER could not be sent to the previous route's first hop (connection refused, transport error)
FIRST_HOP_UNREACHABLE = "FirstHopUnreachable"
#: (DEAD_FLOW, above) the previous route's first hop left the worker's dead-flow probes unanswered
PATH_FAILURE_REASONS = (FIRST_HOP_UNANSWERED, FIRST_HOP_UNREACHABLE, DEAD_FLOW)

NEXT_ATTEMPT_REASONS = (AUTH_FAILED, PERMANENT_FAILURE, BACKOFF, RETRY_AFTER, TRANSPORT_LOST, REDIRECT, DEAD_FLOW,
                        PACED)

#: TLS (transport tls): the server's certificate did not verify against spec.tls.caRef, or did not name the first
#: hop (pjsip's PJSIP_TLS_ECERTVERIF; the message carries pjsip's verification result).
TLS_VERIFY_FAILED = "TlsVerifyFailed"
#: TLS: the handshake failed for another reason (no common version or cipher, the peer closed it, ...).
TLS_HANDSHAKE_FAILED = "TlsHandshakeFailed"
#: TLS: the account's TLS material cannot be used (missing key, not PEM, refused by pjsip's OpenSSL).
TLS_CONFIG_INVALID = "TlsConfigInvalid"

ALL = (REGISTRAR_GRANTED_NO_BINDING, TLS_VERIFY_FAILED, TLS_HANDSHAKE_FAILED, TLS_CONFIG_INVALID, AUTH_FAILED, PERMANENT_FAILURE, REDIRECT_REFUSED, REGISTRAR_RESPONSE_OVERSIZED, REGISTRAR_RESPONSE_TRUNCATED, REGISTRAR_RESPONSE_REJECTED, REGISTRATION_LAPSED, REGISTRAR_RESPONSE_UNPARSABLE, REGISTRAR_RESPONSE_CRASHED_WORKER)
