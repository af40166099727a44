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
    assert lost == ["a: spec changed", "b: not Ready and in sync at the end", "d: SipAccount gone",
                    "b: hosted by 2 agents ['ag1', 'ag2']", "c: hosted by 0 agents []",
                    "d: hosted by 0 agents []", "agent ag3: ConfigMap without Deployment",
                    "agent ag9: Deployment without ConfigMap"]


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
