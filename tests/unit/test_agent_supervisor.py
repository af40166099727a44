"""The supervisor's runtime against fake workers (threads speaking the real protocol over real socket pairs):
the plan reaches the right workers, a crashed or hung worker is restarted alone with its accounts' status and a
Warning event naming the cause, a re-keyed account moves alone, stop tells every worker. No pjsua2, no lab."""

from __future__ import annotations

import os
import socket
import threading
import time

from sipfleet.api.models import AgentAccount, AgentSettings
from sipfleet_agent import protocol as p
from sipfleet_agent.config import ResolvedAccount, Secretish
from sipfleet_agent.supervisor.backoff import RestartPolicy
from sipfleet_agent.supervisor.runtime import Supervisor


class FakeHandle:
    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None

    def poll(self):
        return self.returncode

    def wait(self, timeout: float):
        deadline = time.monotonic() + timeout
        while self.returncode is None and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.returncode


class FakeWorker(threading.Thread):
    """Answers init with hello, apply with a Registered status per account and a reply; beats every 50 ms."""

    def __init__(self, sock: socket.socket, handle: FakeHandle):
        super().__init__(daemon=True)
        self.sock, self.handle = sock, handle
        self.rd = sock.makefile("r", encoding="utf-8")
        self.wr = sock.makefile("w", encoding="utf-8", buffering=1)
        self.lock = threading.Lock()
        self.init: p.Init | None = None
        self.applied: list[list[str]] = []
        self.passwords: list[str] = []
        self.frozen = False
        self.stopped = False

    def send(self, msg) -> None:  # noqa: ANN001
        with self.lock:
            try:
                self.wr.write(p.encode(msg))
                self.wr.flush()
            except (OSError, ValueError):
                pass

    def beat(self) -> None:
        n = 0
        while self.handle.returncode is None:
            if not self.frozen:
                n += 1
                self.send(p.Heartbeat(n, []))
            time.sleep(0.05)

    def run(self) -> None:
        threading.Thread(target=self.beat, daemon=True).start()
        for line in self.rd:
            msg = p.decode(line)
            if isinstance(msg, p.Init):
                self.init = msg
                self.send(p.Hello(msg.worker, self.handle.pid, 5060 + msg.worker, "test"))
            elif isinstance(msg, p.Apply):
                self.applied.append(sorted(a.spec["name"] for a in msg.accounts))
                self.passwords += [a.password for a in msg.accounts]
                for a in msg.accounts:
                    self.send(p.Status(a.spec.get("namespace"), a.spec["name"],
                                       {"registration": {"state": "Registered"}, "route": {}, "agent": {}}))
                self.send(p.Reply(msg.id, True))
            elif isinstance(msg, p.Request):
                self.send(p.Reply(msg.id, True, {"sipPort": 5060, "accounts": []} if msg.op == "snapshot" else 1))
            elif isinstance(msg, p.Stop):
                self.stopped = True
                self.handle.returncode = 0
                self.sock.shutdown(socket.SHUT_RDWR)  # as a process exit closes it
                return
        self.handle.returncode = self.handle.returncode if self.handle.returncode is not None else 0


class FakeLauncher:
    def __init__(self) -> None:
        self.workers: list[FakeWorker] = []
        self.pid = 40000

    def launch(self, wid: int, log_level: str):
        mine, theirs = socket.socketpair()
        self.pid += 1
        h = FakeHandle(self.pid)
        w = FakeWorker(theirs, h)
        w.start()
        self.workers.append(w)
        return h, mine

    def stop(self) -> None:
        return None

    def live(self) -> dict[int, FakeWorker]:
        return {w.init.worker: w for w in self.workers if w.handle.returncode is None and w.init}


class Edge:
    def __init__(self) -> None:
        self.statuses: list[tuple[str, dict]] = []
        self.events: list[tuple[str, str, str, str]] = []

    def status(self, key, name, doc):  # noqa: ANN001
        self.statuses.append((name, doc))

    def event(self, key, name, type_, reason, message, count=1):  # noqa: ANN001
        self.events.append((name, type_, reason, message))
        self.counts = getattr(self, "counts", []) + [count]


def res(name: str, route: str = "sip:127.0.0.1:5060;lr", mode: str = "account") -> ResolvedAccount:
    spec = AgentAccount.model_validate({"name": name, "aor": f"sip:{name}@lab.test", "registrar": "sip:127.0.0.2",
                                        "route": [route], "routeMode": mode, "credentials": {"secretName": "s"}})
    return ResolvedAccount(spec, Secretish(name, f"pw-{name}"))


def until(pred, timeout: float = 10.0):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError("condition not reached")


def make(**settings) -> tuple[Supervisor, FakeLauncher, Edge]:
    launcher, edge = FakeLauncher(), Edge()
    sup = Supervisor(AgentSettings(**settings), edge, name="t", pod="pod", launcher=launcher,
                     policy=RestartPolicy(base_s=0.1, max_s=1.0, stable_s=60.0), grace_s=2.0)
    return sup, launcher, edge


