"""The fault matrix's judgement (sipfleet.bench.faultmatrix): what counts as lost, healthy, and the table."""

from __future__ import annotations

from sipfleet.bench import faultmatrix as fm


def acc(name: str, ready: str = "True", insync: str = "True", spec: dict | None = None) -> dict:
    return {"metadata": {"name": name}, "spec": spec or {"aor": f"sip:{name}@x"},
            "status": {"conditions": [{"type": "Ready", "status": ready}, {"type": "RouteInSync", "status": insync}]}}


def test_nothing_lost_when_every_account_is_healthy_and_hosted_once():
    accounts = [acc("a"), acc("b")]
    specs = {o["metadata"]["name"]: fm.spec_digest(o) for o in accounts}
    assert fm.losses(specs, accounts, {"ag1": ["a", "b"]}, ["ag1"]) == []


def test_losses_name_what_was_lost():
    before = [acc("a"), acc("b"), acc("c"), acc("d")]
    specs = {o["metadata"]["name"]: fm.spec_digest(o) for o in before}
    now = [acc("a", spec={"aor": "sip:other@x"}), acc("b", ready="False"), acc("c")]
    lost = fm.losses(specs, now, {"ag1": ["a", "b"], "ag2": ["b"], "ag3": []}, ["ag1", "ag2", "ag9"])
    assert lost == ["a: spec changed", "b: not Ready and in sync at the end (Ready=False)", "d: SipAccount gone",
                    "b: hosted by 2 agents ['ag1', 'ag2']", "c: hosted by 0 agents []",
                    "d: hosted by 0 agents []", "agent ag3: ConfigMap without Deployment",
                    "agent ag9: Deployment without ConfigMap"]


def test_an_unhealthy_account_says_which_conditions_and_why():
    o = acc("a", ready="False")
    o["status"]["conditions"] += [{"type": "Registered", "status": "False", "reason": "Registering"},
                                  {"type": "AgentReady", "status": "True", "reason": "AgentReady"}]
    assert fm.why_unhealthy(o) == "Ready=False, Registered=False Registering"
    assert fm.why_unhealthy({"status": {}}) == "no conditions"


def test_healthy_needs_ready_and_in_sync():
    assert fm.healthy(acc("a")) and not fm.healthy(acc("a", insync="False")) and not fm.healthy(acc("a", "Unknown"))
    assert not fm.healthy({"metadata": {"name": "x"}})


def test_render():
    rows = [fm.Row("operator-kill", 4, affected=0, registers=0, registers_total=0, writes=2, note="SIGKILL"),
            fm.Row("registrar-down", 4, affected=4, recovery_s=None, registers=9, registers_total=13,
                   lost=["a: not Ready and in sync at the end"])]
    out = fm.render(rows).splitlines()
    assert out[0].split()[:3] == ["fault", "accounts", "affected"]
    assert "0/4" in out[2] and "0.0 s" in out[2] and "nothing" in out[2]
    assert "4/4" in out[3] and "not within timeout" in out[3] and "9/13" in out[3]


def test_a_fault_run_watches_the_accounts_it_adds_without_changing_the_fleets():
    specs, users = {"a": "d1"}, {"a": "ua"}
    run = fm.FaultRun(dict(specs), dict(users))
    seen = run.watched()
    run.add_accounts({"c1": "d2"}, {"c1": "uc1"})
    assert seen == {"a": "d1"} and run.watched() == {"a": "d1", "c1": "d2"}
    assert run.users == {"a": "ua", "c1": "uc1"} and specs == {"a": "d1"} and users == {"a": "ua"}


def test_deletion_leftovers_name_what_a_deletion_left_behind():
    deleted = {"c1": "u1", "c2": "u2", "c3": "u3"}
    assert fm.deletion_leftovers(deleted, [acc("a")], {"ag1": ["a"]}, {"u1": [], "u2": []}) == []
    left = fm.deletion_leftovers(deleted, [acc("a"), acc("c1")], {"ag1": ["a", "c2"], "ag2": []},
                                 {"u1": [], "u3": ["sip:u3@10.0.0.1:5060"]})
    assert left == ["c1: SipAccount still there after its deletion", "c2: deleted but still assigned to agent ag1",
                    "c3: deleted but 1 contact(s) left at the registrar"]


def test_first_log_at_finds_the_first_matching_line_at_or_after_a_time():
    from datetime import datetime, timezone

    log = "\n".join([
        '{"ts": "2026-12-02T18:00:00.000+00:00", "msg": "engine started: the fleet is read"}',
        "Traceback (most recent call last):", "5",
        '{"ts": "2026-12-02T18:00:10.000+00:00", "msg": "engine stopped: standing by"}',
        '{"ts": "2026-12-02T18:00:20.500+00:00", "msg": "engine started: the fleet is read"}',
        '{"ts": "2026-12-02T18:00:30.000+00:00", "msg": "engine started: the fleet is read"}'])
    t = datetime(2026, 12, 2, 18, 0, 5, tzinfo=timezone.utc)
    assert fm.first_log_at(log, "engine started", t) == datetime(2026, 12, 2, 18, 0, 20, 500000, tzinfo=timezone.utc)
    assert fm.first_log_at(log, "engine started", datetime(2026, 12, 2, 19, tzinfo=timezone.utc)) is None
    assert fm.first_log_at(log, "no such", t) is None


def test_engine_running_follows_the_last_start_or_stop():
    start = '{"ts": "2026-12-02T18:00:00+00:00", "msg": "engine started: x"}'
    stop = '{"ts": "2026-12-02T18:00:01+00:00", "msg": "engine stopped: standing by"}'
    assert not fm.engine_running("") and not fm.engine_running("not json\n[1]")
    assert fm.engine_running(start) and not fm.engine_running(f"{start}\n{stop}")
    assert fm.engine_running(f"{start}\n{stop}\n{start}\nother")


def test_the_table_shows_the_first_losses_and_how_many_more():
    assert fm.lost_cell([]) == "nothing" and fm.lost_cell(["a", "b", "c"]) == "a; b; c"
    assert fm.lost_cell([f"x{i}" for i in range(200)]) == "x0; x1; x2; ... and 197 more"
    row = fm.Row("operator-kill-converge", 216, lost=[f"cp{i:03d}: hosted by 0 agents []" for i in range(50)])
    assert "... and 47 more" in fm.render([row]) and "cp049" not in fm.render([row])
