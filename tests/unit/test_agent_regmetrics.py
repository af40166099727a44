"""RFC 6076 registration measurements (worker/regattempts.py) and the per-account registration state gauge
(supervisor/metricsagg.py AccountStates)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from sipfleet_agent.supervisor.metricsagg import AccountStates, state_value
from sipfleet_agent.worker import regattempts as ra


def test_an_attempt_with_a_challenge_is_one_attempt_and_its_delay_runs_from_the_first_register():
    p = ra.on_register(None, call_id="c1", now=10.0, registered=False)
    assert p == ra.Pending(started=10.0, call_id="c1", refresh=False)
    assert ra.on_register(p, call_id="c1", now=10.02, registered=False) is None  # the REGISTER with credentials
    ended = ra.on_final(p, code=200, expiration=300, now=10.05)
    assert ended is not None and abs(ended.delay - 0.05) < 1e-9 and ended.ineffective is None
    assert ended.refresh is False


def test_a_refresh_is_a_reregistration_and_a_new_attempt_after_the_last_answer():
    p = ra.on_register(None, call_id="c1", now=100.0, registered=True)  # same Call-ID, previous attempt ended
    assert p is not None and p.refresh is True
    assert ra.on_final(p, code=200, expiration=300, now=100.001).refresh is True


def test_failures_and_timeouts_are_ineffective_attempts():
    p = ra.on_register(None, call_id="c1", now=0.0, registered=False)
    assert ra.on_final(p, code=408, expiration=0, now=32.0) == ra.Ended(None, "timeout", False)
    assert ra.on_final(p, code=403, expiration=0, now=0.1) == ra.Ended(None, "failure", False)
    assert ra.on_final(p, code=503, expiration=0, now=0.1).ineffective == "failure"
    assert ra.on_final(p, code=401, expiration=0, now=0.1).ineffective == "failure"  # credentials refused


def test_abandoned_attempts_count_as_neither():
    p = ra.on_register(None, call_id="c1", now=0.0, registered=False)
    q = ra.on_register(p, call_id="c2", now=1.0, registered=False)  # re-created: a new registration client
    assert q is not None and q.started == 1.0
    assert ra.on_final(q, code=200, expiration=0, now=1.1) is None  # an un-REGISTER's 2xx
    assert ra.on_final(None, code=200, expiration=300, now=2.0) is None  # nothing pending


def _scrape(collector) -> str:
    r = CollectorRegistry(auto_describe=False)
    r.register(collector)
    return generate_latest(r).decode()


def test_the_state_gauge_has_asterisks_values_one_sample_per_hosted_account():
    docs = {"alice": {"registration": {"state": "Registered"}}, "bob": {"registration": {"state": "Failed"}},
            "carol": {"registration": {"state": "Unregistered"}}, "dave": None}
    text = _scrape(AccountStates(lambda: list(docs.items())))
    assert "# TYPE sipfleet_agent_registration_state gauge" in text
    assert 'sipfleet_agent_registration_state{account="alice"} 1.0' in text
    assert 'sipfleet_agent_registration_state{account="bob"} 2.0' in text
    assert 'sipfleet_agent_registration_state{account="carol"} 0.0' in text
    assert 'sipfleet_agent_registration_state{account="dave"} 3.0' in text  # no document yet: Registering
    del docs["bob"]  # removed from the agent: its sample goes
    assert 'account="bob"' not in _scrape(AccountStates(lambda: list(docs.items())))
    assert state_value({"registration": {"state": "Registering"}}) == 3


def test_the_supervisors_registry_serves_the_state_gauge_from_its_documents():
    from sipfleet.api.models import AgentSettings
    from sipfleet_agent.supervisor.runtime import Supervisor

    class Edge:
        def status(self, *a, **k): ...
        def event(self, *a, **k): ...

    sup = Supervisor(AgentSettings(), Edge(), name="a", pod=None, launcher=object())
    sup.accounts = {("ns", "alice"): object(), ("ns", "bob"): object()}
    sup.docs = {("ns", "alice"): {"registration": {"state": "Registered"}}}
    text = generate_latest(sup.registry).decode()
    assert 'sipfleet_agent_registration_state{account="alice"} 1.0' in text
    assert 'sipfleet_agent_registration_state{account="bob"} 3.0' in text


def test_counters_with_known_label_values_start_at_zero():
    """A series born at 1 is never counted by increase()/rate(): the known label values are exported at 0."""
    from prometheus_client import REGISTRY

    from sipfleet_agent.metrics import Metrics
    from sipfleet_operator import metrics as opm  # noqa: F401 (registers the operator's families)

    agent = generate_latest(Metrics().registry).decode()
    for trigger in ("self-heal", "operator", "user", "reregister"):
        assert f'sipfleet_agent_repairs_total{{trigger="{trigger}"}} 0.0' in agent
    for reason in ("timeout", "failure"):
        assert f'sipfleet_agent_ineffective_registration_attempts_total{{reason="{reason}"}} 0.0' in agent
    assert "sipfleet_agent_registration_attempts_total 0.0" in agent
    op = generate_latest(REGISTRY).decode()
    for method in ("recreate-account", "restart-pod"):
        assert f'sipfleet_drift_repaired_total{{method="{method}"}}' in op
