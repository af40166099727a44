"""Kamailio nodes: the config rendered per node (pure), the process started inside its lab host's netns and
stopped by PID, readiness (SIP over UDP and TCP from the host, and the ctl socket), and ``kamcmd``.

Each node is one ``kamailio -DD -E`` process started as ``nsenter --net=/run/netns/<host> -- kamailio ...``
(nsenter execs, so the PID is Kamailio's own), in a session of its own (its workers share its process group);
stderr is the node log, which carries the wire log. The ctl socket (a unix socket in the lab's state dir)
works across network namespaces, so ``kamcmd`` runs on the host.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Mapping

from .. import procs
from ..hostnet import nsenter_prefix, port_bound
from .model import LabError
from .state import LabState

CFG_TEMPLATE = Path(__file__).resolve().parent / "kamailio.cfg"


def find_exe(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for d in ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"):
        p = Path(d) / name
        if p.exists():
            return str(p)
    raise LabError(f"{name} not found (Debian packages: kamailio, sip-tester)")


def kamailio_mpath() -> str:
    for p in (
        "/usr/lib/x86_64-linux-gnu/kamailio/modules",
        "/usr/lib/aarch64-linux-gnu/kamailio/modules",
        "/usr/lib64/kamailio/modules",
        "/usr/lib/kamailio/modules",
        "/usr/local/lib64/kamailio/modules",
        "/usr/local/lib/kamailio/modules",
    ):
        if Path(p, "tm.so").exists():
            return p + "/"
    raise LabError("Kamailio modules directory not found")


def has_tls_module() -> bool:
    """Whether Kamailio's tls module is installed (Debian: kamailio-tls-modules)."""
    try:
        return Path(kamailio_mpath(), "tls.so").exists()
    except LabError:
        return False


def render_cfg(template: str, node: str, params: Mapping[str, str], *, registrar: bool, service_route_auto: bool,
               defines: tuple[str, ...] = ()) -> str:
    """The node's config: ``@@KEY@@`` tokens replaced from ``params``, role defines (and ``defines``, e.g.
    ``WITH_TLS``) prepended (pure)."""
    text = template
    for k, v in params.items():
        text = text.replace(f"@@{k}@@", v)
    if "@@" in text:
        raise LabError(f"unrendered token in config template: {text[text.index('@@'):][:40]!r}")
    first, rest = text.split("\n", 1)
    role = "ROLE_REGISTRAR" if registrar else "ROLE_PROXY"
    sr = "SR_AUTO" if service_route_auto else "SR_FIXED"
    extra = "".join(f"#!define {d}\n" for d in defines)
    return f"{first}\n#!define {role}\n#!define NODE_{node}\n#!define {sr}\n{extra}{rest}"


def users_init(users: Mapping[str, str]) -> str:
    """The htable lines that load ``username -> HA1`` into R at start-up."""
    return "\n".join(f'\t$sht(users=>{u}) = "{ha1}";' for u, ha1 in sorted(users.items()))


def check_addr_free(netns: str, ip: str, port: int) -> None:
    """Raise unless ``ip:port`` is free for UDP and TCP inside ``netns``."""
    for kind, proto in ((socket.SOCK_DGRAM, "udp"), (socket.SOCK_STREAM, "tcp")):
        if port_bound(ip, port, kind, netns=netns):
            raise LabError(f"{ip}:{port}/{proto} is already in use in {netns} (a node not stopped by PID?)")


def start(
    node: str, netns: str, cfg: Path, log: Path, rundir: Path, *, shm_mb: int, die_with_parent: bool
) -> tuple[procs.ProcRecord, subprocess.Popen]:
    """Start Kamailio for ``node`` inside ``netns``; its stderr/stdout go to ``log``."""
    kamailio = find_exe("kamailio")
    rundir.mkdir(parents=True, exist_ok=True)
    cmd = nsenter_prefix(netns) + [
        kamailio,
        "-f", str(cfg),
        "-DD", "-E",
        "-m", str(shm_mb),
        "-M", "8",
        "-P", str(rundir / "kamailio.pid"),
        "-Y", str(rundir),
        "-w", str(rundir),
    ]
    # the kernel signals when the creating *thread* exits: only ask for it on the main thread
    pdeath = die_with_parent and threading.current_thread() is threading.main_thread()
    return procs.start(node, cmd, log, cwd=rundir, die_with_parent=pdeath)


