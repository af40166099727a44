"""Placeholder until its issue lands: says so instead of pretending."""

import argparse
import sys


def register(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(func=_not_yet)


def _not_yet(args: argparse.Namespace) -> int:
    print(f"sipfleet {args.command}: not yet implemented", file=sys.stderr)
    return 2
