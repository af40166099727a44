"""`sipfleet lab script | registrar | tls | tls-check`: the scripted registrar S, the registrar switch and TLS
(the rest of `sipfleet lab` is in lab_cli)."""

from __future__ import annotations

import argparse
import json
import sys

SCRIPT_HELP = """\
Each ANSWER is one step: CODE|silence [key=value ...]; S answers REGISTERs with the steps in order, the last
one for every REGISTER after it. Examples:
  sipfleet lab script "503 retry-after=30" "200 expires=60"
  sipfleet lab script "200 auth=401"                 challenge, then 200 for credentials that verify
  sipfleet lab script "403 auth=401"                 "wrong password": even right credentials get 403
  sipfleet lab script "423 min-expires=600" 200      sipfleet lab script "302 contact=R"   (contact=self: a loop)
  sipfleet lab script silence                        sipfleet lab script "200 delay=5000"
  sipfleet lab script "200 sr=10"  "200 sr=16 sr-style=one"  "200 big-header=8192"  "200 pad=4100"
  sipfleet lab script "200 bad-contact"  "200 expires=1"  "600"
  sipfleet lab script "200 big-header=4100 big-header-at=start"   Contact, Expires beyond a 4000-byte UDP cut
Keys: expires contact bad-contact sr sr-uri sr-style retry-after min-expires auth bad-digest delay big-header
big-header-at pad header reason count (see sipfleet/localenv/siplab/answers.py and docs/lab.md). No ANSWER: show the script.
"""



def open_lab(args: argparse.Namespace, **kw):
    from .siplab import SipLab

    return SipLab(name=args.name, state_dir=args.state_dir, **kw)


def fail(what: str, err: Exception) -> int:
    print(f"sipfleet lab {what}: {err}", file=sys.stderr)
    return 1


def register(sub) -> None:
    """Add this module's subcommands to `sipfleet lab`'s subparsers."""
    p = sub.add_parser("script", help="script the answers of the scripted registrar S (see `script --help`)",
                       description=SCRIPT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("answers", nargs="*", metavar="ANSWER", help='one answer per word, e.g. "503 retry-after=30" 200')
    p.add_argument("--scope", choices=("global", "aor"), default="global", help="one sequence for all, or per AoR")
    p.add_argument("--options", default="200", metavar="ANSWER", help="what OPTIONS get (default 200)")
    p.add_argument("--reset", action="store_true", help="back to the default (200 to every REGISTER)")
    p.set_defaults(func=_script)

    p = sub.add_parser("registrar", help="where P and E send REGISTERs meant for R: R (default) or S")
    p.add_argument("node", nargs="?", choices=("R", "S", "r", "s"), help="omit to show the current one")
    p.set_defaults(func=_registrar)

    p = sub.add_parser("tls", help="the lab's TLS files, names and URIs (--ca / --wrong-ca: print a PEM)")
    p.add_argument("--ca", action="store_true", help="print the lab CA certificate")
    p.add_argument("--wrong-ca", action="store_true", help="print the CA that signed nothing of the lab")
    p.set_defaults(func=_tls)

    p = sub.add_parser("tls-check", help="register a pjsua2 account over TLS through P and report what TLS gave")
    p.add_argument("--cert", choices=("good", "wrong-name", "wrong-ca"), default="good", help="P's listener")
    p.add_argument("--trust", choices=("lab", "wrong"), default="lab", help="which CA the client trusts")
    p.add_argument("--no-verify", action="store_true", help="do not verify the server")
    p.set_defaults(func=_tls_check)


def _script(args: argparse.Namespace) -> int:
    from .siplab import LabError

    lab = open_lab(args)
    try:
        if args.reset:
            lab.scripted.reset()
        elif args.answers:
            lab.scripted.script(*args.answers, scope=args.scope, options=args.options)
        sc = lab.scripted.current()
        st = lab.scripted.state() if lab.scripted.running() else {}
    except LabError as e:
        return fail("script", e)
    if args.json:
        print(json.dumps({"script": sc.to_dict(), "state": st}, indent=2, sort_keys=True))
    else:
        print(f"S {lab.scripted.uri()}  scope {sc.scope}  OPTIONS -> {sc.options.to_text()}")
        for i, a in enumerate(sc.steps):
            print(f"  {i + 1}. {a.to_text()}")
        if st:
            print(f"  positions {json.dumps(st.get('positions'))}  answers {json.dumps(st.get('answers'))}")
    return 0


def _registrar(args: argparse.Namespace) -> int:
    from .siplab import LabError

    lab = open_lab(args)
    try:
        if args.node:
            lab.set_registrar(args.node)
    except LabError as e:
        return fail("registrar", e)
    print(f"P and E send REGISTERs meant for R to {lab.registrar()} ({lab.registrar_uri(node=lab.registrar())})")
    return 0


def _tls(args: argparse.Namespace) -> int:
    from .siplab import LabError

    lab = open_lab(args)
    try:
        if args.ca or args.wrong_ca:
            print(lab.ca_pem() if args.ca else lab.wrong_ca_pem(), end="")
            return 0
        st = lab.status().get("tls")
    except LabError as e:
        return fail("tls", e)
    if st is None:
        return fail("tls", LabError("the lab has never been up"))
    print(json.dumps(st, indent=2, sort_keys=True))
    return 0


def _tls_check(args: argparse.Namespace) -> int:
    from .siplab import LabError
    from .siplab.pjsua_tls_check import run_check

    try:
        res = run_check(open_lab(args), cert=args.cert, trust=args.trust, verify=not args.no_verify)
    except (LabError, RuntimeError) as e:
        return fail("tls-check", e)
    if args.json:
        print(json.dumps(res, indent=2, sort_keys=True))
        return 0
    print(f"pjsua {res['pjsua_version']}: registered={res['registered']} reg={[r['code'] for r in res['reg']]}")
    for st in res["transport_states"]:
        if "cipher_name" in st:
            print(f"  client: cipher {st['cipher_name']} verify={st['verify_msgs']} "
                  f"protocols enabled {st['protocols_enabled']}")
    for w in res["wire"][:1]:
        print(f"  server (P): {w['tls_version']} {w['tls_cipher']}")
    return 0
