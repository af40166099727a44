"""The example manifests (``examples/*.yaml``) as the demo applies them, and small SIP text helpers. Pure.

The examples are written for lab slot 1 (``10.213.201.x``); :func:`render_examples` moves every such address to
the lab's actual subnet, keeps the chosen accounts (the ``routeMode: account`` one always) and their Secrets, and
puts them in the demo's namespace.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
#: the lab addresses the example manifests are written for (lab slot 1); rewritten to the lab's at apply time
EXAMPLE_SUBNET = "10.213.201"


class ExampleError(ValueError):
    """The examples cannot give what was asked (an unknown account name, no routeMode account example)."""


def parse_accounts_option(value: str) -> set[str] | None:
    """``--accounts``: None for all, else the set of names."""
    if value.strip() in ("all", ""):
        return None
    return {a.strip() for a in value.split(",") if a.strip()}


def render_examples(subnet: str, wanted: set[str] | None, namespace: str,
                    directory: Path = EXAMPLES) -> tuple[str, list[dict], list[dict]]:
    """The example manifests with their addresses moved to ``subnet``: (yaml, SipAccounts, Secrets)."""
    docs: list[dict] = []
    for f in sorted(directory.glob("*.yaml")):
        text = f.read_text()
        if subnet != EXAMPLE_SUBNET:
            text = re.sub(re.escape(EXAMPLE_SUBNET) + r"\.(\d{1,3})\b", lambda m: f"{subnet}.{m.group(1)}", text)
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    accounts = [d for d in docs if d.get("kind") == "SipAccount"]
    drift = {a["metadata"]["name"] for a in accounts if a["spec"].get("routeMode") == "account"}
    if not drift:
        raise ExampleError(f"{directory} has no SipAccount with routeMode: account")
    if wanted is not None:
        unknown = wanted - {a["metadata"]["name"] for a in accounts}
        if unknown:
            raise ExampleError(f"--accounts: no example SipAccount named {', '.join(sorted(unknown))}")
        accounts = [a for a in accounts if a["metadata"]["name"] in wanted | drift]
    needed = {a["spec"]["credentials"]["secretName"] for a in accounts}
    secrets = [d for d in docs if d.get("kind") == "Secret" and d["metadata"]["name"] in needed]
    for d in accounts + secrets:
        d["metadata"]["namespace"] = namespace
    return yaml.safe_dump_all(secrets + accounts, sort_keys=False), accounts, secrets


def drift_account(accounts: list[dict]) -> dict:
    """The ``routeMode: account`` example (the one the fault is aimed at)."""
    return next(a for a in accounts if a["spec"].get("routeMode") == "account")


def user_of(aor: str) -> str:
    m = re.match(r"^sips?:([^@;]+)@", aor)
    if not m:
        raise ExampleError(f"cannot take the user part of {aor!r}")
    return m.group(1)


def norm(uri: str) -> str:
    """A SIP URI as the agent compares routes (transport made explicit, parameters in order)."""
    from sipfleet_agent.siplog import normalize_uri

    return normalize_uri(uri, "udp")


def fmt_route(route: list[str]) -> str:
    return ", ".join(f"<{u}>" for u in route) if route else "(none)"