def wait_ready(
    node: str, proc: subprocess.Popen, ip: str, port: int, probe_src: str, ctl: Path, log: Path, timeout: float,
    tls_port: int | None = None,
) -> None:
    """Return once the node answers an OPTIONS over UDP, accepts TCP (and TLS connections on ``tls_port``) and
    answers on its ctl socket."""
    deadline = time.monotonic() + timeout
    sip_ok = tcp_ok = ctl_ok = False
    last_err = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LabError(f"kamailio {node} exited with {proc.returncode} while starting; log tail:\n{log_tail(log, 25)}")
        try:
            if not sip_ok:
                sip_ok = probe_udp(ip, port, probe_src)
            if sip_ok and not tcp_ok:
                for p in (port, tls_port) if tls_port else (port,):
                    with socket.create_connection((ip, p), timeout=1.0, source_address=(probe_src, 0)):
                        pass
                tcp_ok = True
            if sip_ok and tcp_ok and not ctl_ok:
                kamcmd(ctl, node, "core.version", timeout=5.0)
                ctl_ok = True
        except (OSError, LabError, subprocess.TimeoutExpired) as e:
            last_err = str(e)
        if sip_ok and tcp_ok and ctl_ok:
            return
        time.sleep(0.05)
    raise LabError(f"kamailio {node} not ready after {timeout:.0f}s ({last_err}); log tail:\n{log_tail(log, 25)}")


def probe_udp(ip: str, port: int, src_ip: str, timeout: float = 0.5) -> bool:
    """Send an OPTIONS the node answers without logging it (Call-ID ``siplab-probe-*``); True on an answer."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((src_ip, 0))
        lport = s.getsockname()[1]
        cid = f"siplab-probe-{uuid.uuid4().hex}"
        msg = (
            f"OPTIONS sip:{ip}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {src_ip}:{lport};branch=z9hG4bK{uuid.uuid4().hex[:16]};rport\r\n"
            f"Max-Forwards: 5\r\n"
            f"From: <sip:probe@{src_ip}>;tag={uuid.uuid4().hex[:8]}\r\n"
            f"To: <sip:{ip}:{port}>\r\n"
            f"Call-ID: {cid}\r\n"
            f"CSeq: 1 OPTIONS\r\n"
            f"Content-Length: 0\r\n\r\n"
        )
        s.settimeout(timeout)
        s.sendto(msg.encode(), (ip, port))
        while True:
            data, _ = s.recvfrom(65535)
            if cid.encode() in data:
                return True
    except (socket.timeout, ConnectionRefusedError):
        return False
    finally:
        s.close()


def stop(rec: procs.ProcRecord, cfg: Path, *, hard: bool = False, grace: float = 15.0) -> None:
    """Stop a node by PID: SIGTERM to its process group (Kamailio shuts its workers down), SIGKILL after
    ``grace``; with ``hard`` SIGKILL to the whole group at once (a crash). Workers left in the group that run
    this node's config are killed too."""
    if hard:
        procs.kill_group(rec)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and procs.is_alive(rec):
            time.sleep(0.02)
    else:
        procs.stop([rec], grace=grace)
    for pid in group_members(rec.pid, str(cfg)):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def group_members(pgid: int, cfg: str) -> list[int]:
    """Live processes of process group ``pgid`` whose command line names ``cfg``."""
    out = []
    for pid in procs.all_pids():
        try:
            if os.getpgid(pid) != pgid:
                continue
        except ProcessLookupError:
            continue
        rec = procs.ProcRecord(name="", pid=pid, start_time=0)
        if procs.is_alive(rec) and cfg in procs.cmdline(pid):
            out.append(pid)
    return out


def log_tail(log: Path, lines: int) -> str:
    try:
        data = log.read_bytes()[-8192:].decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def kamcmd(ctl: Path, node: str, *args: str, timeout: float = 10.0) -> str:
    """One RPC on a node's ctl socket; stdout, or LabError."""
    res = subprocess.run(
        [find_exe("kamcmd"), "-s", f"unixs:{ctl}", *args], stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout
    )
    out = res.stdout.decode(errors="replace")
    err = res.stderr.decode(errors="replace")
    if res.returncode != 0 or out.startswith("error:") or err.strip().startswith("error"):
        raise LabError(f"kamcmd {args[0] if args else ''} on {node} failed ({res.returncode}): {(err or out).strip()}")
    return out


