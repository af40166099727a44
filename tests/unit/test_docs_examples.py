"""examples/ holds valid manifests for the demo lab: shared, dedicated and account-mode SipAccounts."""

from __future__ import annotations

from pathlib import Path

import yaml

from sipfleet.api import models as m

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def load(kind: str) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for f in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(f.read_text()):
            if doc and doc["kind"] == kind:
                assert doc["metadata"]["name"] not in out, f"duplicate {kind} {doc['metadata']['name']}"
                assert "namespace" not in doc["metadata"], "examples apply into any namespace (-n)"
                out[doc["metadata"]["name"]] = doc
    return out


def specs() -> dict[str, m.SipAccountSpec]:
    accounts = load(m.KIND)
    for doc in accounts.values():
        assert doc["apiVersion"] == m.API_VERSION
    return {name: m.SipAccountSpec.model_validate(doc["spec"]) for name, doc in accounts.items()}


def test_every_account_is_valid_and_has_its_secret():
    secrets = load("Secret")
    accounts = specs()
    assert len(accounts) >= 4
    for name, spec in accounts.items():
        secret = secrets[spec.credentials.secret_name]
        data = secret["stringData"]
        assert spec.credentials.username_key in data and spec.credentials.password_key in data
        assert data[spec.credentials.username_key] == spec.aor.split(":", 1)[1].split("@")[0]


def test_examples_use_the_addresses_of_lab_slot_1():
    from sipfleet.demo.examples import EXAMPLE_SUBNET
    from sipfleet.localenv.hostnet import plan
    from sipfleet.localenv.siplab import SipLab

    net = plan.lab_net(1)  # the demo rewrites them to its lab's slot when that is another one
    assert EXAMPLE_SUBNET == net.prefix
    domain = SipLab("docs-check", state_dir="/nonexistent/never-created").domain  # constructing starts nothing
    for spec in specs().values():
        assert spec.registrar == f"sip:{net.host_ip(2)}:5060"
        assert spec.route == [f"sip:{net.host_ip(1)}:5060;lr"]
        assert spec.aor.endswith("@" + domain)


def test_examples_show_sharing_dedicated_and_account_mode():
    from sipfleet_operator.placement import GroupKey

    accounts = specs()
    keys = {name: GroupKey.for_spec("demo", name, spec) for name, spec in accounts.items()}
    shared = [n for n, s in accounts.items() if s.route_mode == "prevent" and not s.agent.dedicated]
    assert len(shared) >= 2 and len({keys[n] for n in shared}) == 1, "some accounts share one agent"
    assert any(s.agent.dedicated for s in accounts.values())
    assert any(s.route_mode == "account" for s in accounts.values())
