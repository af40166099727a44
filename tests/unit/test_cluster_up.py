"""``LocalCluster.up`` on what a previous run left (the machine rebooted, a run was killed): it takes everything
down first, then starts; a cluster it finds running it leaves alone. The start and the take-down themselves are
replaced here (they need root and the binaries); the integration suite runs them for real."""

from __future__ import annotations

import pytest

from sipfleet.localenv import procs
from sipfleet.localenv.cluster import LocalCluster, lifecycle


@pytest.fixture
def calls(monkeypatch):
    seen: list[str] = []
    monkeypatch.setattr(lifecycle, "down_locked", lambda c, purge, grace=10.0: seen.append(f"down purge={purge}") or [])
    monkeypatch.setattr(lifecycle, "start_all", lambda c, started, deadline: seen.append("start"))
    return seen


def stale(tmp_path) -> LocalCluster:
    c = LocalCluster("stale", state_dir=tmp_path / "stale")
    dead = procs.ProcRecord(name="etcd", pid=2**22 + 17, start_time=1)  # above pid_max's default: never alive
    c._write_records([dead])
    return c


def test_up_over_the_records_of_dead_processes_takes_them_down_first(tmp_path, calls):
    stale(tmp_path).up()
    assert calls == ["down purge=False", "start"]


def test_up_with_only_host_changes_left_takes_them_down_first(tmp_path, calls):
    c = LocalCluster("stale", state_dir=tmp_path / "stale")
    c.dir.mkdir(parents=True)
    c.layout.hostnet_file.write_text("{}\n")
    c.up()
    assert calls == ["down purge=False", "start"]


def test_up_on_a_clean_state_dir_only_starts(tmp_path, calls):
    LocalCluster("clean", state_dir=tmp_path / "clean").up()
    assert calls == ["start"]


def test_up_on_a_running_cluster_does_nothing(tmp_path, calls, monkeypatch):
    c = stale(tmp_path)
    monkeypatch.setattr(LocalCluster, "running", lambda self: True)
    c.up()
    assert calls == []
