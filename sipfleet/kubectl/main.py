"""``kubectl-sipfleet``: command line, wiring of the pure modules to the API client, output and exit codes.

Exit codes: 0 success (doctor: all is well); 1 an error, a refused confirmation or (doctor) a problem found;
2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from datetime import datetime, timezone

import yaml
from kubernetes.client.rest import ApiException

from . import agentlogs, annotate, doctor, fleet, rbac, timeline
from . import objects as o
from .fmt import parse_duration

OUTPUTS = ("wide", "json", "yaml")


def _common(p: argparse.ArgumentParser, suppress: bool) -> None:
    d = (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v)
    p.add_argument("-n", "--namespace", default=d(None), help="namespace (default: the context's)")
    p.add_argument("-A", "--all-namespaces", action="store_true", default=d(False), help="every namespace")
    p.add_argument("--kubeconfig", default=d(None), help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")
    p.add_argument("--context", default=d(None), help="kubeconfig context (default: the current one)")
    p.add_argument("-o", "--output", choices=OUTPUTS, default=d(None), help="wide, json or yaml")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="kubectl sipfleet", description="Fleet view and operations for sipfleet.")
    _common(top, suppress=False)
    sub = top.add_subparsers(dest="command", required=True)

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        _common(p, suppress=True)
        return p

    p = add("status", "fleet summary: accounts by condition, drift, repairs, agents")
    p.add_argument("-l", "--selector", help="label selector for SipAccounts")
    p.add_argument("--since", default="1h", help="repair window (e.g. 15m, 1h, 2d; default 1h)")
    p = add("describe", "one account's route story as a timeline")
    p.add_argument("name")
    for action, help_ in (("repair", "ask the agent to re-create accounts (sipfleet.io/repair)"),
                          ("reregister", "ask the agent to re-register accounts (sipfleet.io/reregister)"),
                          ("pause", "pause reconciliation of accounts (sipfleet.io/paused)"),
                          ("resume", "resume reconciliation of accounts")):
        p = add(action, help_)
        p.add_argument("names", nargs="*", metavar="NAME")
        p.add_argument("-l", "--selector", help="label selector for SipAccounts")
        p.add_argument("--all", action="store_true", help="every account in the namespace (-A: everywhere)")
        p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p = add("logs", "the hosting agent's log lines for one account")
    p.add_argument("name")
    p.add_argument("--tail", type=int, default=None, help="read only the last N lines of the pod log")
    p.add_argument("--since", default=None, help="only lines newer than this (e.g. 10m)")
    p.add_argument("-p", "--previous", action="store_true", help="the previous container run")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines (the newest pod)")
    p = add("doctor", "check CRD, operator, RBAC, agents and accounts; non-zero exit when something is wrong")
    p.add_argument("--operator-namespace", help="look for the operator only here (default: every namespace)")
    return top


def _colour(args) -> bool:
    return args.output not in ("json", "yaml") and sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def _emit(args, data, render) -> None:
    if args.output == "json":
        print(json.dumps(data, indent=2, sort_keys=False, default=str))
    elif args.output == "yaml":
        print(yaml.safe_dump(data, sort_keys=False, default_flow_style=False).rstrip())
    else:
        print(render(data, colour=_colour(args), wide=args.output == "wide"))


def _scope(args, c) -> str | None:
    return None if args.all_namespaces else (args.namespace or c.context_namespace)


def cmd_status(args, c, now) -> int:
    ns = _scope(args, c)
    window = parse_duration(args.since)
    accounts = c.accounts(ns, args.selector)
    events = c.events(ns)
    deps, pods = c.agent_deployments(ns), c.agent_pods(ns)
    if args.selector:  # only the agents hosting the selected accounts
        names = {o.ref(a) for a in accounts}
        deps = [d for d in deps if any((o.namespace(d), n) in names for n in o.owned_accounts(d))]
        agents = {o.name(d) for d in deps}
        pods = [p for p in pods if o.agent_of_pod(p) in agents]
        events = [e for e in events if ((e.get("involvedObject") or {}).get("namespace") or o.namespace(e),
                                        (e.get("involvedObject") or {}).get("name")) in names]
    memory, note = c.memory(pods)
    s = fleet.summarize(accounts, events, deps, pods, memory, note, now, window,
                        "all namespaces" if ns is None else f"namespace {ns}")
    _emit(args, s, fleet.render)
    return 0


def cmd_describe(args, c, now) -> int:
    ns = args.namespace or c.context_namespace
    acc = c.account(ns, args.name)
    s = timeline.story(acc, c.events(ns, args.name))
    _emit(args, s, timeline.render)
    return 0


class UsageError(Exception):
    """Bad command line found after parsing: exit code 2."""


def _select(args, c) -> list[dict]:
    ns = _scope(args, c)
    if sum(bool(x) for x in (args.names, args.selector, args.all)) != 1:
        raise UsageError("give NAME..., -l SELECTOR or --all (one of them)")
    if args.names:
        if ns is None:
            raise UsageError("names need a namespace (-n), not -A")
        return [c.account(ns, n) for n in args.names]
    return c.accounts(ns, args.selector)


def cmd_annotate(args, c, now) -> int:
    accounts = _select(args, c)
    if not accounts:
        print("no SipAccounts matched", file=sys.stderr)
        return 1
    if args.all and not args.yes:
        where = "every namespace" if args.all_namespaces else f"namespace {_scope(args, c)}"
        if not sys.stdin.isatty():
            print(f"error: --all would {args.command} {len(accounts)} accounts in {where}: confirm with --yes "
                  "(stdin is not a terminal)", file=sys.stderr)
            return 1
        answer = input(f"{args.command} {len(accounts)} accounts in {where}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing changed", file=sys.stderr)
            return 1
    done = []
    for acc in accounts:
        ns, name = o.ref(acc)
        if annotate.already(args.command, acc):
            done.append({"namespace": ns, "name": name, "action": args.command, "changed": False})
            continue
        value = annotate.token(now, secrets.token_hex(3)) if args.command in ("repair", "reregister") else None
        c.annotate(ns, name, annotate.patch(args.command, value))
        done.append({"namespace": ns, "name": name, "action": args.command, "changed": True, "value": value})

    def render(rows, colour=False, wide=False):
        return "\n".join(f"sipaccount/{r['name']}" + (f" -n {r['namespace']}" if args.all_namespaces else "")
                         + (" " + annotate.describe(r["action"], r.get("value")) if r["changed"]
                            else f" unchanged (already {'paused' if r['action'] == 'pause' else 'running'})")
                         for r in rows)
    _emit(args, done, render)
    return 0


def _hosting_pods(c, acc: dict) -> list[dict]:
    ns, name = o.ref(acc)
    agent = (o.status(acc).get("agent") or {}).get("name")
    pods = c.agent_pods(ns, agent) if agent else []
    if not pods:  # not reported yet: the agent Deployment owned by the account
        for d in c.agent_deployments(ns):
            if name in o.owned_accounts(d):
                pods += c.agent_pods(ns, o.name(d))
    return sorted(pods, key=lambda p: (p["metadata"].get("creationTimestamp") or "", o.name(p)))


def cmd_logs(args, c, now) -> int:
    ns = args.namespace or c.context_namespace
    acc = c.account(ns, args.name)
    pods = _hosting_pods(c, acc)
    if not pods:
        print(f"error: no agent pod hosts {ns}/{args.name} (not placed yet?)", file=sys.stderr)
        return 1
    since = int(parse_duration(args.since)) if args.since else None
    if args.follow:
        pod = o.name(pods[-1])
        for raw in c.follow_log(ns, pod, tail=args.tail, since_seconds=since):
            for raw_line, doc in agentlogs.filter_lines(raw, ns, args.name):
                if args.output in ("json", "yaml"):  # one JSON object per line, as the agent wrote them
                    print(json.dumps(doc if doc is not None else {"line": raw_line}), flush=True)
                else:
                    print(agentlogs.human(raw_line, doc), flush=True)
        return 0
    lines = []
    for p in pods:
        text = c.pod_log(ns, o.name(p), tail=args.tail, since_seconds=since, previous=args.previous)
        lines += [(o.name(p), raw, doc) for raw, doc in agentlogs.filter_lines(text, ns, args.name)]
    if args.output in ("json", "yaml"):
        _emit(args, [doc if doc is not None else {"line": raw} for _, raw, doc in lines], None)
    else:
        many = len(pods) > 1
        for pod, raw, doc in lines:
            print(agentlogs.human(raw, doc, pod if many else None))
    return 0


def _gather_doctor(args, c) -> doctor.Facts:
    ns = _scope(args, c)
    kw: dict = {}
    try:
        kw["crd"] = c.crd()
    except ApiException as e:
        kw.update(crd=None, crd_error=f"{e.status} {e.reason}")
    accounts = c.accounts(ns) if kw["crd"] is not None else []
    namespaces = sorted({o.namespace(a) for a in accounts} | ({ns} if ns else set()))
    try:
        ops = c.operators(args.operator_namespace)
    except ApiException as e:
        ops, kw["operator_error"] = [], f"{e.status} {e.reason} listing Deployments"
    kw["operators"] = ops
    kw["operator_pods"] = [p for d in ops for p in c.pods_matching(
        o.namespace(d), ((d.get("spec") or {}).get("selector") or {}).get("matchLabels") or {})]
    if ops:
        d = ops[0]
        sa = (((d.get("spec") or {}).get("template") or {}).get("spec") or {}).get("serviceAccountName") or "default"
        user = f"system:serviceaccount:{o.namespace(d)}:{sa}"
        kw["rbac_subject"] = user
        groups = ["system:serviceaccounts", f"system:serviceaccounts:{o.namespace(d)}", "system:authenticated"]
        watched = doctor.watched_namespaces(d)
        rows = rbac.checks([n for n in namespaces if doctor.watches(d, n)], cluster_wide=watched is None)
        try:
            for r in rows:
                r["allowed"] = c.can(user, groups, r["namespace"], r["group"], r["resource"], r["verb"])
            kw["rbac"] = rows
        except ApiException as e:
            kw["rbac_error"] = f"{e.status} {e.reason} creating SubjectAccessReviews"
    kw["deployments"], kw["pods"] = c.agent_deployments(ns), c.agent_pods(ns)
    return doctor.Facts(accounts=accounts, namespaces=namespaces, **kw)


def cmd_doctor(args, c, now) -> int:
    checks = doctor.verdicts(_gather_doctor(args, c))
    _emit(args, {"checks": checks, "ok": doctor.exit_code(checks) == 0},
          lambda d, colour=False, wide=False: doctor.render(d["checks"], colour))
    return doctor.exit_code(checks)


COMMANDS = {"status": cmd_status, "describe": cmd_describe, "logs": cmd_logs, "doctor": cmd_doctor,
            **{a: cmd_annotate for a in annotate.ACTIONS}}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if getattr(args, "since", None):
            parse_duration(args.since)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from .client import Client

    try:
        c = Client(args.kubeconfig, args.context)
    except Exception as e:  # noqa: BLE001 - a missing/broken kubeconfig is the user's to fix: say it in one line
        print(f"error: cannot load the kubeconfig: {e}", file=sys.stderr)
        return 1
    try:
        return COMMANDS[args.command](args, c, datetime.now(timezone.utc))
    except ApiException as e:
        msg = e.reason
        try:
            msg = json.loads(e.body).get("message") or msg
        except (TypeError, ValueError):
            pass
        print(f"error: {e.status}: {msg}", file=sys.stderr)
        return 1
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    finally:
        c.close()


if __name__ == "__main__":
    sys.exit(main())
