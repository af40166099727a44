"""The scripted registrar S as a process: ``python -m sipfleet.localenv.siplab.scripted_server --config FILE``.

Runs inside S's netns (started by :mod:`.scripted`), one asyncio loop, no threads. It listens on UDP and TCP
(``port``) and TLS (``tls_port``, when a certificate is configured; a client certificate is verified against
the lab CA when one is presented), answers each REGISTER as its script says (:mod:`.answers`, rendered by
:mod:`.respond`), OPTIONS with the script's ``options`` answer, ACK with nothing, anything else with 405.

- Every request it receives is written to stderr (the node log ``logs/S.log``) as one SIPLAB-WIRE line, in the
  format Kamailio's nodes use, with ``answer`` saying what S did (Authorization values are never logged).
  CRLF keepalives on TCP/TLS get a CRLF pong and a ``KEEPALIVE`` record.
- A retransmission (same Call-ID, CSeq, method and top Via branch) gets the same response again (nothing if
  that was silence or it is still delayed) and uses no step; it is logged with ``answer="retransmit:<what>"``.
- Digest: S challenges with a nonce of its own and checks credentials against the lab's ``users.json``
  (HA1 = md5(user:realm:password), realm = the lab domain), like R.
- Control: a unix socket, one JSON request per line: ``ping``, ``reload`` (re-read the script file; positions
  start over), ``state`` (positions, counters), ``reset``, ``wire`` (``enabled``: on/off).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import json
import os
import secrets
import signal
import ssl
import time
from pathlib import Path
from typing import Any, Callable

from .answers import REASONS, Answer, Script, Sequencer, decide
from .respond import Context, render
from .sipmsg import SipMessage, SipParseError, cseq_number, digest_valid, frame, header_uri, parse, parse_digest
from .wire import format_wire_line

MAX_TX = 4096  # remembered transactions (retransmission detection)
MAX_NONCES = 65536  # challenges outstanding (a fleet's worth)


class Registrar:
    """The protocol logic: one instance per process, driven by the listeners."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.realm = cfg["realm"]
        self.wire = bool(cfg.get("wire", True))
        self.tx: collections.OrderedDict[tuple, dict[str, Any]] = collections.OrderedDict()
        self.nonces: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.load_script()

    # ---------------------------------------------------------------- script and state
    def load_script(self) -> None:
        try:
            data = json.loads(Path(self.cfg["script_file"]).read_text())
        except (OSError, ValueError):
            data = {}
        self.seq = Sequencer(Script.from_dict(data))
        self.counts: collections.Counter[str] = collections.Counter()
        self.answers: collections.Counter[str] = collections.Counter()

    def state(self) -> dict[str, Any]:
        return {"script": self.seq.script.to_dict(), "positions": self.seq.snapshot(),
                "requests": dict(self.counts), "answers": dict(self.answers), "wire": self.wire}

    # ---------------------------------------------------------------- requests
    def handle(self, data: bytes, transport: str, src: tuple[str, int], dst: tuple[str, int],
               send: Callable[[bytes], None], tls: dict[str, str]) -> None:
        at = time.time()
        if data.strip(b"\r\n") == b"":
            self.counts["KEEPALIVE"] += 1
            self._log({"method": "KEEPALIVE", "at": f"{at:.6f}", "src": f"{src[0]}:{src[1]}",
                       "dst": f"{dst[0]}:{dst[1]}", "transport": transport,
                       "answer": "pong" if transport != "udp" else "", **tls})
            if transport != "udp":
                send(b"\r\n")
            return
        try:
            req = parse(data)
        except SipParseError as e:
            self._note(f"unparsable message from {src[0]}:{src[1]} over {transport}: {e}")
            return
        if not req.is_request:
            return  # S sends no requests; a stray response is ignored
        probe = req.get("call-id").startswith("siplab-probe-")
        answer, out = self._answer(req, transport, src)
        if not probe:  # the record is written before the answer goes out
            self.counts[req.method] += 1
            self.answers[answer] += 1
            self._log(self._record(req, at, transport, src, dst, answer, tls))
        if isinstance(out, tuple):  # delayed
            asyncio.get_running_loop().call_later(out[0], self._later, out[1], send, out[2])
        elif out is not None:
            send(out)

    def _later(self, data: bytes, send: Callable[[bytes], None], key: tuple) -> None:
        entry = self.tx.get(key)
        if entry is not None:
            entry["sent"] = data
        try:
            send(data)
        except (OSError, RuntimeError):
            pass  # the connection went away meanwhile

    def _answer(self, req: SipMessage, transport: str, src: tuple[str, int]) -> tuple[str, Any]:
        """(what S did, the bytes to send now | (delay s, bytes, tx key) | None)."""
        key = (req.get("call-id"), cseq_number(req), req.method, _branch(req))
        if req.method == "ACK":
            return "", None
        old = self.tx.get(key)
        if old is not None:
            return f"retransmit:{old['what']}", old.get("sent")
        ctx = self._ctx(transport, src)
        if req.method == "REGISTER":
            what, code, step = self._register(req, ctx)
        elif req.method == "OPTIONS":
            step = self.seq.script.options
            what, code = ("silence" if step.code is None else str(step.code)), None
        else:
            step, what, code = Answer(405), "405", None
        self.tx[key] = {"what": what}
        while len(self.tx) > MAX_TX:
            self.tx.popitem(last=False)
        if what == "silence":
            return what, None
        if code in (401, 407):
            ctx = dataclasses.replace(ctx, nonce=self._nonce())
        data = render(req, step, ctx, code=code, reason=REASONS.get(code or 0, "") if code else "")
        if step.delay_ms:
            return what, (step.delay_ms / 1000.0, data, key)
        self.tx[key]["sent"] = data
        return what, data

    def _register(self, req: SipMessage, ctx: Context) -> tuple[str, int | None, Answer]:
        aor = header_uri(req.get("to"))
        _, step = self.seq.current(aor)
        creds = self._credentials(req, step)
        kind, used = decide(step, creds)
        if used:
            self.seq.consume(aor)
        if kind == "challenge":
            return str(step.auth), step.auth, step
        if kind == "forbidden":
            return "403", 403, step
        return ("silence" if step.code is None else str(step.code)), None, step

    def _credentials(self, req: SipMessage, step: Answer) -> str:
        if step.auth is None:
            return "none"
        hdr = req.get("authorization" if step.auth == 401 else "proxy-authorization")
        if not hdr:
            return "none"
        params = parse_digest(hdr)
        if params.get("nonce") not in self.nonces:
            return "wrong"
        try:
            users = json.loads(Path(self.cfg["users_file"]).read_text())
        except (OSError, ValueError):
            users = {}
        return "right" if digest_valid(params, users.get(params.get("username", "")), req.method, self.realm) else "wrong"

    def _nonce(self) -> str:
        nonce = secrets.token_hex(16)
        self.nonces[nonce] = None
        while len(self.nonces) > MAX_NONCES:
            self.nonces.popitem(last=False)
        return nonce

    def _ctx(self, transport: str, src: tuple[str, int]) -> Context:
        return Context(transport=transport, src_ip=src[0], src_port=src[1], to_tag=secrets.token_hex(6),
                       realm=self.realm, targets=self.cfg["targets"], tls_targets=self.cfg["tls_targets"],
                       edge=self.cfg["edge"])

    # ---------------------------------------------------------------- log
    def _record(self, req: SipMessage, at: float, transport: str, src: tuple[str, int], dst: tuple[str, int],
                answer: str, tls: dict[str, str]) -> dict[str, Any]:
        return {
            "node": "S", "at": f"{at:.6f}", "method": req.method, "ruri": req.ruri,
            "route": ", ".join(req.all("route")), "src": f"{src[0]}:{src[1]}", "dst": f"{dst[0]}:{dst[1]}",
            "transport": transport, "call_id": req.get("call-id"), "cseq": str(cseq_number(req)),
            "from_uri": header_uri(req.get("from")), "to_uri": header_uri(req.get("to")),
            "contact": ", ".join(req.all("contact")), "expires": req.get("expires"),
            "auth": req.has("authorization") or req.has("proxy-authorization"), "answer": answer, **tls,
        }

    def _log(self, fields: dict[str, Any]) -> None:
        if self.wire:
            os.write(2, (format_wire_line({"node": "S", **fields}) + "\n").encode())

    def _note(self, text: str) -> None:
        os.write(2, f"SIPLAB-S {time.strftime('%H:%M:%S')} {text}\n".encode())


