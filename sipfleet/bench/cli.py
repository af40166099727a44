"""`sipfleet bench ...`: benchmarks that print numbers (never asserted as timings).

Agent benchmarks live in ``sipfleet.bench.agent``, fleet (operator) benchmarks in ``sipfleet.bench.fleet`` and ``sipfleet.bench.repair``,
pod memory in ``sipfleet.bench.podmem``, fleet density in ``sipfleet.bench.density``, the fault matrix in ``sipfleet.bench.faults``, recovery from a registrar outage in ``sipfleet.bench.recovery``, failover to a fallback route and back in
``sipfleet.bench.failover``; each exposes ``register(subparsers)`` adding its own subcommands.
"""

from __future__ import annotations

import argparse
import importlib

GROUPS = ["sipfleet.bench.agent", "sipfleet.bench.agentrss", "sipfleet.bench.fleet", "sipfleet.bench.repair",
          "sipfleet.bench.podmem", "sipfleet.bench.density", "sipfleet.bench.faults", "sipfleet.bench.recovery",
          "sipfleet.bench.failover"]


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench_command", required=True, metavar="BENCH")
    for module in GROUPS:
        importlib.import_module(module).register(sub)
