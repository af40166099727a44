"""`sipfleet lab ...`: start, stop and drive the local Kamailio/SIPp SIP lab (sipfleet.localenv.siplab)."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", default=os.environ.get("SIPFLEET_LAB_NAME", "default"), help="lab name (state dir)")
    parser.add_argument(
        "--subnet",
        default=None,
        help="loopback /24 prefix for P/R/E (.1/.2/.3); default: the lab's recorded subnet, else 127.0.10",
    )
    parser.add_argument("--state-dir", default=None, help="override $SIPFLEET_STATE/labs/<name>")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    sub = parser.add_subparsers(dest="lab_command", metavar="ACTION")

    p = sub.add_parser("up", help="start P, R and E (idempotent)")
    p.add_argument("--shm-mb", type=int, default=None, help="Kamailio shared memory per node (MB)")
    p.add_argument("--user", action="append", default=[], metavar="USER:PASSWORD", help="add a user (repeatable)")
    p.set_defaults(func=_up)

    sub.add_parser("down", help="stop every node by PID").set_defaults(func=_down)
    sub.add_parser("status", help="node addresses, PIDs and injections").set_defaults(func=_status)

    p = sub.add_parser("inject", help="failure injection on REGISTER: normal | 408 | 503 | blackhole | delay:<ms>")
    p.add_argument("node", help="P, R or E (or 'all')")
    p.add_argument("mode")
    p.set_defaults(func=_inject)

    p = sub.add_parser("stop-node", help="stop one node (by PID)")
    p.add_argument("node")
    p.add_argument("--kill", action="store_true", help="SIGKILL all of the node's processes (a crash)")
    p.set_defaults(func=_stop_node)

    p = sub.add_parser("start-node", help="start one node again on the same address")
    p.add_argument("node")
    p.set_defaults(func=_start_node)

    p = sub.add_parser("wire", help="print the requests the nodes received (one JSON object per line)")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new records")
    p.add_argument("--node", default=None)
    p.add_argument("--method", default=None)
    p.add_argument("--since", type=float, default=None, help="epoch seconds (or negative: seconds ago)")
    p.add_argument("--last", type=int, default=None, help="only the last N records")
    p.set_defaults(func=_wire)

    p = sub.add_parser("add-user", help="add or change digest credentials at R (takes effect at once)")
    p.add_argument("username")
    p.add_argument("password", nargs="?", default=None, help="omit to read it from stdin / a prompt")
    p.set_defaults(func=_add_user)

    p = sub.add_parser("contacts", help="contacts R holds for a user")
    p.add_argument("username")
    p.set_defaults(func=_contacts)

    parser.set_defaults(func=_help(parser))


def _help(parser: argparse.ArgumentParser):
    def run(args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    return run


def _lab(args: argparse.Namespace, **kw):
    from .siplab import SipLab, default_state_root

    subnet = args.subnet
    if subnet is None:
        state = args.state_dir or str(default_state_root() / "labs" / args.name)
        try:
            with open(os.path.join(state, "lab.json")) as f:
                subnet = json.load(f).get("subnet")
        except (OSError, ValueError):
            subnet = None
    return SipLab(name=args.name, subnet=subnet or "127.0.10", state_dir=args.state_dir, **kw)


def _print_status(args: argparse.Namespace, st: dict) -> None:
    if args.json:
        print(json.dumps(st, indent=2, sort_keys=True))
        return
    print(f"lab {st['name']}  subnet {st['subnet']}  domain {st['domain']}  {'UP' if st['up'] else 'DOWN'}")
    print(f"  state  {st['state_dir']}")
    print(f"  proxy  {st['proxy_uri']}   registrar {st['registrar_uri']}   edge {st['edge_uri']}")
    for name, n in st["nodes"].items():
        state = f"pid {n['pid']}" if n["running"] else "stopped"
        print(f"  {name}  {n['address']:<21} {state:<12} inject={n['inject']}")
    print(f"  users  {', '.join(st['users']) or '-'}")


def _up(args: argparse.Namespace) -> int:
    from .siplab import LabError

    lab = _lab(args, shm_mb=args.shm_mb)
    try:
        lab.up()
        for spec in args.user:
            user, _, password = spec.partition(":")
            lab.add_user(user, password)
    except LabError as e:
        print(f"sipfleet lab up: {e}", file=sys.stderr)
        return 1
    _print_status(args, lab.status())
    return 0


def _down(args: argparse.Namespace) -> int:
    lab = _lab(args)
    lab.down()
    if not args.json:
        print(f"lab {lab.name} stopped")
    return 0


def _status(args: argparse.Namespace) -> int:
    st = _lab(args).status()
    _print_status(args, st)
    return 0 if st["up"] else 3


def _inject(args: argparse.Namespace) -> int:
    from .siplab import NODES, LabError

    lab = _lab(args)
    nodes = NODES if args.node.lower() == "all" else (args.node,)
    try:
        for n in nodes:
            lab.inject(n, args.mode)
    except LabError as e:
        print(f"sipfleet lab inject: {e}", file=sys.stderr)
        return 1
    if not args.json:
        print(", ".join(f"{n.upper()}={lab.injection(n)}" for n in nodes))
    return 0


def _stop_node(args: argparse.Namespace) -> int:
    lab = _lab(args)
    lab.stop_node(args.node, hard=args.kill)
    print(f"{args.node.upper()} stopped")
    return 0


def _start_node(args: argparse.Namespace) -> int:
    from .siplab import LabError

    lab = _lab(args)
    try:
        n = lab.start_node(args.node)
    except LabError as e:
        print(f"sipfleet lab start-node: {e}", file=sys.stderr)
        return 1
    print(f"{n.name} {n.hostport} pid {n.pid}")
    return 0


def _fmt(rec) -> str:
    return json.dumps(rec.to_dict(), sort_keys=True)


def _wire(args: argparse.Namespace) -> int:
    lab = _lab(args)
    since = args.since
    if since is not None and since < 0:
        since = time.time() + since
    recs = lab.wire(since=since, node=args.node, method=args.method)
    if args.last is not None:
        recs = recs[-args.last :] if args.last > 0 else []
    try:
        for r in recs:
            print(_fmt(r), flush=True)
        if args.follow:
            for r in lab.follow_wire(node=args.node):
                if args.method and r.method.upper() != args.method.upper():
                    continue
                print(_fmt(r), flush=True)
    except (KeyboardInterrupt, BrokenPipeError):
        return 0
    return 0


def _add_user(args: argparse.Namespace) -> int:
    from .siplab import LabError

    password = args.password
    if password is None:
        password = getpass.getpass(f"password for {args.username}: ") if sys.stdin.isatty() else sys.stdin.readline()
        password = password.rstrip("\n")
    try:
        _lab(args).add_user(args.username, password)
    except LabError as e:
        print(f"sipfleet lab add-user: {e}", file=sys.stderr)
        return 1
    print(f"user {args.username} added")
    return 0


def _contacts(args: argparse.Namespace) -> int:
    from .siplab import LabError

    try:
        contacts = _lab(args).contacts(args.username)
    except LabError as e:
        print(f"sipfleet lab contacts: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(contacts))
    else:
        for c in contacts:
            print(c)
    return 0
