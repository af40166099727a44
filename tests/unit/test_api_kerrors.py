"""sipfleet.api.kerrors: the class of an apiserver answer from its status and Status object, never its text."""

from __future__ import annotations

import json

import pytest

from sipfleet.api import kerrors as ke


def status(code: int, reason: str, message: str = "", **details) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason,
            "message": message, "details": details}


@pytest.mark.parametrize("code,obj,cls", [
    (404, status(404, "NotFound", 'configmaps "x" not found', name="x", kind="configmaps"), ke.NotFound),
    (409, status(409, "AlreadyExists", 'configmaps "x" already exists'), ke.AlreadyExists),
    (409, status(409, "Conflict", "the object has been modified"), ke.Conflict),
    (410, status(410, "Expired", "too old resource version: 1 (40)"), ke.Gone),
    (403, status(403, "Forbidden", "cannot get resource"), ke.Forbidden),
    (403, status(403, "Forbidden", "unable to create new content in namespace x because it is being terminated",
                 causes=[{"reason": "NamespaceTerminating", "message": "namespace x is being terminated",
                          "field": "metadata.namespace"}]), ke.NamespaceTerminating),
    (401, status(401, "Unauthorized"), ke.Unauthorized),
    (422, status(422, "Invalid", causes=[{"reason": "FieldValueInvalid", "field": "spec.registrar"}]), ke.Invalid),
    (429, status(429, "TooManyRequests", "too many requests"), ke.TooManyRequests),
    (500, status(500, "InternalError"), ke.ServerError),
    (504, status(504, "Timeout"), ke.ServerError),
    (0, {}, ke.ServerError),
    (418, {}, ke.KubeError),
])
def test_class_from_status_and_status_object(code, obj, cls):
    err = ke.from_response(code, json.dumps(obj))
    assert type(err) is cls
    assert isinstance(err, ke.KubeError) and err.status == code


def test_the_message_text_alone_never_makes_a_namespace_terminating():
    body = status(403, "Forbidden", "unable to create new content in namespace x because it is being terminated")
    assert type(ke.from_response(403, body)) is ke.Forbidden


def test_retryable_by_class():
    assert {c.__name__ for c in (ke.Conflict, ke.Gone, ke.TooManyRequests, ke.ServerError) if c.retryable} == {
        "Conflict", "Gone", "TooManyRequests", "ServerError"}
    assert not any(c.retryable for c in (ke.NotFound, ke.AlreadyExists, ke.Forbidden, ke.NamespaceTerminating,
                                         ke.Unauthorized, ke.Invalid))


def test_retry_after_from_the_header_then_the_status_object():
    body = status(429, "TooManyRequests", retryAfterSeconds=7)
    assert ke.from_response(429, body, {"Retry-After": "2"}).retry_after == 2.0
    assert ke.from_response(429, body, {"retry-after": "Wed, 21 Oct 2026 07:28:00 GMT"}).retry_after == 7.0
    assert ke.from_response(429, body).retry_after == 7.0
    assert ke.from_response(429, status(429, "TooManyRequests")).retry_after is None


def test_invalid_names_its_fields_and_the_message_is_kept():
    err = ke.from_response(422, status(422, "Invalid", "SipAccount is invalid",
                                       causes=[{"field": "spec.registrar"}, {"field": "spec.route[0]"}]),
                           what="create SipAccount a/b")
    assert err.fields() == ["spec.registrar", "spec.route[0]"]
    assert str(err) == "create SipAccount a/b: 422 SipAccount is invalid"


def test_a_body_that_is_not_a_status_object():
    err = ke.from_response(502, b"<html>bad gateway</html>")
    assert type(err) is ke.ServerError and err.body == {} and "bad gateway" in err.message


class FakeApiException(Exception):  # the shape of kubernetes.client.ApiException
    def __init__(self, status, body, headers=None, reason=None):
        super().__init__(reason)
        self.status, self.body, self.headers, self.reason = status, body, headers, reason


def test_from_an_api_exception():
    e = FakeApiException(429, json.dumps(status(429, "TooManyRequests")), {"Retry-After": "1"})
    err = ke.from_api_exception(e, what="get configmap")
    assert type(err) is ke.TooManyRequests and err.retry_after == 1.0 and err.__cause__ is e
    assert type(ke.from_api_exception(FakeApiException(0, None, reason="Read timed out"))) is ke.ServerError