def kamcmd_raw(ctl: Path, *args: str, timeout: float = 10.0) -> tuple[int, str]:
    """One RPC; (exit code, stdout + stderr), for callers that interpret failures themselves."""
    res = subprocess.run(
        [find_exe("kamcmd"), "-s", f"unixs:{ctl}", *args], stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout
    )
    return res.returncode, res.stdout.decode(errors="replace") + res.stderr.decode(errors="replace")


def kamcmd_batch(ctl: Path, node: str, commands: list[list[str]], timeout: float = 60.0) -> str:
    """Several RPCs through kamcmd's stdin (so arguments such as HA1 hashes never show in a process list)."""
    script = "".join(" ".join(c) + "\n" for c in commands)
    res = subprocess.run(
        [find_exe("kamcmd"), "-s", f"unixs:{ctl}"], input=script.encode(), capture_output=True, timeout=timeout
    )
    out = res.stdout.decode(errors="replace")
    err = res.stderr.decode(errors="replace")
    bad = [line for line in (out + "\n" + err).splitlines() if "error" in line.lower()]
    ok = sum(1 for line in out.splitlines() if line.startswith("Ok."))
    if res.returncode != 0 or bad or ok < len(commands):
        why = (bad or [err.strip() or out[-300:]])[0]
        raise LabError(f"kamcmd batch on {node} failed ({res.returncode}, {ok}/{len(commands)} ok): {why}")
    return out


class NodeProcs:
    """The lab's running Kamailio processes: ``pids.json`` (ProcRecords, so any process can stop them by PID)
    and, for nodes this process started, the Popen handles that reap them. Callers hold the lab's lock."""

    PIDS_FILE = "pids.json"

    def __init__(self, state: LabState) -> None:
        self.state = state
        self._popen: dict[str, subprocess.Popen] = {}

    def _records(self) -> dict[str, dict]:
        return self.state.read_json(self.PIDS_FILE, {})

    def record(self, node: str) -> procs.ProcRecord | None:
        """The node's process record if that very process is alive."""
        entry = self._records().get(node)
        if not entry:
            return None
        proc = self._popen.get(node)
        if proc is not None:
            proc.poll()  # reap it if it died
        rec = procs.ProcRecord.from_json(entry)
        if not rec.start_time and str(entry.get("cfg")) not in procs.cmdline(rec.pid):
            return None  # a record without a start time (older format) only counts if the PID still runs our cfg
        return rec if procs.is_alive(rec) else None

    def start(self, node: str, cfg_text: str, netns: str, ip: str, port: int, probe_src: str, *, shm_mb: int,
              die_with_parent: bool, timeout: float, tls_port: int | None = None) -> procs.ProcRecord:
        check_addr_free(netns, ip, port)
        cfg = self.state.cfg_path(node)
        self.state.write_secret(cfg, cfg_text)  # R's config holds HA1 hashes
        ctl = self.state.ctl_socket(node)
        ctl.parent.mkdir(parents=True, exist_ok=True)
        ctl.unlink(missing_ok=True)
        log = self.state.log_path(node)
        rec, proc = start(node, netns, cfg, log, self.state.run_dir / node, shm_mb=shm_mb,
                          die_with_parent=die_with_parent)
        self._popen[node] = proc
        pids = self._records()
        pids[node] = {**rec.to_json(), "cfg": str(cfg), "netns": netns, "address": f"{ip}:{port}"}
        self.state.write_json(self.PIDS_FILE, pids)
        try:
            wait_ready(node, proc, ip, port, probe_src, ctl, log, timeout, tls_port=tls_port)
        except BaseException:
            self.stop(node)
            raise
        return rec

    def stop(self, node: str, hard: bool = False) -> None:
        pids = self._records()
        entry = pids.get(node)
        if entry:
            rec = procs.ProcRecord.from_json(entry)
            live = self.record(node)
            if live is not None:
                stop(live, Path(entry.get("cfg", "")), hard=hard)
            else:  # workers may outlive a main process that died on its own
                for pid in group_members(rec.pid, str(entry.get("cfg", ""))):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            pids.pop(node, None)
            self.state.write_json(self.PIDS_FILE, pids)
        proc = self._popen.pop(node, None)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self.state.ctl_socket(node).unlink(missing_ok=True)
