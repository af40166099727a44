"""The agent's retry policy (agent/sipfleet_agent/worker/retrypolicy.py): each failure class, pure, time and
randomness passed in. Issue 12 item 1."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sipfleet.api import reasons
from sipfleet.api.models import RegistrationSettings
from sipfleet_agent.siplog import parse_tx_request
from sipfleet_agent.worker import retrypolicy as rp
from sipfleet_agent.worker.retrypolicy import Failure

NOW = 1_000_000.0
S = RegistrationSettings(retryIntervalSeconds=2, maxRetryIntervalSeconds=30, backoffMultiplier=2, jitterSeconds=1,
                         authFailureRetrySeconds=20, retryAfterMaxSeconds=60, permanentFailureRetrySeconds=40)


def test_defaults_are_the_documented_ones_and_old_specs_still_validate():
    d = RegistrationSettings()
    assert (d.retry_interval_seconds, d.max_retry_interval_seconds, d.backoff_multiplier, d.backoff_jitter) == (30, 600, 2.0, "full")
    assert (d.auth_failure_retry_seconds, d.retry_after_max_seconds, d.permanent_failure_retry_seconds) == (600, 600, 1800)
    assert (d.redirect_policy, d.max_redirects, d.first_retry_interval_seconds, d.jitter_seconds) == ("follow", 3, 2, 3)
    # a spec written before these fields existed keeps its meaning (the back-off's base, the first retry)
    old = RegistrationSettings.model_validate({"retryIntervalSeconds": 5, "firstRetryIntervalSeconds": 1, "jitterSeconds": 0})
    assert old.retry_interval_seconds == 5 and old.max_retry_interval_seconds == 600
    with pytest.raises(ValidationError, match="backoffMultiplier"):
        RegistrationSettings.model_validate({"backoffMultiplier": 0.5})
    with pytest.raises(ValidationError, match="redirectPolicy"):
        RegistrationSettings.model_validate({"redirectPolicy": "sometimes"})


def test_backoff_grows_with_full_jitter_between_the_base_and_a_capped_window():
    # rand 0: the base; rand ~1: the window's top, base * 2^n, capped at 30
    assert [rp.backoff_delay(S, n, 0.0) for n in (1, 2, 3)] == [2.0, 2.0, 2.0]
    tops = [rp.backoff_delay(S, n, 0.999999) for n in range(1, 7)]
    assert [round(t) for t in tops] == [4, 8, 16, 30, 30, 30]
    none = S.model_copy(update={"backoff_jitter": "none"})
    assert [rp.backoff_delay(none, n, 0.7) for n in range(1, 7)] == [2, 4, 8, 16, 30, 30]
    for n in range(1, 10):
        for r in (0.0, 0.3, 0.9):
            assert 2.0 <= rp.backoff_delay(S, n, r) <= 30.0


@pytest.mark.parametrize("code", [408, 500, 502, 503, 504, 480, 400, 420, 486, 0])
def test_ordinary_failures_back_off(code):
    d = rp.decide(S, Failure(code=code, attempt=3), NOW, 0.5)
    assert d.next_reason == reasons.BACKOFF and d.failure_reason is None
    assert d.delay == pytest.approx(2 + 0.5 * (16 - 2)) and d.at == NOW + d.delay and d.redirect_to is None


@pytest.mark.parametrize("code", [401, 407])
def test_a_refused_answer_to_a_challenge_is_auth_failed_and_waits_long(code):
    d = rp.decide(S, Failure(code=code, attempt=1, challenge_answered=True), NOW, 0.0)
    assert (d.next_reason, d.failure_reason, d.delay) == (reasons.AUTH_FAILED, reasons.AUTH_FAILED, 20.0)
    assert "refused the credentials" in d.message
    # attempt count does not shorten or grow it; jitter only adds
    assert rp.decide(S, Failure(code=code, attempt=7, challenge_answered=True), NOW, 0.5).delay == 20.5
    unanswerable = rp.decide(S, Failure(code=code, challenge_answered=False), NOW, 0.0)
    assert unanswerable.failure_reason == reasons.AUTH_FAILED and "cannot answer" in unanswerable.message


def test_403_is_auth_failed():
    d = rp.decide(S, Failure(code=403, attempt=2, challenge_answered=True), NOW, 0.0)
    assert d.failure_reason == reasons.AUTH_FAILED and d.delay == 20.0 and d.at_iso().endswith("Z")


@pytest.mark.parametrize("code", [500, 503, 480])
def test_retry_after_is_honoured_and_bounded(code):
    d = rp.decide(S, Failure(code=code, retry_after=30), NOW, 0.0)
    assert (d.next_reason, d.failure_reason, d.delay) == (reasons.RETRY_AFTER, None, 30.0)
    assert rp.decide(S, Failure(code=code, retry_after=30), NOW, 0.99).delay == pytest.approx(30.99)
    big = rp.decide(S, Failure(code=code, retry_after=86400), NOW, 0.0)
    assert big.delay == 60.0 and "cut to retryAfterMaxSeconds" in big.message
    off = S.model_copy(update={"retry_after_max_seconds": 0})
    assert rp.decide(off, Failure(code=code, retry_after=30), NOW, 0.0).next_reason == reasons.BACKOFF


def test_retry_after_on_other_codes_is_back_off():
    assert rp.decide(S, Failure(code=404, retry_after=5), NOW, 0.0).next_reason == reasons.PERMANENT_FAILURE
    assert rp.decide(S, Failure(code=502, retry_after=5), NOW, 0.0).next_reason == reasons.BACKOFF


@pytest.mark.parametrize("code", [404, 600, 603, 604, 606])
def test_permanent_failures_retry_slowly(code):
    d = rp.decide(S, Failure(code=code, attempt=1), NOW, 0.0)
    assert (d.next_reason, d.failure_reason, d.delay) == (reasons.PERMANENT_FAILURE, reasons.PERMANENT_FAILURE, 40.0)


def test_redirects_are_followed_within_a_bound_and_never_in_a_loop():
    a, b, c, d_, e = (f"sip:10.0.0.{i}:5060" for i in range(1, 6))
    f = rp.decide(S, Failure(code=302, contacts=("tel:+1", b), registrar=a, redirect_chain=(a,)), NOW, 0.0)
    assert (f.redirect_to, f.delay, f.next_reason, f.failure_reason) == (b, 0.0, reasons.REDIRECT, None)
    loop = rp.decide(S, Failure(code=302, contacts=(a,), registrar=b, redirect_chain=(a, b)), NOW, 0.0)
    assert loop.redirect_to is None and loop.failure_reason == reasons.REDIRECT_REFUSED and "loop" in loop.message
    assert loop.next_reason == reasons.BACKOFF and loop.delay == 2.0
    self_loop = rp.decide(S, Failure(code=302, contacts=(a.upper().replace("SIP:", "sip:"),), registrar=a), NOW, 0.0)
    assert self_loop.failure_reason == reasons.REDIRECT_REFUSED
    # maxRedirects 3: a -> b -> c -> d followed, the fourth refused
    assert rp.decide(S, Failure(code=302, contacts=(d_,), registrar=c, redirect_chain=(a, b, c)), NOW, 0.0).redirect_to == d_
    four = rp.decide(S, Failure(code=302, contacts=(e,), registrar=d_, redirect_chain=(a, b, c, d_)), NOW, 0.0)
    assert four.failure_reason == reasons.REDIRECT_REFUSED and "maxRedirects" in four.message
    none = rp.decide(S, Failure(code=301, contacts=(), registrar=a), NOW, 0.0)
    assert none.failure_reason == reasons.REDIRECT_REFUSED and "no sip" in none.message
    for odd in ("sip:a b@10.0.0.9", "sip:x@10.0.0.9;lr;<evil>", "sip:" + "h" * 300):  # not a URI spec.registrar takes
        bad = rp.decide(S, Failure(code=302, contacts=(odd,), registrar=a), NOW, 0.0)
        assert bad.redirect_to is None and bad.failure_reason == reasons.REDIRECT_REFUSED and "not a SIP URI" in bad.message
    refuse = S.model_copy(update={"redirect_policy": "refuse"})
    r = rp.decide(refuse, Failure(code=302, contacts=(b,), registrar=a, attempt=2), NOW, 0.0)
    assert r.redirect_to is None and r.failure_reason == reasons.REDIRECT_REFUSED and "redirectPolicy" in r.message


def test_first_retry_after_a_transport_loss_is_never_sooner_than_configured():
    d = rp.after_transport_loss(S.model_copy(update={"first_retry_interval_seconds": 2}), NOW, 0.0)
    assert (d.delay, d.next_reason) == (2.0, reasons.TRANSPORT_LOST)
    assert rp.after_transport_loss(S, NOW, 0.99).delay == pytest.approx(2.99)
    # it never shortens what the registrar asked for, nor delays an attempt that comes sooner
    assert rp.keeps_current(NOW + 500, reasons.AUTH_FAILED, d)
    assert rp.keeps_current(NOW + 500, reasons.RETRY_AFTER, d)
    assert rp.keeps_current(NOW + 1, reasons.BACKOFF, d)
    assert not rp.keeps_current(NOW + 500, reasons.BACKOFF, d)
    assert not rp.keeps_current(None, None, d)


def test_parse_answer_reads_retry_after_min_expires_and_contacts():
    msg = ("SIP/2.0 302 Moved Temporarily\r\nVia: SIP/2.0/UDP 1.2.3.4\r\nRetry-After: 120 (busy);duration=60\r\n"
           "Min-Expires: 600\r\nm: <sip:10.0.0.2:5060>;q=0.5, \"x\" <sip:10.0.0.3;transport=tcp>\r\n"
           "Content-Length: 0\r\n\r\n")
    assert rp.parse_answer(msg) == (120, 600, ("sip:10.0.0.2:5060", "sip:10.0.0.3;transport=tcp"))
    assert rp.parse_answer("") == (None, None, ())
    assert rp.parse_answer("SIP/2.0 503 x\r\nRetry-After: soon\r\n\r\n") == (None, None, ())


def test_a_register_that_answers_a_challenge_is_seen_as_authorized():
    base = ("TX 500 bytes Request msg REGISTER/cseq=2 (tdta0x1) to UDP 10.0.0.1:5060:\n"
            "REGISTER sip:r SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4\r\nFrom: <sip:a@x>;tag=1\r\nCall-ID: c\r\nCSeq: 2 REGISTER\r\n")
    plain = parse_tx_request(base + "\r\n--end msg--")
    auth = parse_tx_request(base + 'Authorization: Digest username="a", response="x"\r\n\r\n--end msg--')
    proxy = parse_tx_request(base + 'Proxy-Authorization: Digest username="a"\r\n\r\n--end msg--')
    assert plain is not None and not plain.authorized and auth.authorized and proxy.authorized
