"""Loading an :class:`~sipfleet.api.models.AgentAssignment` and resolving each account's credentials.

Standalone: a YAML or JSON file; credentials come from ``username``/``usernameFile`` + ``passwordFile``.
Cluster: ``assignment.json`` from the agent's ConfigMap; credentials come from a Secret (see ``cluster``).
Passwords live in memory only (:class:`ResolvedAccount`), never in logs, status or ``repr``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

import yaml

from sipfleet.api import credentials as creds_rules
from sipfleet.api.models import AgentAccount, AgentAssignment

from .siplog import with_transport


class ConfigError(Exception):
    pass


def parse_assignment(text: str) -> AgentAssignment:
    try:
        data = json.loads(text)
    except ValueError:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"config is neither JSON nor YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError("config must be a mapping (an AgentAssignment)")
    try:
        return AgentAssignment.model_validate(data)
    except Exception as e:  # pydantic.ValidationError; its text names fields, never secret values
        raise ConfigError(f"invalid AgentAssignment: {e}") from None


def load_assignment_file(path: str | Path) -> AgentAssignment:
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e}") from None
    return parse_assignment(text)


@dataclasses.dataclass(frozen=True)
class Secretish:
    """Credentials resolved for one account. ``repr`` never shows the password."""

    username: str
    password: str = dataclasses.field(repr=False)
    realm: str = "*"

    def fingerprint(self) -> int:
        return hash((self.username, self.password, self.realm))


def checked(creds: Secretish, where: str) -> Secretish:
    """``creds`` if a SIP stack can carry them (sipfleet.api.credentials: no control characters, quotes or
    backslashes in the username, bounded lengths), else a ConfigError naming ``where`` and the reason, never a
    value: the agent refuses at runtime what the operator should have refused already (nothing is sent)."""
    for what, value, check in (("username", creds.username, creds_rules.username_problem),
                               ("password", creds.password, creds_rules.password_problem)):
        why = check(value.encode("utf-8", "surrogateescape"))
        if why:
            raise ConfigError(f"{creds_rules.INVALID}: {where} {what} {why}")
    return creds


def file_credentials(acc: AgentAccount, base: Path | None = None) -> Secretish:
    c = acc.credentials
    if c.secret_name and not c.password_file:
        raise ConfigError(f"account {acc.name}: secretName credentials need cluster mode")

    def read(p: str) -> str:
        path = Path(p)
        if base is not None and not path.is_absolute():
            path = base / path
        try:
            return path.read_text().rstrip("\r\n")
        except OSError as e:
            raise ConfigError(f"account {acc.name}: cannot read credentials file {path}: {e.strerror}") from None

    username = c.username if c.username else read(c.username_file or "")
    password = read(c.password_file or "")
    return checked(Secretish(username=username, password=password, realm=c.realm or "*"), f"account {acc.name}:")


CredentialResolver = Callable[[AgentAccount], Secretish]


@dataclasses.dataclass(frozen=True)
class ResolvedAccount:
    """An account with its credentials and the URIs pjsua is actually configured with."""

    spec: AgentAccount
    creds: Secretish = dataclasses.field(repr=False)
    expires_override: int | None = None
    #: transport tls with a TLS policy: the resolved CA (and client certificate); it keys the worker
    tls: Any = dataclasses.field(default=None, repr=False)  # a tlsmaterial.TlsMaterial

    def worker_key(self) -> tuple:
        """The spec's worker key plus the TLS material's fingerprint: new material, a new TLS transport."""
        return self.spec.worker_key() + ((("tls-material", self.tls.fingerprint()),) if self.tls else ())

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def key(self) -> tuple[str | None, str]:
        return (self.spec.namespace, self.spec.name)

    @property
    def expires(self) -> int:
        return self.expires_override or self.spec.registration.expires_seconds

    def applied_route(self) -> list[str]:
        """The route as handed to pjsua: tcp/tls routes get an explicit transport parameter."""
        return [with_transport(r, self.spec.transport) for r in self.spec.route]

    def applied_registrar(self) -> str:
        if self.spec.route:
            return self.spec.registrar
        return with_transport(self.spec.registrar, self.spec.transport)

    def recreate_key(self) -> tuple:
        """Anything pjsua was configured with: when it changes, the account is re-created (never modify())."""
        s = self.spec
        return (
            s.aor,
            s.registrar,
            tuple(s.route),
            s.transport,
            s.route_mode,
            s.registration.model_dump_json(),
            self.expires,
            self.creds.fingerprint(),
        )
