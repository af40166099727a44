"""A standalone pjsua2 TLS check: one pjsua2 process (the wheel the agent uses, pjproject 2.15.1 with its bundled
OpenSSL) with a TLS transport registers one account through a proxy over TLS, and prints one JSON document:
what the TLS layer reported (``onTransportState``: protocol, cipher, verification status and messages), the
registration's final status, and pjsua's own log lines about TLS/SSL, as one line ``PJSUA-TLS-CHECK <json>``.

    python -m sipfleet.localenv.siplab.pjsua_tls_check --bind 10.213.201.100 --ca ca.crt \\
        --proxy 'sip:10.213.201.1:5061;lr;transport=tls' --registrar sip:10.213.201.2:5060 \\
        --aor sip:alice@lab.sipfleet.test --user alice --password-file pw.txt [--no-verify]

It is a measuring tool for the lab (:func:`run_check` runs it against a lab), not part of the agent. The password comes
from a file and never appears in the output (pjsua's digest lines are not collected: only lines naming
TLS/SSL, and those are scrubbed of anything after ``Authorization``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import SipLab

RESULT_MARK = "PJSUA-TLS-CHECK "
_TLS_LINE = re.compile(r"tls|ssl|cipher|certif|handshake", re.I)


def run(args: argparse.Namespace) -> dict:
    import pjsua2 as pj

    result: dict = {"transport_states": [], "reg": [], "log": [], "pjsua_version": ""}

    class Log(pj.LogWriter):
        def write(self, entry) -> None:  # noqa: D401 - pjsua2 callback
            msg = entry.msg.rstrip()
            if _TLS_LINE.search(msg) and "authorization" not in msg.lower() and "--end msg--" not in msg:
                result["log"].append(msg[-400:])

    class Ep(pj.Endpoint):
        def onTransportState(self, prm) -> None:  # noqa: N802 - pjsua2 callback
            ti = prm.tlsInfo
            st = {"state": int(prm.state), "last_error": int(prm.lastError)}
            if not ti.isEmpty():
                st.update({"established": bool(ti.established), "protocol": int(ti.protocol),
                           "cipher": int(ti.cipher), "cipher_name": ti.cipherName,
                           "verify_status": int(ti.verifyStatus), "verify_msgs": list(ti.verifyMsgs),
                           "remote": ti.remoteAddr, "local": ti.localAddr})
            result["transport_states"].append(st)

    class Acc(pj.Account):
        def onRegState(self, prm) -> None:  # noqa: N802 - pjsua2 callback
            result["reg"].append({"code": int(prm.code), "reason": prm.reason, "at": time.time()})

    ep = Ep()
    ep.libCreate()
    result["pjsua_version"] = ep.libVersion().full
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.logConfig.level = 5
    cfg.logConfig.consoleLevel = 5
    cfg.logConfig.msgLogging = False  # no SIP messages (they carry digest credentials)
    writer = Log()
    writer.__disown__()
    cfg.logConfig.writer = writer
    ep.libInit(cfg)
    ep.audDevManager().setNullDev()
    tcfg = pj.TransportConfig()
    tcfg.port = 0
    tcfg.boundAddress = args.bind
    tcfg.tlsConfig.CaListFile = args.ca
    tcfg.tlsConfig.verifyServer = not args.no_verify
    tcfg.tlsConfig.method = pj.PJSIP_TLSV1_2_METHOD if args.tls12 else pj.PJSIP_SSLV23_METHOD
    ep.transportCreate(pj.PJSIP_TRANSPORT_TLS, tcfg)
    ep.libStart()
    acfg = pj.AccountConfig()
    acfg.idUri = args.aor
    acfg.regConfig.registrarUri = args.registrar
    acfg.regConfig.timeoutSec = 300
    acfg.regConfig.retryIntervalSec = 0  # one attempt: the check reports, it does not retry
    acfg.sipConfig.proxies.append(args.proxy)
    acfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", args.user, 0,
                                                    Path(args.password_file).read_text().strip()))
    acc = Acc()
    acc.create(acfg)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline and not any(r["code"] >= 200 for r in result["reg"]):
        ep.libHandleEvents(20)
    for _ in range(10):
        ep.libHandleEvents(10)
    result["registered"] = any(200 <= r["code"] < 300 for r in result["reg"])
    acc.shutdown()
    del acc
    ep.libDestroy()
    return result


# pjsua's PJ_SSL_SOCK_PROTO_* bits (TlsInfo.protocol is the set the socket was configured with)
PROTO_BITS = {1: "SSLv2", 2: "SSLv3", 4: "TLSv1", 8: "TLSv1.1", 16: "TLSv1.2", 32: "TLSv1.3"}


def proto_names(mask: int) -> list[str]:
    return [n for b, n in PROTO_BITS.items() if mask & b]


def run_check(lab: "SipLab", *, cert: str = "good", trust: str = "lab", verify: bool = True,
              timeout: float = 20.0) -> dict[str, Any]:
    """Run the check from a fresh client address of ``lab`` through P's TLS listener with certificate ``cert``
    (``good`` | ``wrong-name`` | ``wrong-ca``), trusting the lab CA (``trust="lab"``) or the wrong one; a
    throw-away user registers at R. Returns the check's result plus ``wire``: what P logged (TLS version and
    cipher as the server saw them)."""
    ca = lab.tls.ca_crt if trust == "lab" else lab.tls.wrong_ca_crt
    user, password = f"tlscheck{uuid.uuid4().hex[:8]}", secrets.token_urlsafe(12)
    lab.add_user(user, password)
    me = lab.client_address()
    pwfile = lab.state.dir / f".pw-{user}"
    try:
        lab.state.write_secret(pwfile, password)
        t0 = time.time()
        cmd = [sys.executable, "-m", __name__, "--bind", me, "--ca", str(ca), "--proxy", lab.proxy_uri("tls", cert),
               "--registrar", lab.registrar_uri(), "--aor", lab.aor(user), "--user", user,
               "--password-file", str(pwfile), "--timeout", str(timeout)] + ([] if verify else ["--no-verify"])
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 30, env=dict(os.environ))
        line = next((x for x in out.stdout.splitlines() if x.startswith(RESULT_MARK)), None)
        if line is None:
            raise RuntimeError(f"pjsua TLS check gave no result ({out.returncode}): {out.stderr[-1500:]}")
        res = json.loads(line[len(RESULT_MARK):])
        time.sleep(0.3)  # the last wire lines
        res["wire"] = [r.to_dict() for r in lab.wire(since=t0, node="P") if f":{user}@" in r.from_uri]
        for st in res["transport_states"]:
            if "protocol" in st:
                st["protocols_enabled"] = proto_names(st["protocol"])
        return res
    finally:
        pwfile.unlink(missing_ok=True)
        lab.release_client_address(me)
        lab.remove_user(user)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="register one pjsua2 account over TLS and report what TLS gave")
    ap.add_argument("--bind", required=True, help="local address (a lab client address)")
    ap.add_argument("--ca", required=True, help="CA file the server is verified against")
    ap.add_argument("--proxy", required=True)
    ap.add_argument("--registrar", required=True)
    ap.add_argument("--aor", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password-file", required=True)
    ap.add_argument("--no-verify", action="store_true", help="do not verify the server certificate")
    ap.add_argument("--tls12", action="store_true", help="TLS method 1.2 instead of pjsua's SSLv23 (any)")
    ap.add_argument("--timeout", type=float, default=20.0)
    args = ap.parse_args(argv)
    res = run(args)
    sys.stdout.write(RESULT_MARK + json.dumps(res) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
