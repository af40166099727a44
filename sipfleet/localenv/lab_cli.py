"""`sipfleet lab ...`: start, stop and drive the local SIP lab (sipfleet.localenv.siplab): Kamailio P/R/E, the
scripted registrar S, SIPp, faults, TLS."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time

from . import lab_cli_scripted
from .lab_cli_scripted import fail as _fail, open_lab as _lab

INJECT_HELP = """\
Kamailio-level (P, R, E or all; how the node answers REGISTER):
  normal | 408 | 503 | blackhole | delay:<ms>
  (S answers as scripted: `sipfleet lab script ...`)
Network-level (P, R, E, S, sipp or all; nftables rules in that lab host's netns, real packets):
  partition            drop every packet in and out of the host
  block:<ip>           drop every packet between <ip> and the host
  loss:<percent>:<ip>  drop that share of the packets between <ip> and the host, at random
  link-down | link-up  the host's eth0 down / up
  heal                 remove all network faults from the host
Link faults in a netns the lab does not own (an agent pod's), entered only:
  sipfleet lab inject --pid <pid> link-down [--dev eth0]      (or --netns /proc/<pid>/ns/net | <name>)
"""


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", default=os.environ.get("SIPFLEET_LAB_NAME", "default"), help="lab name (state dir)")
    parser.add_argument("--state-dir", default=None, help="override $SIPFLEET_STATE/labs/<name>")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    sub = parser.add_subparsers(dest="lab_command", metavar="ACTION")

    p = sub.add_parser("up", help="build the lab's network and start P, R and E (idempotent)")
    p.add_argument("--slot", type=int, default=None, help="lab slot 1..49 (default: the first free one)")
    p.add_argument("--shm-mb", type=int, default=None, help="Kamailio shared memory per node (MB)")
    p.add_argument("--user", action="append", default=[], metavar="USER:PASSWORD", help="add a user (repeatable)")
    p.set_defaults(func=_up)

    sub.add_parser("down", help="stop every node by PID, remove the lab's network").set_defaults(func=_down)
    sub.add_parser("status", help="addresses, PIDs, injections and faults").set_defaults(func=_status)

    p = sub.add_parser("inject", help="failure injection (see `inject --help`)", description=INJECT_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("words", nargs="+", metavar="[TARGET] MODE", help="P, R, E, sipp or all, then the mode")
    p.add_argument("--netns", default=None, help="link-down/link-up inside this netns (a name or a path)")
    p.add_argument("--pid", type=int, default=None, help="link-down/link-up inside this process's netns")
    p.add_argument("--dev", default="eth0", help="interface for --netns/--pid (default eth0)")
    p.set_defaults(func=_inject)

    lab_cli_scripted.register(sub)

    p = sub.add_parser("stop-node", help="stop one node (P, R, E or S; by PID)")
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

    p = sub.add_parser("client-address", help="add a /32 on the lab bridge for a host process (or --release it)")
    p.add_argument("--release", default=None, metavar="IP")
    p.set_defaults(func=_client_address)

    p = sub.add_parser("join", help="join the lab's bridge and a cluster's cbr0 at L2")
    p.add_argument("cluster_netns", help="the cluster's netns, e.g. sipfleet-c-demo")
    p.add_argument("cluster_slot", type=int)
    p.set_defaults(func=_join)

    p = sub.add_parser("unjoin", help="remove the join to a cluster")
    p.add_argument("cluster_slot", type=int)
    p.set_defaults(func=_unjoin)

    parser.set_defaults(func=_help(parser))


def _help(parser: argparse.ArgumentParser):
    def run(args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    return run


def _print_status(args: argparse.Namespace, st: dict) -> None:
    if args.json:
        print(json.dumps(st, indent=2, sort_keys=True))
        return
    where = f"slot {st['slot']}  bridge {st['bridge']} ({st['subnet']}.254)" if st["slot"] else "no network"
    print(f"lab {st['name']}  {where}  domain {st['domain']}  {'UP' if st['up'] else 'DOWN'}")
    print(f"  state  {st['state_dir']}")
    if st["slot"]:
        print(f"  proxy  {st['proxy_uri']}   registrar {st['registrar_uri']}   edge {st['edge_uri']}")
    for name, n in st["nodes"].items():
        state = f"pid {n['pid']}" if n["running"] else "stopped"
        faults = f"  faults={json.dumps(n['faults'])}" if n["faults"] else ""
        print(f"  {name}  {n['address'] or '-':<21} {state:<12} inject={n['inject']}  netns {n['netns']}{faults}")
    sc = st.get("scripted")
    if sc:
        state = f"pid {sc['pid']}" if sc["running"] else "stopped"
        faults = f"  faults={json.dumps(sc['faults'])}" if sc["faults"] else ""
        print(f"  S  {sc['address']:<21} {state:<12} script={' | '.join(sc['script'])}  netns {sc['netns']}{faults}")
        print(f"  REGISTERs meant for R go to {st['registrar']}" + (f";  TLS {st['tls']['proxy_uri']}" if st.get("tls") else ""))
    print(f"  sipp   netns {st['sipp']['netns']}" + (f"  faults={json.dumps(st['sipp']['faults'])}" if st["sipp"]["faults"] else ""))
    print(f"  users  {', '.join(st['users']) or '-'}")
    if st["clients"]:
        print(f"  client addresses  {', '.join(st['clients'])}")


def _up(args: argparse.Namespace) -> int:
    from .siplab import LabError

    lab = _lab(args, shm_mb=args.shm_mb, slot=args.slot)
    try:
        lab.up()
        for spec in args.user:
            user, _, password = spec.partition(":")
            lab.add_user(user, password)
    except LabError as e:
        return _fail("up", e)
    _print_status(args, lab.status())
    return 0


def _down(args: argparse.Namespace) -> int:
    from .siplab import LabError

    lab = _lab(args)
    try:
        lab.down()
    except LabError as e:
        return _fail("down", e)
    if not args.json:
        print(f"lab {lab.name} stopped, its network removed")
    return 0


def _status(args: argparse.Namespace) -> int:
    st = _lab(args).status()
    _print_status(args, st)
    return 0 if st["up"] else 3


def _inject(args: argparse.Namespace) -> int:
    from .siplab import HOSTS, NODES, LabError, parse_net_fault

    lab = _lab(args)
    words = args.words
    try:
        if args.netns is not None or args.pid is not None:
            if len(words) != 1 or words[0] not in ("link-down", "link-up"):
                raise LabError("with --netns/--pid the mode is link-down or link-up (and no target)")
            (lab.link_down if words[0] == "link-down" else lab.link_up)(netns=args.netns, pid=args.pid, dev=args.dev)
            if not args.json:
                print(f"{args.dev} {words[0][5:]} in {args.netns or f'the netns of pid {args.pid}'}")
            return 0
        if len(words) != 2:
            raise LabError("usage: sipfleet lab inject TARGET MODE (see --help)")
        target, mode = words
        net = parse_net_fault(mode) is not None
        targets = (HOSTS if net else NODES) if target.lower() == "all" else (target,)
        for t in targets:
            lab.inject(t, mode)
    except LabError as e:
        return _fail("inject", e)
    if not args.json:
        if net:
            faults = lab.net_faults()
            print(", ".join(f"{t}={json.dumps(faults.get(t.upper() if t.lower() != 'sipp' else 'sipp'))}" for t in targets))
        else:
            print(", ".join(f"{n.upper()}={lab.injection(n)}" for n in targets))
    return 0


def _stop_node(args: argparse.Namespace) -> int:
    from .siplab import LabError

    try:
        _lab(args).stop_node(args.node, hard=args.kill)
    except LabError as e:
        return _fail("stop-node", e)
    print(f"{args.node.upper()} stopped")
    return 0


def _start_node(args: argparse.Namespace) -> int:
    from .siplab import LabError

    try:
        n = _lab(args).start_node(args.node)
    except LabError as e:
        return _fail("start-node", e)
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
        return _fail("add-user", e)
    print(f"user {args.username} added")
    return 0


def _contacts(args: argparse.Namespace) -> int:
    from .siplab import LabError

    try:
        contacts = _lab(args).contacts(args.username)
    except LabError as e:
        return _fail("contacts", e)
    if args.json:
        print(json.dumps(contacts))
    else:
        for c in contacts:
            print(c)
    return 0


def _client_address(args: argparse.Namespace) -> int:
    from .siplab import LabError

    lab = _lab(args)
    try:
        if args.release:
            lab.release_client_address(args.release)
            print(f"{args.release} released")
        else:
            print(lab.client_address())
    except LabError as e:
        return _fail("client-address", e)
    return 0


def _join(args: argparse.Namespace) -> int:
    from .siplab import LabError

    try:
        print(_lab(args).join(args.cluster_netns, args.cluster_slot))
    except LabError as e:
        return _fail("join", e)
    return 0


def _unjoin(args: argparse.Namespace) -> int:
    from .siplab import LabError

    try:
        gone = _lab(args).unjoin(args.cluster_slot)
    except LabError as e:
        return _fail("unjoin", e)
    print("removed" if gone else "no such join")
    return 0
