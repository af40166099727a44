"""The scripted registrar S from the lab's side: its process (started inside S's netns, stopped by PID), its
control socket, and :class:`ScriptedRegistrar`, the handle tests and benchmarks use (``lab.scripted``).

S is our own small SIP responder (:mod:`.scripted_server`) rather than SIPp or Kamailio: one process answers
UDP, TCP and TLS at once, a sequence of answers ("503 Retry-After 30, then 200") is plain data, the hostile
answers (16 Service-Route headers, an 8 KB header, a 4 KB 200, a broken Contact) are byte-exact, and every
request is logged in the lab's SIPLAB-WIRE format with what S answered. The script lives in
``scripted-script.json`` (kept across a restart of S; positions start over) and is pushed over the control
socket (``run/S.ctl``, a unix socket, so the host drives S inside its netns).

Two ways to put S behind P: a REGISTER whose Request-URI is S (``registrar: lab.scripted.uri()``) and whose
route is P is loose-routed by P to S; or ``lab.set_registrar("S")`` makes P and E send every REGISTER for the
lab domain to S instead of R (a running fleet meets S without a spec change; calls still go to R).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from .. import procs
from ..hostnet import nsenter_prefix, port_bound
from .answers import Answer, AnswerError, Script, make_script
from .kamailio import log_tail, probe_udp
from .model import SCRIPTED, LabError, WireRecord
from .state import LabState

if TYPE_CHECKING:
    from . import SipLab

SCRIPT_FILE = "scripted-script.json"
CONFIG_FILE = "S.json"
PIDS_FILE = "scripted-pid.json"
SERVER_MODULE = "sipfleet.localenv.siplab.scripted_server"


def control(ctl: Path, request: Mapping[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """One request on S's control socket; its answer (LabError when S does not answer or refuses)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(ctl))
            s.sendall((json.dumps(request) + "\n").encode())
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
    except OSError as e:
        raise LabError(f"scripted registrar S does not answer on {ctl}: {e}") from None
    try:
        out = json.loads(buf)
    except ValueError:
        raise LabError(f"scripted registrar S gave no answer to {request.get('op')}") from None
    if not out.get("ok"):
        raise LabError(f"scripted registrar S refused {request.get('op')}: {out.get('error')}")
    return out


