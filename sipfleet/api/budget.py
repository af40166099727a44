"""The registrar-wide REGISTER budget as the operator splits it and the agents spend it. Pure.

An operator with ``SIPFLEET_REGISTER_RATE_LIMIT`` L gives each account of a registrar (:func:`registrar_key`) that
hosts N of its accounts a share :func:`per_account_rate` (``AgentAccount.register_rate``); an agent paces the
REGISTERs it starts itself by the sum of its accounts' shares per registrar. The share is L/N rounded *down* to a
quarter octave (2^(k/4)): the fleet's sum stays at or under L (at least 84 % of it), and the share changes only
when N crosses one of those steps, so a growing fleet rewrites the assignments of a registrar's agents O(log N)
times, not at every new account.
"""

from __future__ import annotations

import math

#: quarter octaves: a share is 2^(k/STEPS_PER_OCTAVE) REGISTERs per second
STEPS_PER_OCTAVE = 4


def registrar_key(uri: str) -> str:
    """The registrar a REGISTER is budgeted against: the host[:port] of ``spec.registrar``, lower case
    (``sip:Registrar.example.com:5060;transport=tcp`` -> ``registrar.example.com:5060``)."""
    rest = uri.split(":", 1)[1] if ":" in uri else uri
    rest = rest.split("@", 1)[-1]
    for sep in (";", "?", ">"):
        rest = rest.split(sep, 1)[0]
    return rest.strip().lower()


def per_account_rate(limit: float, accounts: int) -> float | None:
    """Each account's share of ``limit`` REGISTERs per second among ``accounts`` accounts of one registrar
    (None: no budget)."""
    if limit <= 0 or accounts <= 0:
        return None
    k = math.floor(STEPS_PER_OCTAVE * math.log2(limit / accounts) + 1e-9)
    return 2.0 ** (k / STEPS_PER_OCTAVE)


#: final answers to a REGISTER that say the registrar is not answering (0: none at all; 408: pjsip's own timeout or
#: a proxy's): the agent then holds its paced accounts behind one probe instead of each retrying on its own
PATH_FAILURE_CODES = frozenset({0, 408, 500, 502, 503, 504})
