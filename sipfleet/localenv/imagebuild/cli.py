"""`sipfleet images`: build the operator and agent images locally (`build`, `build --list`) and re-pin their
Python dependencies (`lock`)."""

from __future__ import annotations

import argparse
import sys
import time


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="images_command", metavar="SUBCOMMAND")
    b = sub.add_parser("build", help="build the operator and agent images into OCI archives (only what changed)",
                       description="Build sipfleet's images with BuildKit from images/Dockerfile.*, on a Debian "
                                   "base made with debootstrap and wheels downloaded with pip, without network "
                                   "inside the build. Prints name:tag, digest, size and whether it was rebuilt.")
    b.add_argument("components", nargs="*", metavar="COMPONENT", help="operator and/or agent (default: both)")
    b.add_argument("--list", action="store_true", help="show what is built; build nothing")
    b.add_argument("--force", action="store_true", help="rebuild even if the inputs did not change")
    b.set_defaults(func=_build)
    lk = sub.add_parser("lock", help="re-resolve images/<component>/constraints.txt from its pyproject.toml")
    lk.set_defaults(func=_lock)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def _build(args: argparse.Namespace) -> int:
    from . import build
    from .targets import COMPONENTS

    unknown = [c for c in args.components if c not in COMPONENTS]
    if unknown:
        print(f"sipfleet images build: unknown component(s) {unknown}; choose from {list(COMPONENTS)}",
              file=sys.stderr)
        return 2
    if args.list:
        built = build.list_built()
        if not built:
            print("no images built yet (sipfleet images build)")
        keys = build.current_keys()
        for b in built:
            state = "up to date" if keys.get(b.component) == b.key else "inputs changed since"
            print(f"{b.name}  {b.digest}  {b.size / 1e6:.1f} MB ({b.unpacked / 1e6:.0f} MB unpacked)  {state}  "
                  f"{b.archive}")
        return 0
    t0 = time.monotonic()
    try:
        results = build.build_images(args.components or None, force=args.force)
    except Exception as e:  # noqa: BLE001 - one clear line (and the build log's tail) for humans
        print(f"sipfleet images build: {e}", file=sys.stderr)
        return 1
    for b in results:
        print(b.line())
    print(f"done in {time.monotonic() - t0:.1f} s")
    return 0


def _lock(args: argparse.Namespace) -> int:
    from . import pins
    from .targets import targets

    for t in targets().values():
        print(pins.lock(t))
    return 0