class ScriptedProc:
    """S's process record (``scripted-pid.json``) and, when this process started it, its Popen. Callers hold
    the lab's lock."""

    def __init__(self, state: LabState) -> None:
        self.state = state
        self._popen: subprocess.Popen | None = None

    def record(self) -> procs.ProcRecord | None:
        entry = self.state.read_json(PIDS_FILE, {})
        if not entry:
            return None
        if self._popen is not None:
            self._popen.poll()
        rec = procs.ProcRecord.from_json(entry)
        return rec if procs.is_alive(rec) else None

    def start(self, cfg: dict[str, Any], netns: str, probe_src: str, *, die_with_parent: bool,
              timeout: float) -> procs.ProcRecord:
        ip, port = cfg["ip"], int(cfg["port"])
        for kind, proto in ((socket.SOCK_DGRAM, "udp"), (socket.SOCK_STREAM, "tcp")):
            if port_bound(ip, port, kind, netns=netns):
                raise LabError(f"{ip}:{port}/{proto} is already in use in {netns} (an S not stopped by PID?)")
        self.state.write_json(CONFIG_FILE, cfg)
        log = self.state.log_path(SCRIPTED)
        rundir = self.state.run_dir / SCRIPTED
        rundir.mkdir(parents=True, exist_ok=True)
        cmd = nsenter_prefix(netns) + [sys.executable, "-m", SERVER_MODULE, "--config", str(self.state.path(CONFIG_FILE))]
        pdeath = die_with_parent and threading.current_thread() is threading.main_thread()
        rec, proc = procs.start("scripted-S", cmd, log, cwd=rundir, die_with_parent=pdeath)
        self._popen = proc
        self.state.write_json(PIDS_FILE, rec.to_json())
        try:
            self._wait_ready(proc, cfg, probe_src, log, timeout)
        except BaseException:
            self.stop()
            raise
        return rec

    def _wait_ready(self, proc: subprocess.Popen, cfg: dict[str, Any], probe_src: str, log: Path,
                    timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise LabError(f"scripted registrar S exited with {proc.returncode} while starting; log tail:\n"
                               f"{log_tail(log, 25)}")
            try:
                control(Path(cfg["ctl"]), {"op": "ping"}, timeout=1.0)
                if probe_udp(cfg["ip"], int(cfg["port"]), probe_src):
                    with socket.create_connection((cfg["ip"], int(cfg["port"])), timeout=1.0,
                                                  source_address=(probe_src, 0)):
                        return
            except (OSError, LabError) as e:
                last = str(e)
            time.sleep(0.05)
        raise LabError(f"scripted registrar S not ready after {timeout:.0f}s ({last}); log tail:\n{log_tail(log, 25)}")

    def stop(self, hard: bool = False) -> None:
        rec = self.record()
        if rec is not None:
            if hard:
                procs.kill_group(rec)
            else:
                procs.stop([rec], grace=5.0)
        self.state.remove(PIDS_FILE)
        if self._popen is not None:
            try:
                self._popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            self._popen = None
        self.state.ctl_socket(SCRIPTED).unlink(missing_ok=True)


def server_config(lab: "SipLab", tls_files: tuple[str, str, str] | None) -> dict[str, Any]:
    """What S's process needs to know (its addresses, the lab's hosts, the files it reads)."""
    hosts = ("P", "R", "E", "S")
    cfg: dict[str, Any] = {
        "ip": lab.ip("S"), "port": lab.port, "tls_port": lab.tls_port, "realm": lab.domain,
        "ctl": str(lab.state.ctl_socket(SCRIPTED)), "script_file": str(lab.state.path(SCRIPT_FILE)),
        "users_file": str(lab.state.path("users.json")), "wire": lab.wire_log,
        "targets": {h: f"{lab.ip(h)}:{lab.port}" for h in hosts},
        "tls_targets": {h: f"{lab.ip(h)}:{lab.tls_port}" for h in hosts}, "edge": f"{lab.ip('E')}:{lab.port}",
    }
    if tls_files:
        cfg["cert"], cfg["key"], cfg["ca"] = tls_files
    return cfg


class ScriptedRegistrar:
    """``lab.scripted``: script S's answers and read what it received.

    Example::

        lab.scripted.script("503 retry-after=30", "200 expires=60")     # one 503, then 200 forever
        lab.scripted.script("200 auth=401", scope="aor")                 # challenge, then 200, per account
        recs = lab.scripted.requests(since=t0)                           # S's wire records
        lab.scripted.state()["answers"]                                  # {"503": 1, "200": 4}
    """

    def __init__(self, lab: "SipLab") -> None:
        self.lab = lab

    @property
    def ip(self) -> str:
        return self.lab.ip(SCRIPTED)

    def uri(self, transport: str = "udp") -> str:
        """S as a registrar (a Request-URI / ``registrar:``): ``sip:<S>:5060[;transport=tcp|tls]``."""
        return self.lab.registrar_uri(transport, node=SCRIPTED)

    def route_uri(self, transport: str = "udp") -> str:
        """S as a loose-routing first hop (``;lr``)."""
        return self.lab.lr_uri(SCRIPTED, transport)

    def script(self, *answers: Answer | str | int | Mapping[str, Any], scope: str = "global",
               options: Answer | str | int = 200) -> Script:
        """Replace S's script (positions and counters start over). Each answer: its text form
        (see :mod:`.answers`), a bare code, a dict or an :class:`~.answers.Answer`."""
        try:
            sc = make_script(answers or (200,), scope=scope, options=options)
        except AnswerError as e:
            raise LabError(str(e)) from None
        self.lab.state.write_json(SCRIPT_FILE, sc.to_dict())
        if self.running():
            control(self._ctl(), {"op": "reload"})
        return sc

    def current(self) -> Script:
        """The script in force (the default: 200 to everything)."""
        return Script.from_dict(self.lab.state.read_json(SCRIPT_FILE, {}))

    def reset(self) -> None:
        """Back to the default script (200 to every REGISTER), positions and counters cleared."""
        self.lab.state.remove(SCRIPT_FILE)
        if self.running():
            control(self._ctl(), {"op": "reset"})

    def state(self) -> dict[str, Any]:
        """Script, positions (per scope key), counters of requests and answers since the last (re)load."""
        return control(self._ctl(), {"op": "state"})

    def requests(self, since: float | None = None, method: str | None = "REGISTER",
                 call_id: str | None = None) -> list[WireRecord]:
        """What S received (its wire records), oldest first."""
        return self.lab.wire(since=since, node=SCRIPTED, method=method, call_id=call_id)

    def running(self) -> bool:
        return self.lab.node(SCRIPTED).running

    def set_wire_log(self, enabled: bool) -> None:
        if self.running():
            control(self._ctl(), {"op": "wire", "enabled": bool(enabled)})

    def _ctl(self) -> Path:
        return self.lab.state.ctl_socket(SCRIPTED)

