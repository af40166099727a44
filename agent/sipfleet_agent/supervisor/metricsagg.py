"""The pod's /metrics: the sum of every worker's families (from their heartbeats), and the per-account registration
state gauge.

Promise: counters and histograms never go backwards when a worker ends or is restarted (its last values are kept
in a retired base); gauges count live workers only. Families are summed by (sample name, labels).
:class:`AccountStates` exports one sample per hosted account, ``sipfleet_agent_registration_state{account}``, with
Asterisk's values (0 unregistered, 1 registered, 2 rejected: our ``Failed``) and 3 while ``Registering``, read from
the status documents the supervisor passes on (so an account of a dead or quarantined worker shows ``Failed``);
a removed account's sample goes with it.
"""

from __future__ import annotations

import threading
from typing import Callable, Iterable

from prometheus_client.core import Metric

CUMULATIVE = ("counter", "histogram")
#: the value of each registration state, Asterisk's (res_pjsip_outbound_registration) for the first three
STATE_VALUES = {"Unregistered": 0, "Registered": 1, "Failed": 2, "Registering": 3}
STATE_GAUGE = "sipfleet_agent_registration_state"


class WorkerMetrics:
    def __init__(self, live: Callable[[], Iterable[list]]):
        self.live = live
        self._retired: dict[tuple, float] = {}
        self._meta: dict[str, tuple[str, str]] = {}
        self._lock = threading.Lock()

    def retire(self, families: list) -> None:
        with self._lock:
            for name, typ, doc, samples in families:
                self._meta.setdefault(name, (typ, doc))
                if typ not in CUMULATIVE:
                    continue
                for sname, labels, value in samples:
                    k = (name, sname, tuple(sorted(labels.items())))
                    self._retired[k] = self._retired.get(k, 0.0) + value

    def totals(self) -> dict[tuple, float]:
        with self._lock:
            sums = dict(self._retired)
        for families in self.live():
            for name, typ, doc, samples in families:
                self._meta.setdefault(name, (typ, doc))
                for sname, labels, value in samples:
                    k = (name, sname, tuple(sorted(labels.items())))
                    sums[k] = sums.get(k, 0.0) + value
        return sums

    def collect(self):  # prometheus_client collector protocol
        sums = self.totals()
        fams: dict[str, Metric] = {}
        for (name, sname, labels), value in sums.items():  # the workers' order (histogram buckets stay in order)
            if name not in fams:
                typ, doc = self._meta.get(name, ("untyped", ""))
                fams[name] = Metric(name, doc, typ)
            fams[name].add_sample(sname, dict(labels), value)
        return list(fams.values())


def state_value(doc: dict | None) -> int:
    """An account's gauge value from its last status document (none yet: Registering)."""
    state = ((doc or {}).get("registration") or {}).get("state") or "Registering"
    return STATE_VALUES.get(state, STATE_VALUES["Registering"])


class AccountStates:
    """``accounts()`` gives (account name, last status document or None) for every hosted account."""

    def __init__(self, accounts: Callable[[], Iterable[tuple[str, dict | None]]]):
        self.accounts = accounts

    def collect(self):  # prometheus_client collector protocol
        fam = Metric(STATE_GAUGE, "Registration state per account: 0 unregistered, 1 registered, 2 rejected "
                     "(Failed), 3 registering (Asterisk's values for 0-2)", "gauge")
        for name, doc in sorted(self.accounts(), key=lambda a: a[0]):
            fam.add_sample(STATE_GAUGE, {"account": name}, float(state_value(doc)))
        return [fam]