def _branch(req: SipMessage) -> str:
    via = req.get("via")
    for p in via.split(",", 1)[0].split(";")[1:]:
        k, _, v = p.partition("=")
        if k.strip().lower() == "branch":
            return v.strip()
    return ""


# -------------------------------------------------------------------------------------------- listeners


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, reg: Registrar, local: tuple[str, int]) -> None:
        self.reg, self.local = reg, local

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:  # type: ignore[override]
        self.reg.handle(data, "udp", addr[:2], self.local, lambda b: self.transport.sendto(b, addr), {})


def _tls_info(writer: asyncio.StreamWriter) -> dict[str, str]:
    obj = writer.get_extra_info("ssl_object")
    if obj is None:
        return {}
    peer = obj.getpeercert() or {}
    cn = next((v for rdn in peer.get("subject", ()) for k, v in rdn if k == "commonName"), "")
    return {"tls_version": obj.version() or "", "tls_cipher": (obj.cipher() or ("",))[0], "tls_peer": cn}


def _stream_handler(reg: Registrar, transport: str):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")[:2]
        local = writer.get_extra_info("sockname")[:2]
        tls = _tls_info(writer) if transport == "tls" else {}
        buf = b""

        def send(data: bytes) -> None:
            if not writer.is_closing():
                writer.write(data)

        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                buf += chunk
                while True:
                    msg, buf = frame(buf)
                    if msg is None:
                        break
                    reg.handle(msg, transport, peer, local, send, tls)
        except (SipParseError, ConnectionError, ssl.SSLError, asyncio.IncompleteReadError) as e:
            reg._note(f"{transport} connection from {peer[0]}:{peer[1]} ended: {e}")
        finally:
            writer.close()

    return handle


