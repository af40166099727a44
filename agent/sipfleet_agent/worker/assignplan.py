"""The assignment plan of one worker: what to do with its pjsua accounts for a new list of accounts. Pure.

Promise: :func:`plan` returns, in this order, ``remove`` for every hosted account no longer wanted, then per wanted
account (in the given order) ``create`` (new), ``recreate`` (anything pjsua was configured with changed:
:meth:`~sipfleet_agent.config.ResolvedAccount.recreate_key`; pjsua accounts are never modify()'d) or ``update``
(only policies, self-heal or tokens changed: no re-REGISTER), then ``repair`` for a new repair token and
``reregister`` for a new re-register token. On the first plan of a fresh process the tokens already present are
acknowledged by the creation itself (``ack_tokens``).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping


@dataclasses.dataclass(frozen=True)
class Hosted:
    recreate_key: tuple
    repair_ack: str | None = None
    reregister_ack: str | None = None
    pending_tokens: tuple = ()


@dataclasses.dataclass(frozen=True)
class Action:
    kind: str  # remove, create, recreate, update, repair, reregister
    key: tuple
    token: str | None = None
    ack_tokens: bool = False


def plan(hosted: Mapping[tuple, Hosted], wanted: list, first: bool) -> list[Action]:
    """``wanted``: ResolvedAccount-like objects (``key``, ``recreate_key()``, ``spec.repair_token``/``reregister_token``)."""
    keys = {a.key for a in wanted}
    out = [Action("remove", k) for k in hosted if k not in keys]
    for res in wanted:
        cur = hosted.get(res.key)
        if cur is None:
            out.append(Action("create", res.key, ack_tokens=first))
            continue
        out.append(Action("recreate" if cur.recreate_key != res.recreate_key() else "update", res.key))
        spec = res.spec
        if spec.repair_token and spec.repair_token != cur.repair_ack and spec.repair_token not in cur.pending_tokens:
            out.append(Action("repair", res.key, spec.repair_token))
        if spec.reregister_token and spec.reregister_token != cur.reregister_ack:
            out.append(Action("reregister", res.key, spec.reregister_token))
    return out
