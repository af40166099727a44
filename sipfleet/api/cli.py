"""`sipfleet crd generate | check | docs`."""

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
    chk = sub.add_parser("check", help="fail when the committed CRD or its reference differs from the models")
    chk.set_defaults(func=_check)
    docs = sub.add_parser("docs", help="write docs/crd-reference.md from the models (--check: fail when stale)")
    docs.add_argument("--check", action="store_true", help="only check that the committed reference is current")
    docs.set_defaults(func=_docs)
    for p in (gen, chk, docs):
        p.add_argument("--root", type=Path, default=REPO_ROOT, help="repository root")


def _generate(args: argparse.Namespace) -> int:
    for path in crd.write(args.root):
        print(f"wrote {path}")
    from . import docs  # the CRD reference is generated from the same models

    print(f"wrote {docs.write(args.root)}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from . import docs

    problem = crd.check(args.root) or docs.check(args.root)
    if problem:
        print(problem, file=sys.stderr)
        return 1
    print("CRD and CRD reference match the models")
    return 0


def _docs(args: argparse.Namespace) -> int:
    from . import docs

    if args.check:
        problem = docs.check(args.root)
        if problem:
            print(problem, file=sys.stderr)
            return 1
        print("CRD reference matches the models")
        return 0
    print(f"wrote {docs.write(args.root)}")
    return 0
