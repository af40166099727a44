"""`sipfleet crd generate | check`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import crd

REPO_ROOT = Path(__file__).resolve().parents[2]


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="crd_command", required=True)
    gen = sub.add_parser("generate", help="write crds/ (and the chart's copy) from the models")
    gen.set_defaults(func=_generate)
    chk = sub.add_parser("check", help="fail when the committed CRD differs from the models")
    chk.set_defaults(func=_check)
    for p in (gen, chk):
        p.add_argument("--root", type=Path, default=REPO_ROOT, help="repository root")


def _generate(args: argparse.Namespace) -> int:
    for path in crd.write(args.root):
        print(f"wrote {path}")
    return 0


def _check(args: argparse.Namespace) -> int:
    problem = crd.check(args.root)
    if problem:
        print(problem, file=sys.stderr)
        return 1
    print("CRD matches the models")
    return 0