def test_accounts_are_spread_by_worker_key_and_credentials_reach_only_their_worker():
    sup, launcher, edge = make()
    accounts = [res(f"a{i}") for i in range(10)] + [res("e0", route="sip:127.0.0.3:5060;lr")]
    sup.start(accounts)
    until(lambda: len(launcher.live()) == 3 and sup.ready())
    live = launcher.live()
    assert sorted(w.applied[-1] for w in live.values()) == [["a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7"],
                                                            ["a8", "a9"], ["e0"]]
    for w in live.values():
        assert sorted(w.passwords) == sorted(f"pw-{n}" for n in w.applied[-1])
    assert {n for n, _ in edge.statuses} == {a.name for a in accounts}
    sup.request_stop(0)
    assert sup.wait(10) and sup.exit_code == 0
    assert all(w.stopped for w in launcher.workers)


def test_a_crashed_worker_is_restarted_alone_and_its_accounts_are_told_why():
    sup, launcher, edge = make()
    sup.start([res(f"a{i}") for i in range(10)])
    until(lambda: len(launcher.live()) == 2 and sup.ready())
    before = launcher.live()
    victim = next(w for w in before.values() if w.applied[-1] == ["a8", "a9"])
    other = next(w for w in before.values() if w is not victim)
    victim.handle.returncode = -9
    victim.sock.close()
    until(lambda: len(launcher.workers) == 3 and len(launcher.live()) == 2 and sup.ready())
    fresh = launcher.live()[victim.init.worker]
    assert fresh is not victim and fresh.applied == [["a8", "a9"]]
    assert other.applied == [[f"a{i}" for i in range(8)]], "the other worker was touched"
    assert sorted(e[0] for e in edge.events) == ["a8", "a9"]
    assert all(e[1] == "Warning" and e[2] == "WorkerRestarted" and "SIGKILL" in e[3] and "a8, a9" in e[3]
               for e in edge.events)
    failed = [(n, d) for n, d in edge.statuses if d["registration"]["state"] == "Failed"]
    assert sorted(n for n, _ in failed) == ["a8", "a9"] and all("route" in d for _, d in failed)
    sup.request_stop(0)
    assert sup.wait(10)


def test_a_worker_without_heartbeats_is_killed_and_restarted(monkeypatch):
    killed: list[tuple[int, int]] = []
    sup, launcher, edge = make(heartbeat_timeout_seconds=0.5)

    def fake_kill(pid: int, sig: int) -> None:
        killed.append((pid, sig))
        for w in launcher.workers:
            if w.handle.pid == pid:
                w.handle.returncode = -sig

    monkeypatch.setattr(os, "kill", fake_kill)
    sup.start([res("a0"), res("e0", route="sip:127.0.0.3:5060;lr")])
    until(lambda: len(launcher.live()) == 2 and sup.ready())
    hung = next(w for w in launcher.live().values() if w.applied[-1] == ["e0"])
    hung.frozen = True
    until(lambda: len(launcher.workers) == 3 and sup.ready(), timeout=10)
    assert killed == [(hung.handle.pid, 9)]
    assert [(e[0], e[2]) for e in edge.events] == [("e0", "WorkerRestarted")]
    assert "hung: no heartbeat" in edge.events[0][3]
    sup.request_stop(0)
    assert sup.wait(10)


def test_a_rekeyed_account_moves_to_another_worker_and_the_rest_stay():
    sup, launcher, edge = make()
    sup.start([res("a0"), res("a1"), res("p0", mode="prevent")])
    until(lambda: len(launcher.live()) == 2 and sup.ready())
    first = dict(launcher.live())
    stay = next(w for w in first.values() if w.applied[-1] == ["a0", "a1"])
    sup.apply([res("a0"), res("a1"), res("p0", route="sip:127.0.0.3:5060;lr", mode="prevent")])
    until(lambda: len(launcher.workers) == 3 and sup.ready())
    moved = launcher.workers[-1]
    assert moved.applied == [["p0"]] and moved.init.route == ["sip:127.0.0.3:5060;lr"]
    assert moved.init.route_mode == "prevent"
    assert stay.applied == [["a0", "a1"]] and stay.handle.returncode is None
    assert next(w for w in first.values() if w is not stay).stopped
    assert edge.events == []
    sup.request_stop(0)
    assert sup.wait(10)


def test_self_heals_reported_by_a_worker_become_counted_events():
    sup, launcher, edge = make()
    sup.start([res("a0")])
    until(lambda: len(launcher.live()) == 1 and sup.ready())
    w = next(iter(launcher.live().values()))
    route = {"firstHop": "udp:127.0.0.1:5060", "driftCount": 1, "selfHealCount": 1,
             "lastRepair": {"trigger": "self-heal", "durationMs": 4.2}}
    w.send(p.Status(None, "a0", {"registration": {"state": "Registered"}, "route": route, "agent": {}}))
    w.send(p.Status(None, "a0", {"registration": {"state": "Registered"}, "route": route, "agent": {}}))
    w.send(p.Status(None, "a0", {"registration": {"state": "Registered"},
                                 "route": {**route, "driftCount": 4, "selfHealCount": 4}, "agent": {}}))
    until(lambda: len(edge.statuses) >= 4)
    heals = [e for e in edge.events if e[2] == "RouteSelfHealed"]
    assert len(heals) == 2 and edge.counts == [1, 3], edge.events
    assert all(e[1] == "Normal" for e in heals) and "in 4 ms" in heals[0][3] and "4 self-heals" in heals[1][3]


