"""Worker restart policy: exponential back-off, capped, reset after a stable run; hang detection."""

from sipfleet_agent.supervisor.backoff import RestartPolicy, RestartState, hung, on_failure


def test_back_off_doubles_is_capped_and_resets_after_a_stable_run():
    pol = RestartPolicy(base_s=0.5, max_s=4.0, stable_s=60.0)
    st = RestartState()
    delays = []
    t = 1000.0
    for _ in range(6):
        st, d = on_failure(pol, st, started_at=t, now=t + 1.0)  # each run failed after 1 s
        delays.append(d)
        t += 1.0 + d
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert st.restarts == 6 and st.failures == 6
    st, d = on_failure(pol, st, started_at=t, now=t + 61.0)
    assert d == 0.5 and st.failures == 1 and st.restarts == 7


def test_hung_means_no_heartbeat_for_longer_than_the_timeout():
    assert not hung(100.0, 109.9, 10.0)
    assert hung(100.0, 110.1, 10.0)