def _ssl_context(cfg: dict[str, Any]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cfg["cert"], cfg["key"])
    if cfg.get("ca"):
        ctx.load_verify_locations(cfg["ca"])
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def _control(reg: Registrar):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    req = json.loads(line)
                    op = req.get("op")
                    if op == "ping":
                        out = {"ok": True, "pid": os.getpid()}
                    elif op == "reload":
                        reg.load_script()
                        out = {"ok": True, **reg.state()}
                    elif op == "reset":
                        reg.load_script()
                        reg.tx.clear()
                        out = {"ok": True}
                    elif op == "state":
                        out = {"ok": True, **reg.state()}
                    elif op == "wire":
                        reg.wire = bool(req.get("enabled", True))
                        out = {"ok": True, "wire": reg.wire}
                    else:
                        out = {"ok": False, "error": f"unknown op {op!r}"}
                except Exception as e:  # noqa: BLE001 - any bad request is answered, never fatal
                    out = {"ok": False, "error": f"{type(e).__name__}: {e}"}
                writer.write((json.dumps(out) + "\n").encode())
                await writer.drain()
        finally:
            writer.close()

    return handle


async def serve(cfg: dict[str, Any]) -> None:
    reg = Registrar(cfg)
    loop = asyncio.get_running_loop()
    ip, port = cfg["ip"], int(cfg["port"])
    udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(reg, (ip, port)), local_addr=(ip, port))
    servers = [await asyncio.start_server(_stream_handler(reg, "tcp"), ip, port)]
    if cfg.get("cert"):
        servers.append(await asyncio.start_server(_stream_handler(reg, "tls"), ip, int(cfg["tls_port"]),
                                                  ssl=_ssl_context(cfg)))
    Path(cfg["ctl"]).unlink(missing_ok=True)
    servers.append(await asyncio.start_unix_server(_control(reg), cfg["ctl"]))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reg._note(f"listening on {ip}:{port} udp/tcp" + (f", {ip}:{cfg['tls_port']} tls" if cfg.get("cert") else ""))
    await stop.wait()
    udp.close()
    for s in servers:
        s.close()
    Path(cfg["ctl"]).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--config", required=True)
    args = ap.parse_args(argv)
    asyncio.run(serve(json.loads(Path(args.config).read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
