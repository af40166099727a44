"""Process records (PID + start time), stopping by PID, wait_for, and the cluster's state paths.

These start short-lived local processes (``sleep``, ``sh``); no cluster needed.
"""

from __future__ import annotations

import json
import signal
import time

import pytest

from sipfleet.localenv import cluster, procs
from sipfleet.localenv.waiting import WaitTimeout, wait_for


def test_start_records_pid_and_start_time_and_stop_terminates(tmp_path):
    rec, popen = procs.start("sleeper", ["sleep", "300"], tmp_path / "logs" / "sleeper.log")
    try:
        assert rec.pid == popen.pid
        assert rec.start_time == procs.start_time(rec.pid) and rec.start_time > 0
        assert procs.is_alive(rec)
        assert "starting: sleep 300" in (tmp_path / "logs" / "sleeper.log").read_text()
        assert procs.stop([rec], grace=5) == []  # SIGTERM was enough
        assert not procs.is_alive(rec)
        assert popen.poll() == -signal.SIGTERM
    finally:
        if popen.poll() is None:
            popen.kill()


def test_a_reused_pid_is_never_signalled(tmp_path):
    rec, popen = procs.start("sleeper", ["sleep", "300"], tmp_path / "s.log")
    try:
        impostor = procs.ProcRecord("impostor", rec.pid, rec.start_time + 1)  # same PID, other start time
        assert not procs.is_alive(impostor)
        procs.stop([impostor], grace=1)
        assert procs.is_alive(rec)
    finally:
        procs.stop([rec], grace=5)


def test_sigkill_after_grace_and_process_group(tmp_path):
    # ignores SIGTERM and has a child in its process group
    script = "trap '' TERM; sleep 300 & sleep 300; wait"
    rec, popen = procs.start("stubborn", ["sh", "-c", script], tmp_path / "x.log")
    try:
        wait_for(lambda: len([p for p in procs.all_pids() if _pgid(p) == rec.pid]) >= 3, timeout=30,
                 message="shell and its two sleeps")
        killed = procs.stop([rec], grace=0.5)
        assert killed == ["stubborn"]
        wait_for(lambda: not [p for p in procs.all_pids() if _pgid(p) == rec.pid and _state(p) != "Z"],
                 timeout=30, message="the whole process group gone")
    finally:
        if popen.poll() is None:
            popen.kill()


def _pgid(pid: int) -> int | None:
    import os

    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _state(pid: int):
    return procs._state(pid)


def test_records_round_trip_and_foreign_shapes(tmp_path):
    rec = procs.ProcRecord("etcd", 123, 456, ["etcd", "--x"], "/l")
    path = tmp_path / "pids.json"
    procs.write_json_atomic(path, {"processes": [rec.to_json()]})
    assert procs.read_records(path) == [rec]
    # the node runner's pids.json shape
    path.write_text(json.dumps({
        "runner": {"name": "node-runner", "pid": 10, "start_time": 20},
        "processes": [{"name": "ns/pod/c", "pid": 11, "start_time": 21, "pgid": 11}],
    }))
    got = {(r.name, r.pid, r.start_time) for r in procs.read_records(path)}
    assert got == {("node-runner", 10, 20), ("ns/pod/c", 11, 21)}
    path.write_text("not json")
    assert procs.read_records(path) == []
    assert procs.read_records(tmp_path / "missing.json") == []


def test_rss_and_cmdline_of_self():
    import os

    assert procs.rss_kib(os.getpid()) > 1000
    assert procs.cmdline(os.getpid())[0].endswith(("python", "python3")) or "python" in procs.cmdline(os.getpid())[0]


def test_wait_for_returns_value_or_explains_timeout():
    values = iter([0, None, "", "ready"])
    assert wait_for(lambda: next(values), timeout=10, interval=0.01, message="x") == "ready"

    with pytest.raises(TimeoutError) as info:
        wait_for(lambda: [], timeout=0.2, interval=0.05, message="a non-empty list")
    assert "a non-empty list" in str(info.value) and "last value: []" in str(info.value)

    def boom():
        raise ConnectionError("refused")

    with pytest.raises(WaitTimeout) as info:
        wait_for(boom, timeout=0.2, interval=0.05, message="API")
    assert "ConnectionError: refused" in str(info.value)
    assert isinstance(info.value.last_error, ConnectionError)


def test_wait_for_does_not_swallow_unexpected_errors():
    def boom():
        raise KeyError("bug")

    with pytest.raises(KeyError):
        wait_for(boom, timeout=5, interval=0.01, ignore=(ConnectionError,))


def test_cluster_paths_and_state_root(monkeypatch, tmp_path):
    monkeypatch.setenv("SIPFLEET_STATE", str(tmp_path))
    c = cluster.LocalCluster("demo")
    assert c.dir == tmp_path / "clusters" / "demo"
    assert c.kubeconfig == c.dir / "kubeconfig"
    assert c.netns == "sipfleet-c-demo" and c.server is None  # no slot before the first up
    assert c.records() == [] and not c.running()
    assert c.down() == []  # nothing to stop, no error
    with pytest.raises(cluster.ClusterError):
        cluster.LocalCluster("../evil")
    st = c.status()
    assert st["running"] is False and st["components"][0]["name"] == "etcd"
    assert time.monotonic() > 0


def test_a_state_dir_too_long_for_containerds_socket_is_one_clear_error(tmp_path):
    deep = tmp_path / ("d" * 100)
    with pytest.raises(cluster.ClusterError, match="too long.*unix socket path has at most 104"):
        cluster.LocalCluster("long", state_dir=deep).up(timeout=5)
    assert not (deep / "pids.json").exists()
