"""Status documents, debounce and merge patches of the agent (pure logic)."""

from __future__ import annotations

from sipfleet.api.models import AgentRef, RepairRecord
from sipfleet_agent.status import AccountStatus, Debouncer, apply_merge_patch, change_key, merge_patch


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_debouncer_emits_after_the_delay_and_only_on_change():
    clock = Clock()
    out: list = []
    d = Debouncer(0.2, lambda k, doc: out.append((k, doc)), clock)
    st = AccountStatus("account", ["sip:p;lr"], AgentRef(name="a"))
    d.mark("x", st.document)
    d.flush()
    assert out == []  # not yet due
    clock.t += 0.25
    d.flush()
    assert len(out) == 1
    # the same document again: nothing
    d.mark("x", st.document)
    clock.t += 1
    d.flush()
    assert len(out) == 1
    # only observedAt changed: nothing
    st.set_route(observed_at="2026-01-01T00:00:00Z")
    d.mark("x", st.document)
    clock.t += 1
    d.flush()
    assert len(out) == 1
    # a real change, coalesced: several marks, one emission with the latest state
    st.set_registration(state="Registered", code=200)
    d.mark("x", st.document)
    st.set_route(in_sync=True)
    d.mark("x", st.document)
    clock.t += 1
    d.flush()
    assert len(out) == 2
    assert out[-1][1]["registration"]["state"] == "Registered" and out[-1][1]["route"]["inSync"] is True
    d.forget("x")
    assert d.next_due() is None


def test_force_flush_emits_at_once():
    out: list = []
    d = Debouncer(60, lambda k, doc: out.append(doc), Clock())
    st = AccountStatus("prevent", [], AgentRef())
    d.mark("k", st.document)
    d.flush(force=True)
    assert len(out) == 1


def test_change_key_ignores_observed_at():
    a = {"registration": {"state": "Registered"}, "route": {"inSync": True, "observedAt": "1"}, "agent": {}}
    b = {"registration": {"state": "Registered"}, "route": {"inSync": True, "observedAt": "2"}, "agent": {}}
    assert change_key(a) == change_key(b)


def test_merge_patch_roundtrip_and_nulls():
    old = {"registration": {"state": "Failed", "code": 401, "lastFailure": "t1"}, "route": {"effective": ["a"]}}
    new = {"registration": {"state": "Registered", "code": 200}, "route": {"effective": ["a"]}, "agent": {"name": "x"}}
    patch = merge_patch(old, new)
    assert patch == {"registration": {"state": "Registered", "code": 200, "lastFailure": None}, "agent": {"name": "x"}}
    assert apply_merge_patch(old, patch) == new
    assert merge_patch(new, new) is None
    assert merge_patch({"l": [1, 2]}, {"l": [2]}) == {"l": [2]}


def test_repair_history_is_bounded_and_updates_in_place():
    st = AccountStatus("account", [], AgentRef())
    for i in range(12):
        rec = RepairRecord(method="recreate-account", trigger="user", started_at=f"t{i:02d}")
        st.add_repair(rec)
        st.add_repair(rec.model_copy(update={"result": "repaired", "duration_ms": 5.0}))
    hist = st.route.repair_history
    assert len(hist) == 10
    assert hist[-1].started_at == "t11" and hist[-1].result == "repaired"
    assert st.route.last_repair.result == "repaired"
    assert len({r.started_at for r in hist}) == 10


def test_a_new_accounts_first_report_waits_for_the_registers_answer_a_moment():
    clock = Clock()
    out: list = []
    d = Debouncer(0.2, lambda k, doc: out.append(doc), clock, first_hold_s=1.0)
    st = AccountStatus("account", ["sip:p;lr"], AgentRef(name="a"))
    d.mark("x", st.document)  # created: Registering, nothing answered
    clock.t += 0.25
    d.flush()
    assert out == [] and d.next_due() is not None  # held, looked at again soon
    clock.t += 0.2
    st.set_registration(state="Registered", code=200)  # the answer: one report, the answer
    d.mark("x", st.document)
    clock.t += 0.25
    d.flush()
    assert [o["registration"]["state"] for o in out] == ["Registered"]
    # a registrar that does not answer: the Registering report goes out once the hold has passed
    d.mark("y", AccountStatus("account", [], AgentRef()).document)
    for _ in range(6):
        clock.t += 0.2
        d.flush()
    assert [o["registration"]["state"] for o in out] == ["Registered", "Registering"]
    # later transitions are not held: a re-registration after a repair is reported within the window
    st.set_registration(state="Registering", code=None)
    d.mark("x", st.document)
    clock.t += 0.25
    d.flush()
    assert [o["registration"]["state"] for o in out][-1] == "Registering"


def test_state_changes_within_the_window_are_one_report_and_a_drift_then_repair_stays_visible():
    clock = Clock()
    out: list = []
    d = Debouncer(0.2, lambda k, doc: out.append(doc), clock, first_hold_s=1.0)
    st = AccountStatus("prevent", ["sip:p;lr"], AgentRef(name="a"))
    st.set_registration(state="Registered", code=200)
    st.set_route(in_sync=True)
    d.mark("x", st.document)
    clock.t += 0.25
    d.flush()
    assert len(out) == 1
    # within 200 ms: drift seen, self-heal, back in sync -> one report, and its counters/history say what happened
    st.set_route(in_sync=False, last_drift_at="2026-01-01T00:00:00.000Z")
    d.mark("x", st.document)
    clock.t += 0.05
    st.add_repair(RepairRecord(started_at="2026-01-01T00:00:00.000Z", trigger="self-heal", method="recreate-account",
                                result="repaired"))
    st.set_route(in_sync=True, self_heal_count=1)
    d.mark("x", st.document)
    clock.t += 0.2
    d.flush()
    assert len(out) == 2
    route = out[-1]["route"]
    assert route["inSync"] is True and route["selfHealCount"] == 1 and route["lastDriftAt"]
    assert [r["trigger"] for r in route["repairHistory"]] == ["self-heal"]
