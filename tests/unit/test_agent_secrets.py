"""The agent's Secret resolver against an in-memory stand-in for CoreV1Api (unit test of its logic): prefetch reads
each missing Secret once and several at a time; a Secret that cannot be read is still the named error of the
account that needs it; a cached Secret is not read again."""

from __future__ import annotations

import base64
import threading
import time

import pytest
from kubernetes.client.exceptions import ApiException

from sipfleet.api.models import AgentAccount
from sipfleet_agent.config import ConfigError
from sipfleet_agent.k8s.secrets import SecretResolver


class Core:
    """Secrets by name; records reads and how many were in flight at once (each read takes ``delay`` s)."""

    def __init__(self, names: list[str], delay: float = 0.05) -> None:
        self.secrets = {n: {"username": base64.b64encode(n.encode()).decode(),
                            "password": base64.b64encode(b"pw-" + n.encode()).decode()} for n in names}
        self.delay = delay
        self.reads: list[str] = []
        self.lock = threading.Lock()
        self.in_flight = self.most_in_flight = 0

    def read_namespaced_secret(self, name, ns, **_):
        with self.lock:
            self.reads.append(name)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            time.sleep(self.delay)
            if name not in self.secrets:
                raise ApiException(status=404, reason="Not Found")

            class S:
                data = self.secrets[name]
            return S()
        finally:
            with self.lock:
                self.in_flight -= 1


def _acc(name: str, secret: str, version: str = "1") -> AgentAccount:
    return AgentAccount.model_validate({
        "name": name, "namespace": "ns", "aor": f"sip:{name}@lab.test", "registrar": "sip:127.0.20.2:5060",
        "credentials": {"secretName": secret, "secretVersion": version}})


def test_prefetch_reads_each_missing_secret_once_several_at_a_time():
    core = Core([f"s{i}" for i in range(16)])
    r = SecretResolver(core, "ns")
    accs = [_acc(f"a{i}", f"s{i}") for i in range(16)] + [_acc("dup", "s0")]
    r.prefetch(accs)
    assert sorted(core.reads) == sorted(f"s{i}" for i in range(16))
    assert core.most_in_flight > 1
    core.reads.clear()
    assert [r(a).password for a in accs] == [f"pw-s{i}" for i in range(16)] + ["pw-s0"]
    assert core.reads == []  # all from the cache
    r.prefetch(accs)
    assert core.reads == []


def test_an_unreadable_secret_is_the_named_error_of_its_account():
    core = Core(["good1", "good2"])
    r = SecretResolver(core, "ns")
    accs = [_acc("a", "good1"), _acc("b", "missing"), _acc("c", "good2")]
    r.prefetch(accs)
    assert r(accs[0]).username == "good1"
    with pytest.raises(ConfigError, match="Secret ns/missing not readable"):
        r(accs[1])
    assert r(accs[2]).username == "good2"


def test_a_new_secret_version_is_read_again():
    core = Core(["s"])
    r = SecretResolver(core, "ns")
    r.prefetch([_acc("a", "s", "1"), _acc("b", "s", "1")])
    core.secrets["s"]["password"] = base64.b64encode(b"rotated").decode()
    r.prefetch([_acc("a", "s", "2"), _acc("x", "s", "2")])
    assert core.reads == ["s", "s"]
    assert r(_acc("a", "s", "2")).password == "rotated"
