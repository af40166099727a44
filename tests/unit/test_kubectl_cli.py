"""sipfleet.kubectl.main with a recorded-objects client in place of the API: options before or after the
subcommand, -o json|yaml machine-readable and without colour, --all needs a confirmation, exit codes."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
import yaml

from sipfleet.kubectl import client as client_mod
from sipfleet.kubectl import main as cli
from tests.unit import kubectl_objects as k


class FakeClient:
    instances: list["FakeClient"] = []

    def __init__(self, kubeconfig=None, context=None):
        self.kubeconfig, self.context, self.context_namespace = kubeconfig, context, "demo"
        self.patches: list[tuple[str, str, dict]] = []
        self.accs = {a["metadata"]["name"]: a for a in (
            k.account("alice", k.AGENT_A, f"{k.AGENT_A}-x1"), k.account("bob", k.AGENT_A, f"{k.AGENT_A}-x1"))}
        FakeClient.instances.append(self)

    def close(self):
        pass

    def accounts(self, ns, selector=None):
        return [a for a in self.accs.values() if ns in (None, a["metadata"]["namespace"])
                and (selector is None or selector == f"name={a['metadata']['name']}")]

    def account(self, ns, name):
        return self.accs[name]

    def annotate(self, ns, name, patch):
        self.patches.append((ns, name, patch))

    def events(self, ns, name=None):
        ten_minutes_ago = (datetime.now(timezone.utc) - timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
        return [k.event("alice", "RouteDrift", "Warning", ten_minutes_ago)]  # in the default 1h window

    def agent_deployments(self, ns):
        return [k.deployment(k.AGENT_A, ["alice", "bob"])]

    def agent_pods(self, ns, agent=None):
        return [k.pod(f"{k.AGENT_A}-x1", k.AGENT_A)]

    def memory(self, pods):
        return None, "403 Forbidden"

    def pod_log(self, ns, pod, **kw):
        return "\n".join(json.dumps({"time": "t", "level": "info", "msg": "account created", "account": n})
                         for n in ("alice", "bob"))

    def follow_log(self, ns, pod, **kw):
        yield from self.pod_log(ns, pod).splitlines()

    def crd(self):
        return {"spec": {"versions": [{"name": "v1alpha1", "served": True, "storage": True}]},
                "status": {"conditions": [{"type": "Established", "status": "True"}]}}

    def operators(self, ns=None):
        return []  # no operator: doctor must fail

    def pods_matching(self, ns, labels):
        return []


@pytest.fixture(autouse=True)
def fake(monkeypatch):
    FakeClient.instances.clear()
    monkeypatch.setattr(client_mod, "Client", FakeClient)


def test_options_before_and_after_the_subcommand(capsys):
    assert cli.main(["--kubeconfig", "/x/kc", "--context", "c1", "status", "-n", "demo"]) == 0
    c = FakeClient.instances[-1]
    assert (c.kubeconfig, c.context) == ("/x/kc", "c1")
    assert cli.main(["-n", "demo", "status", "--kubeconfig", "/y/kc"]) == 0
    assert FakeClient.instances[-1].kubeconfig == "/y/kc"
    out = capsys.readouterr().out
    assert "ACCOUNTS (2 in namespace demo)" in out and "\x1b[" not in out


@pytest.mark.parametrize("fmt,load", [("json", json.loads), ("yaml", yaml.safe_load)])
def test_machine_readable_output(capsys, fmt, load):
    assert cli.main(["status", "-o", fmt]) == 0
    out = capsys.readouterr().out
    assert "\x1b[" not in out
    s = load(out)
    assert s["accounts"]["total"] == 2 and s["memory"] == "n/a (403 Forbidden)"
    assert cli.main(["describe", "alice", "-o", fmt]) == 0
    d = load(capsys.readouterr().out)
    assert d["name"] == "alice" and any(e["what"].startswith("event Warning RouteDrift") for e in d["timeline"])


def test_bad_since_is_a_usage_error(capsys):
    assert cli.main(["status", "--since", "soon"]) == 2
    assert "not a duration" in capsys.readouterr().err


def test_annotate_names_selector_all(capsys, monkeypatch):
    assert cli.main(["repair", "alice", "bob"]) == 0
    c = FakeClient.instances[-1]
    values = [p["metadata"]["annotations"]["sipfleet.io/repair"] for _, _, p in c.patches]
    assert len(values) == 2 and len(set(values)) == 2
    # --all without a terminal and without --yes: refused, nothing patched
    monkeypatch.setattr("sys.stdin.isatty", lambda: False, raising=False)
    assert cli.main(["pause", "--all"]) == 1
    assert FakeClient.instances[-1].patches == []
    assert "--yes" in capsys.readouterr().err
    assert cli.main(["pause", "--all", "--yes"]) == 0
    assert [n for _, n, _ in FakeClient.instances[-1].patches] == ["alice", "bob"]
    assert cli.main(["repair"]) == 2  # nothing selected
    assert cli.main(["repair", "alice", "--all"]) == 2  # two selections
    assert cli.main(["repair", "alice", "-A"]) == 2  # a name needs a namespace
    assert "names need a namespace" in capsys.readouterr().err


def test_all_with_a_terminal_asks(monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin.isatty", lambda: True, raising=False)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert cli.main(["repair", "--all"]) == 1 and FakeClient.instances[-1].patches == []
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    assert cli.main(["repair", "--all"]) == 0 and len(FakeClient.instances[-1].patches) == 2


def test_logs_and_doctor(capsys):
    assert cli.main(["logs", "alice", "-o", "json"]) == 0
    assert [d["account"] for d in json.loads(capsys.readouterr().out)] == ["alice"]
    assert cli.main(["logs", "bob", "-f"]) == 0
    assert capsys.readouterr().out == "t info    account created\n"
    assert cli.main(["doctor"]) == 1  # no operator found
    out = capsys.readouterr().out
    assert "no operator Deployment" in out and "problem(s)" in out


def test_colour_only_on_a_terminal_and_never_for_json(monkeypatch, capsys):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setattr("sys.stdout.isatty", lambda: True, raising=False)
    assert cli.main(["status"]) == 0
    assert "\x1b[" in capsys.readouterr().out
    assert cli.main(["status", "-o", "json"]) == 0
    assert "\x1b[" not in capsys.readouterr().out
    monkeypatch.setenv("NO_COLOR", "1")
    assert cli.main(["status"]) == 0
    assert "\x1b[" not in capsys.readouterr().out
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.setattr("sys.stdout.isatty", lambda: False, raising=False)
    assert cli.main(["doctor"]) == 1
    assert "\x1b[" not in capsys.readouterr().out


def test_a_selector_narrows_accounts_agents_and_events(capsys):
    assert cli.main(["status", "-l", "name=bob", "-o", "json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["accounts"]["total"] == 1
    assert s["repairs"]["events"]["RouteDrift"] == 0  # alice's event is not bob's
    assert [a["accounts"] for a in s["agents"]] == [["alice", "bob"]]  # the agent hosting bob
    assert cli.main(["status", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["repairs"]["events"]["RouteDrift"] == 1  # alice's
    assert cli.main(["status", "--since", "5m", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["repairs"]["events"]["RouteDrift"] == 0  # before that window