def test_a_rejected_answer_quarantines_its_account_and_the_worker_restarts_with_the_others():
    from sipfleet_agent.supervisor.quarantine import QuarantinePolicy

    launcher, edge = FakeLauncher(), Edge()
    sup = Supervisor(AgentSettings(), edge, name="t", pod="pod", launcher=launcher,
                     policy=RestartPolicy(base_s=0.1, max_s=1.0, stable_s=60.0), grace_s=2.0,
                     quarantine=QuarantinePolicy(base_s=1.0, max_s=8.0, forget_s=60.0))
    sup.start([res(f"a{i}") for i in range(3)])
    until(lambda: len(launcher.live()) == 1 and sup.ready())
    victim = launcher.live()[0]
    # what a worker does: the message, then it ends itself with the rejected exit code
    victim.send(p.Rejected(None, "a1", "RegistrarResponseRejected", "10 Service-Route URIs; at most 8", 10, 8))
    victim.handle.returncode = p.REJECTED_EXIT_CODE
    victim.sock.close()
    until(lambda: len(launcher.workers) == 2 and sup.ready())
    assert launcher.live()[0].applied == [["a0", "a2"]], "restarted with its other accounts only"
    failed = [d for n, d in edge.statuses if n == "a1" and d["registration"]["state"] == "Failed"]
    assert failed[-1]["registration"]["failureReason"] == "RegistrarResponseRejected"
    assert "quarantined for 1 s" in failed[-1]["registration"]["reason"]
    assert ("a1", "Warning", "RegistrarResponseRejected") in [e[:3] for e in edge.events]
    restarted = [e for e in edge.events if e[2] == "WorkerRestarted"]
    assert sorted(e[0] for e in restarted) == ["a0", "a2"] and "a1" in restarted[0][3]
    # released after its quarantine: into a worker of its own, the others are not touched
    until(lambda: len(launcher.live()) == 2 and sup.ready(), timeout=10)
    alone = next(w for w in launcher.live().values() if w.applied[-1] == ["a1"])
    assert alone.init.transport == "udp" and alone.init.route == ["sip:127.0.0.1:5060;lr"]
    assert launcher.live()[0].applied == [["a0", "a2"]]
    # a second rejection: twice as long, and only its own worker ended
    alone.send(p.Rejected(None, "a1", "RegistrarResponseRejected", "again", 10, 8))
    alone.handle.returncode = p.REJECTED_EXIT_CODE
    alone.sock.close()
    until(lambda: any("quarantined for 2 s (rejection 2)" in (d["registration"].get("reason") or "")
                      for n, d in edge.statuses if n == "a1"))
    assert [e for e in edge.events if e[2] == "WorkerRestarted"] == restarted
    assert len(launcher.workers) == 3
    sup.request_stop(0)
    assert sup.wait(10)


def test_repeated_crashes_right_after_one_accounts_answer_quarantine_that_account():
    sup, launcher, edge = make()
    sup.start([res(f"a{i}") for i in range(3)])
    until(lambda: len(launcher.live()) == 1 and sup.ready())
    first = launcher.live()[0]
    assert first.init.breadcrumbs is False  # no cost while nothing went wrong
    first.handle.returncode = -11  # the first crash: nobody to blame yet
    first.sock.close()
    until(lambda: len(launcher.workers) == 2 and sup.ready())
    second = launcher.live()[0]
    assert second.init.breadcrumbs is True and second.applied == [["a0", "a1", "a2"]]
    assert not [e for e in edge.events if e[2] != "WorkerRestarted"]
    second.send(p.Answer(None, "a0"))
    second.send(p.Answer(None, "a2"))  # the last breadcrumb before the crash
    time.sleep(0.2)
    second.handle.returncode = -11
    second.sock.close()
    until(lambda: len(launcher.workers) == 3 and sup.ready())
    assert launcher.live()[0].applied == [["a0", "a1"]]
    blamed = [e for e in edge.events if e[2] == "RegistrarResponseCrashedWorker"]
    assert [e[0] for e in blamed] == ["a2"] and "SIGSEGV" in blamed[0][3] and "a2" in blamed[0][3]
    reg = [d for n, d in edge.statuses if n == "a2"][-1]["registration"]
    assert reg["failureReason"] == "RegistrarResponseCrashedWorker" and "quarantined" in reg["reason"]
    # SIGKILL is someone else's doing: never blamed on an account
    third = launcher.live()[0]
    third.send(p.Answer(None, "a1"))
    time.sleep(0.2)
    third.handle.returncode = -9
    third.sock.close()
    until(lambda: len(launcher.workers) == 4 and sup.ready())
    assert launcher.live()[0].applied == [["a0", "a1"]]
    assert len([e for e in edge.events if e[2] == "RegistrarResponseCrashedWorker"]) == 1
    sup.request_stop(0)
    assert sup.wait(10)
