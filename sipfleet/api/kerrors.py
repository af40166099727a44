"""One taxonomy of Kubernetes API errors, shared by the operator, the agent and the local environment.

An apiserver answer that is not a success becomes one :class:`KubeError` subclass, chosen from the HTTP status and
the ``Status`` object's machine-readable parts (``reason``, ``details.causes``, ``details.retryAfterSeconds``),
never from message text:

======================  ======  ===============================================================  =========
class                   status  when                                                             retryable
======================  ======  ===============================================================  =========
``NotFound``            404     the object (or its namespace) does not exist                     no
``AlreadyExists``       409     create of a name that exists (reason ``AlreadyExists``)           no
``Conflict``            409     a stale ``resourceVersion`` (any other 409)                       yes
``Gone``                410     a resource version too old to watch or list from: re-list         yes
``Forbidden``           403     RBAC or an admission plugin said no                              no
``NamespaceTerminating`` 403    the namespace is being deleted (cause ``NamespaceTerminating``)  no
``Unauthorized``        401     no valid credentials                                             no
``Invalid``             422     the object fails validation (``details.causes`` name the fields) no
``TooManyRequests``     429     API priority and fairness (or a webhook) asks to come back later yes
``ServerError``         5xx     the apiserver (or etcd behind it) failed or timed out            yes
======================  ======  ===============================================================  =========

``retry_after`` is the server's own advice in seconds (``Retry-After`` header, else ``retryAfterSeconds``), or
``None``. Adapters: :func:`from_response` (status, body, headers: any HTTP client) and :func:`from_api_exception`
(the ``kubernetes`` package's ``ApiException``, duck-typed: this module imports no client library).
"""

from __future__ import annotations

import json
from typing import Any, Mapping


class KubeError(Exception):
    """A non-success answer of the Kubernetes API."""

    retryable = False

    def __init__(self, status: int, body: Any = None, what: str = "", *, retry_after: float | None = None):
        self.status = status
        self.body = body if isinstance(body, dict) else {}
        self.what = what
        self.retry_after = retry_after
        self.reason = str(self.body.get("reason") or "")
        message = self.body.get("message") if self.body else (str(body)[:300] if body else "")
        self.message = str(message or "")
        super().__init__(f"{what + ': ' if what else ''}{status} {self.message or self.reason}".rstrip())

    @property
    def causes(self) -> list[dict]:
        details = self.body.get("details") or {}
        return [c for c in details.get("causes") or [] if isinstance(c, dict)]


class NotFound(KubeError):
    pass


class Conflict(KubeError):
    """A write lost a race (stale resourceVersion): read again and retry."""

    retryable = True


class AlreadyExists(KubeError):
    """A create of a name that is taken (a 409 that retrying cannot fix)."""


class Gone(KubeError):
    """The resource version asked for is too old: list again, then watch from the new version."""

    retryable = True


class Forbidden(KubeError):
    pass


class NamespaceTerminating(Forbidden):
    """Nothing new may be created in a namespace that is being deleted."""


class Unauthorized(KubeError):
    pass


class Invalid(KubeError):
    """The object fails the API's validation; ``fields()`` names what failed."""

    def fields(self) -> list[str]:
        return [str(c.get("field")) for c in self.causes if c.get("field")]


class TooManyRequests(KubeError):
    retryable = True


class ServerError(KubeError):
    retryable = True


_BY_STATUS: dict[int, type[KubeError]] = {
    401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 410: Gone, 422: Invalid, 429: TooManyRequests,
}


def parse_body(body: Any) -> dict:
    """The ``Status`` object of an error body (a dict, or JSON text/bytes); ``{}`` when it is not one."""
    if isinstance(body, dict):
        return body
    if isinstance(body, (bytes, bytearray)):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str) and body.lstrip().startswith("{"):
        try:
            parsed = json.loads(body)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def _retry_after(status_obj: dict, headers: Mapping[str, str] | None) -> float | None:
    for k, v in (headers or {}).items():
        if k.lower() == "retry-after":
            try:
                return max(0.0, float(v))
            except (TypeError, ValueError):
                break  # an HTTP date: fall back to the Status object's advice
    secs = (status_obj.get("details") or {}).get("retryAfterSeconds")
    return float(secs) if isinstance(secs, (int, float)) and secs >= 0 else None


def classify(status: int, status_obj: dict) -> type[KubeError]:
    """The class for an HTTP status and its ``Status`` object. Pure."""
    causes = ((status_obj.get("details") or {}).get("causes")) or []
    if status == 403 and any(isinstance(c, dict) and c.get("reason") == "NamespaceTerminating" for c in causes):
        return NamespaceTerminating
    if status == 409 and status_obj.get("reason") == "AlreadyExists":
        return AlreadyExists
    if status >= 500 or status == 0:  # 0: no answer at all (the client's own timeout or a dropped connection)
        return ServerError
    return _BY_STATUS.get(status, KubeError)


def from_response(status: int, body: Any, headers: Mapping[str, str] | None = None, *, what: str = "") -> KubeError:
    """The error for an HTTP answer: ``body`` as received (dict, text or bytes), ``headers`` the response's."""
    status_obj = parse_body(body)
    cls = classify(status, status_obj)
    return cls(status, status_obj or body, what=what, retry_after=_retry_after(status_obj, headers))


def from_api_exception(e: Any, *, what: str = "") -> KubeError:
    """The error for a ``kubernetes.client.ApiException`` (``status``, ``body``, ``headers``); status 0 (no
    answer) is a :class:`ServerError`."""
    status = int(getattr(e, "status", 0) or 0)
    headers = getattr(e, "headers", None) or {}
    err = from_response(status, getattr(e, "body", None) or getattr(e, "reason", None), dict(headers), what=what)
    err.__cause__ = e if isinstance(e, BaseException) else None
    return err
