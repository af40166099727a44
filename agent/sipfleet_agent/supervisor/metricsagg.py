"""The pod's /metrics: the sum of every worker's families (from their heartbeats).

Promise: counters and histograms never go backwards when a worker ends or is restarted (its last values are kept
in a retired base); gauges count live workers only. Families are summed by (sample name, labels).
"""

from __future__ import annotations

import threading
from typing import Callable, Iterable

from prometheus_client.core import Metric

CUMULATIVE = ("counter", "histogram")


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
