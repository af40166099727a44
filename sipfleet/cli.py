"""`sipfleet`: one command line for the API, the local environment, benchmarks and the demo.

Each command group lives with the code it drives and exposes ``register(subparsers)``; handlers
return a process exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__

# (command, module providing register(subparsers)); the module is imported only when needed.
COMMANDS: list[tuple[str, str, str]] = [
    ("crd", "sipfleet.api.cli", "generate or check the SipAccount CRD from the API models"),
    ("cluster", "sipfleet.localenv.cluster_cli", "build, start, stop and inspect the local Kubernetes cluster"),
    ("lab", "sipfleet.localenv.lab_cli", "start, stop and drive the local Kamailio/SIPp SIP lab"),
    ("images", "sipfleet.localenv.imagebuild.cli", "build the operator and agent images locally (BuildKit, no network)"),
    ("bench", "sipfleet.bench.cli", "benchmarks that print numbers"),
    ("demo", "sipfleet.demo", "the end-to-end demo on the local cluster and SIP lab"),
]


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sipfleet", description="Run fleets of SIP endpoints on Kubernetes: API, local environment, benchmarks, demo."
    )
    parser.add_argument("--version", action="version", version=f"sipfleet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module, help_text in COMMANDS:
        if selected is None or selected == name:
            importlib.import_module(module).register(sub.add_parser(name, help=help_text, description=help_text))
        else:
            sub.add_parser(name, help=help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in argv if not a.startswith("-")), None)
    if selected not in {name for name, _, _ in COMMANDS}:
        selected = None
    parser = build_parser(selected)
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 0 if not argv else 2
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
