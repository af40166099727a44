"""The SIP lab: three real Kamailio nodes on loopback, with failure injection and a wire log, plus SIPp.

Topology (``subnet`` ``127.0.10`` by default, port 5060 UDP and TCP on each address)::

    P  <subnet>.1   loose-routing stateful proxy; forwards REGISTER to R and calls onward
    R  <subnet>.2   registrar: digest auth (realm = lab.domain), usrloc in memory, every 2xx to REGISTER
                    carries ``Service-Route: <sip:E;lr>``; routes INVITEs to registered contacts
    E  <subnet>.3   loose-routing stateful proxy (the "edge" a drifted REGISTER goes to)

Each node is its own ``kamailio`` process (started in the foreground with ``-DD -E``, its stderr is the node
log), with its own rendered config and a ctl unix socket for ``kamcmd``. Every request a node receives is
logged as one ``SIPLAB-WIRE`` line; :meth:`SipLab.wire` parses those lines into :class:`WireRecord`.
Authorization headers are never logged, only whether one was present.

Failure injection (``inject(node, mode)``, REGISTER only, switched at run time with ``kamcmd pv.shvSet``):
``normal``, ``408`` / ``503`` (answered by that node; a proxy passes R's 503 on as 503, not 500),
``blackhole`` (dropped silently; on P that makes P unreachable for REGISTER), ``delay:<ms>`` (held, then
handled; retransmissions are absorbed). A proxy answers 408 itself when R stays silent for
``proxy_fr_timer_ms`` (8 s). ``stop_node`` / ``start_node`` stop and restart one process on the same address.

Example::

    with SipLab("demo", subnet="127.0.10") as lab:           # up() ... down()
        lab.add_user("alice", "secret")
        t0 = time.time()
        res = lab.sipp("register", "P", users=[("alice", "secret")], route=f"<{lab.proxy_uri()}>")
        assert res.count(200) == 1
        rec = lab.wait_wire(lambda r: r.node == "R" and r.has_auth, timeout=30, since=t0)
        lab.inject("R", "503")                               # the next REGISTERs get 503
        lab.contacts("alice")                                # ["sip:alice@127.0.10.10:<port>;transport=UDP"]

State lives in ``$SIPFLEET_STATE/labs/<name>/`` (default ``~/.local/state/sipfleet``): ``lab.json``, the
rendered ``<node>.cfg``, ``pids.json``, ``inject.json``, ``users.json`` (HA1 hashes only, mode 0600),
``logs/<node>.log`` and ``sipp/<run>/``. Processes are started and stopped by PID; the state is enough for
another process (``sipfleet lab ...``) to drive or stop a lab started elsewhere.
"""

from __future__ import annotations

import bisect
import contextlib
import csv
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

__all__ = [
    "LabError",
    "LabNode",
    "SipLab",
    "SippResult",
    "SippRun",
    "run_sipp",
    "start_sipp",
    "WireRecord",
    "NODES",
    "INJECT_MODES",
    "default_state_root",
    "parse_inject_mode",
    "parse_wire_line",
    "split_route_header",
]

NODES: tuple[str, ...] = ("P", "R", "E")
_NODE_OCTET = {"P": 1, "R": 2, "E": 3}
INJECT_MODES = ("normal", "408", "503", "blackhole", "delay:<ms>")

_PKG_DIR = Path(__file__).resolve().parent
CFG_TEMPLATE = _PKG_DIR / "kamailio.cfg"
SIPP_DIR = _PKG_DIR.parent / "sipp"

_USERNAME_RE = re.compile(r"^[A-Za-z0-9._~+-]{1,64}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_SUBNET_RE = re.compile(r"^127\.(\d{1,3})\.(\d{1,3})$")
_WIRE_MARK = "SIPLAB-WIRE "
_WIRE_FIELD_RE = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


class LabError(RuntimeError):
    """The lab could not do what was asked (the message says why)."""


def default_state_root() -> Path:
    env = os.environ.get("SIPFLEET_STATE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".local" / "state" / "sipfleet"


# --------------------------------------------------------------------------------------------------
# Records


@dataclasses.dataclass(frozen=True)
class LabNode:
    name: str
    ip: str
    port: int
    pid: int | None
    running: bool

    @property
    def hostport(self) -> str:
        return f"{self.ip}:{self.port}"


@dataclasses.dataclass(frozen=True)
class WireRecord:
    """One request as a lab node received it."""

    node: str
    at: float
    method: str
    ruri: str
    route: list[str]  # Route entries in order as received, one per URI, without the angle brackets
    src: str  # ip:port it came from
    transport: str  # "udp" | "tcp"
    call_id: str
    cseq: int
    from_uri: str
    to_uri: str
    has_auth: bool  # an Authorization / Proxy-Authorization header was present (never its value)
    dst: str = ""  # ip:port it arrived on
    contact: str = ""  # Contact header value(s) as received ("" if none)
    expires: str = ""  # Expires header value as received ("" if none)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class SippResult:
    """The outcome of one bounded SIPp run."""

    returncode: int
    scenario: str
    target: str
    calls: int  # calls asked for (-m)
    successful: int
    failed: int
    final_codes: dict[str, int | str]  # call-id -> final response code (int), or "timeout"/"error:<why>"
    rtts_ms: list[float]  # response times measured by the scenario's rtd markers, in ms
    timed_out: bool  # the Python-side deadline killed SIPp
    duration_s: float
    run_dir: str
    stats: dict[str, str]  # last row of SIPp's -trace_stat CSV
    errors: list[str]  # lines of SIPp's error log (bounded)
    stdout_tail: str
    logs: list[str] = dataclasses.field(default_factory=list)  # the scenario's <log> lines (-trace_logs)
    # response times per SIPp rtd number, ms (SIPp's clock has 1 ms resolution); register.xml:
    # "1" = REGISTER -> 401, "2" = authenticated REGISTER -> 200
    rtts_by_rtd: dict[str, list[float]] = dataclasses.field(default_factory=dict)

    @property
    def codes(self) -> list[int | str]:
        return list(self.final_codes.values())

    def count(self, code: int | str) -> int:
        return sum(1 for c in self.final_codes.values() if c == code)

    def percentile_ms(self, p: float) -> float | None:
        return _percentile(self.rtts_ms, p)


def _percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * (len(s) - 1)))))
    return s[k]


# --------------------------------------------------------------------------------------------------
# Pure helpers (unit-testable)


def parse_inject_mode(mode: str) -> tuple[str, int]:
    """``"normal" | "408" | "503" | "blackhole" | "delay:<ms>"`` -> (cfg mode, delay in microseconds)."""
    m = str(mode).strip().lower()
    if m in ("normal", "408", "503", "blackhole"):
        return m, 0
    if m.startswith("delay:"):
        try:
            ms = int(m.split(":", 1)[1])
        except ValueError:
            raise LabError(f"bad delay in inject mode {mode!r}: want delay:<milliseconds>") from None
        if ms < 0 or ms > 600_000:
            raise LabError(f"delay out of range in {mode!r} (0..600000 ms)")
        return "delay", ms * 1000
    raise LabError(f"unknown inject mode {mode!r}; one of {', '.join(INJECT_MODES)}")


def format_inject_mode(cfg_mode: str, delay_us: int) -> str:
    if cfg_mode == "delay":
        return f"delay:{delay_us // 1000}"
    return cfg_mode


def _unescape_common(s: str) -> str:
    # reverse of Kamailio's {s.escape.common}: \' \" \\ and \0
    if "\\" not in s:
        return s
    out: list[str] = []
    i = 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            n = s[i + 1]
            out.append("\0" if n == "0" else n)
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def split_route_header(value: str) -> list[str]:
    """Split one or more Route header bodies (comma-joined) into URIs, in order, angle brackets removed."""
    parts: list[str] = []
    buf: list[str] = []
    depth = 0
    quoted = False
    for ch in value:
        if ch == '"' and depth == 0:
            quoted = not quoted
        elif ch == "<" and not quoted:
            depth += 1
        elif ch == ">" and not quoted and depth > 0:
            depth -= 1
        if ch == "," and depth == 0 and not quoted:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    parts.append("".join(buf))
    out = []
    for p in parts:
        p = p.strip()
        if not p or p == "<null>":
            continue
        lt, gt = p.find("<"), p.rfind(">")
        if 0 <= lt < gt:
            p = p[lt + 1 : gt].strip()
        out.append(p)
    return out


def parse_wire_line(line: str) -> WireRecord | None:
    """Parse one node-log line; None unless it is a complete SIPLAB-WIRE line."""
    i = line.find(_WIRE_MARK)
    if i < 0:
        return None
    fields = {k: _unescape_common(v) for k, v in _WIRE_FIELD_RE.findall(line[i + len(_WIRE_MARK) :])}
    if fields.get("end") != "1":
        return None
    try:
        at = float(fields.get("at", "0"))
    except ValueError:
        return None
    try:
        cseq = int(fields.get("cseq", "0") or 0)
    except ValueError:
        cseq = 0

    def val(k: str) -> str:
        v = fields.get(k, "")
        return "" if v == "<null>" else v

    return WireRecord(
        node=val("node"),
        at=at,
        method=val("method"),
        ruri=val("ruri"),
        route=split_route_header(fields.get("route", "")),
        src=val("src"),
        transport=val("transport").lower(),
        call_id=val("call_id"),
        cseq=cseq,
        from_uri=val("from_uri"),
        to_uri=val("to_uri"),
        has_auth=fields.get("auth") == "1",
        dst=val("dst"),
        contact=val("contact"),
        expires=val("expires"),
    )


def digest_ha1(username: str, realm: str, password: str) -> str:
    return hashlib.md5(f"{username}:{realm}:{password}".encode()).hexdigest()


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return False
    # state is the field after "(comm)"
    state = stat.rsplit(")", 1)[-1].split()[0] if ")" in stat else "?"
    return state not in ("Z", "X")


def _pid_cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def _pids_in_group(pgid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
            rest = stat.rsplit(")", 1)[1].split()
            if int(rest[2]) == pgid and rest[0] not in ("Z", "X"):
                out.append(int(d))
        except (OSError, IndexError, ValueError):
            continue
    return out


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    import ctypes

    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


def _find_exe(name: str, *extra: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for d in ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin", *extra):
        p = Path(d) / name
        if p.exists():
            return str(p)
    raise LabError(f"{name} not found (Debian packages: kamailio, sip-tester)")


def _kamailio_mpath() -> str:
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


# --------------------------------------------------------------------------------------------------
# The lab


class SipLab:
    """A P/R/E Kamailio lab on ``<subnet>.1-3``. See the module docstring."""

    def __init__(
        self,
        name: str = "default",
        subnet: str = "127.0.10",
        state_dir: str | os.PathLike[str] | None = None,
        *,
        port: int = 5060,
        domain: str = "lab.sipfleet.test",
        shm_mb: int | None = None,
        children: int = 4,
        tcp_children: int = 2,
        proxy_fr_timer_ms: int = 8000,
        wire_log: bool = True,
        die_with_parent: bool = False,
        service_route_transport: str = "auto",
    ) -> None:
        if not _NAME_RE.match(name):
            raise LabError(f"bad lab name {name!r}")
        m = _SUBNET_RE.match(subnet)
        if not m or int(m.group(1)) > 255 or int(m.group(2)) > 255:
            raise LabError(f"subnet must be a loopback /24 prefix like 127.0.10, not {subnet!r}")
        self.name = name
        self.subnet = subnet
        self.port = int(port)
        self.domain = domain
        self.state_dir = Path(state_dir) if state_dir else default_state_root() / "labs" / name
        self.shm_mb = int(shm_mb or os.environ.get("SIPFLEET_LAB_SHM_MB", "128"))
        self.children = int(children)
        self.tcp_children = int(tcp_children)
        self.proxy_fr_timer_ms = int(proxy_fr_timer_ms)
        self.wire_log = bool(wire_log)
        # Kamailio gets SIGTERM when this process dies (for test sessions); only for nodes started from the
        # main thread, since the kernel signals when the creating *thread* exits
        self.die_with_parent = bool(die_with_parent)
        # "auto": R's Service-Route is edge_uri(<the client's transport at P or E>); "udp"/"tcp": always that one
        if service_route_transport not in ("auto", "udp", "tcp"):
            raise LabError("service_route_transport must be auto, udp or tcp")
        self.service_route_transport = service_route_transport
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._wire_lock = threading.Lock()
        # node -> (inode, offset, records, bisection keys)
        self._wire_cache: dict[str, tuple[int, int, list[WireRecord], list[float]]] = {}

    # ---------------------------------------------------------------- addresses
    def ip(self, node: str) -> str:
        return f"{self.subnet}.{_NODE_OCTET[self._node_name(node)]}"

    def proxy_uri(self, transport: str = "udp") -> str:
        return self._lr_uri("P", transport)

    def edge_uri(self, transport: str = "udp") -> str:
        """E's loose-route URI: what R puts in Service-Route (with ``;transport=tcp`` for clients that reached
        P or E over TCP, unless ``service_route_transport`` pins one)."""
        return self._lr_uri("E", transport)

    def service_route(self, client_transport: str = "udp") -> str:
        """The Service-Route URI R answers a client that used ``client_transport`` at its first hop."""
        t = client_transport if self.service_route_transport == "auto" else self.service_route_transport
        return self.edge_uri(t)

    def registrar_uri(self, transport: str = "udp") -> str:
        t = transport.lower()
        return f"sip:{self.ip('R')}:{self.port}" + (f";transport={t}" if t != "udp" else "")

    def hostport(self, node: str) -> str:
        return f"{self.ip(node)}:{self.port}"

    def _lr_uri(self, node: str, transport: str) -> str:
        t = transport.lower()
        if t not in ("udp", "tcp"):
            raise LabError(f"transport must be udp or tcp, not {transport!r}")
        return f"sip:{self.ip(node)}:{self.port};lr" + (f";transport={t}" if t != "udp" else "")

    def aor(self, username: str) -> str:
        return f"sip:{username}@{self.domain}"

    # ---------------------------------------------------------------- paths and state
    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    def log_path(self, node: str) -> Path:
        return self.logs_dir / f"{self._node_name(node)}.log"

    def cfg_path(self, node: str) -> Path:
        return self.state_dir / f"{self._node_name(node)}.cfg"

    def _run_dir(self) -> Path:
        return self.state_dir / "run"

    def ctl_socket(self, node: str) -> Path:
        node = self._node_name(node)
        p = self._run_dir() / f"{node}.ctl"
        if len(str(p)) < 100:
            return p
        # unix socket paths are limited to 108 bytes: fall back to a short, per-lab path
        h = hashlib.sha1(str(self.state_dir.resolve()).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"sipfleet-lab-{h}" / f"{node}.ctl"

    def _read_json(self, name: str, default: Any) -> Any:
        try:
            return json.loads((self.state_dir / name).read_text())
        except (OSError, ValueError):
            return default

    def _write_json(self, name: str, data: Any, mode: int = 0o644) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / name
        tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
        os.chmod(tmp, mode)
        os.replace(tmp, path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / ".lock", "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _pids(self) -> dict[str, dict[str, Any]]:
        return self._read_json("pids.json", {})

    def _injections(self) -> dict[str, str]:
        data = self._read_json("inject.json", {})
        return {n: data.get(n, "normal") for n in NODES}

    def _users(self) -> dict[str, str]:
        return self._read_json("users.json", {})

    @staticmethod
    def _node_name(node: str) -> str:
        n = str(node).strip().upper()
        if n not in _NODE_OCTET:
            raise LabError(f"unknown node {node!r}; one of P, R, E")
        return n

    def _node_pid(self, node: str) -> int | None:
        """The recorded PID of a node if that process is alive and is our kamailio for this node."""
        entry = self._pids().get(node)
        if not entry:
            return None
        pid = int(entry.get("pid") or 0)
        proc = self._procs.get(node)
        if proc is not None and proc.pid == pid:
            proc.poll()  # reap if it died
        if not _pid_alive(pid):
            return None
        cmd = _pid_cmdline(pid)
        if str(entry.get("cfg")) not in cmd:
            return None  # PID reused by something else
        return pid

    # ---------------------------------------------------------------- public API: lifecycle
    def node(self, name: str) -> LabNode:
        n = self._node_name(name)
        pid = self._node_pid(n)
        return LabNode(name=n, ip=self.ip(n), port=self.port, pid=pid, running=pid is not None)

    def nodes(self) -> list[LabNode]:
        return [self.node(n) for n in NODES]

    def is_up(self) -> bool:
        return all(self.node(n).running for n in NODES)

    def up(self, timeout: float = 60.0) -> "SipLab":
        """Start every node that is not running (idempotent); returns when all answer SIP and ctl."""
        with self._locked():
            running = {n: self._node_pid(n) is not None for n in NODES}
            if not any(running.values()):
                # fresh start: new logs, injections back to normal
                self._write_json("inject.json", {n: "normal" for n in NODES})
                self.logs_dir.mkdir(parents=True, exist_ok=True)
                for n in NODES:
                    # a new file (new inode) so readers in other processes notice and start over
                    with contextlib.suppress(FileNotFoundError):
                        self.log_path(n).unlink()
                    with open(self.log_path(n), "wb"):
                        pass
                with self._wire_lock:
                    self._wire_cache.clear()
            self._write_json(
                "lab.json",
                {
                    "name": self.name,
                    "subnet": self.subnet,
                    "port": self.port,
                    "domain": self.domain,
                    "nodes": {n: self.hostport(n) for n in NODES},
                    "proxy_uri": self.proxy_uri(),
                    "registrar_uri": self.registrar_uri(),
                    "edge_uri": self.edge_uri(),
                },
            )
            for n in NODES:
                if not running[n]:
                    self._start_locked(n, timeout=timeout)
        return self

    def down(self) -> None:
        """Stop every node by its recorded PID."""
        with self._locked():
            for n in reversed(NODES):
                self._stop_locked(n)

    def start_node(self, name: str, timeout: float = 60.0) -> LabNode:
        n = self._node_name(name)
        with self._locked():
            if self._node_pid(n) is None:
                self._start_locked(n, timeout=timeout)
        return self.node(n)

    def stop_node(self, name: str, hard: bool = False) -> None:
        """Stop one node by PID: SIGTERM (Kamailio shuts down its children), or with ``hard`` SIGKILL to all
        of the node's processes at once (a crash: sockets closed by the kernel)."""
        n = self._node_name(name)
        with self._locked():
            self._stop_locked(n, hard=hard)

    def restart_node(self, name: str, timeout: float = 60.0) -> LabNode:
        self.stop_node(name)
        return self.start_node(name, timeout=timeout)

    def __enter__(self) -> "SipLab":
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    def status(self) -> dict[str, Any]:
        inj = self._injections()
        nodes = {}
        for ln in self.nodes():
            nodes[ln.name] = {
                "ip": ln.ip,
                "port": ln.port,
                "address": ln.hostport,
                "pid": ln.pid,
                "running": ln.running,
                "inject": inj.get(ln.name, "normal"),
                "log": str(self.log_path(ln.name)),
                "ctl": str(self.ctl_socket(ln.name)),
            }
        return {
            "name": self.name,
            "subnet": self.subnet,
            "state_dir": str(self.state_dir),
            "domain": self.domain,
            "up": all(v["running"] for v in nodes.values()),
            "proxy_uri": self.proxy_uri(),
            "registrar_uri": self.registrar_uri(),
            "edge_uri": self.edge_uri(),
            "users": sorted(self._users()),
            "nodes": nodes,
        }

    # ---------------------------------------------------------------- process management
    def _render_cfg(self, node: str) -> str:
        inj_mode, delay_us = parse_inject_mode(self._injections().get(node, "normal"))
        text = CFG_TEMPLATE.read_text()
        role = "ROLE_REGISTRAR" if node == "R" else "ROLE_PROXY"
        users_init = "\n".join(
            f'\t$sht(users=>{u}) = "{ha1}";' for u, ha1 in sorted(self._users().items()) if _USERNAME_RE.match(u)
        )
        repl = {
            "NODE": node,
            "IP": self.ip(node),
            "PORT": str(self.port),
            "DOMAIN": self.domain,
            "CTL": str(self.ctl_socket(node)),
            "MODE": inj_mode,
            "DELAY_US": str(delay_us),
            "WIRE": "1" if self.wire_log else "0",
            "CHILDREN": str(self.children),
            "TCP_CHILDREN": str(self.tcp_children),
            "FR_TIMER_MS": str(self.proxy_fr_timer_ms),
            "MPATH": _kamailio_mpath(),
            "REGISTRAR_URI": f"sip:{self.ip('R')}:{self.port}",
            "EDGE_URI": self.edge_uri(),
            "EDGE_URI_TCP": self.edge_uri("tcp"),
            "EDGE_URI_FIXED": self.edge_uri(
                "udp" if self.service_route_transport == "auto" else self.service_route_transport
            ),
            "USERS_INIT": users_init,
        }
        for k, v in repl.items():
            text = text.replace(f"@@{k}@@", v)
        if "@@" in text:
            raise LabError(f"unrendered token in config template: {text[text.index('@@'):][:40]!r}")
        lines = text.split("\n", 1)
        sr = "SR_AUTO" if self.service_route_transport == "auto" else "SR_FIXED"
        return f"{lines[0]}\n#!define {role}\n#!define NODE_{node}\n#!define {sr}\n{lines[1]}"

    def _check_addr_free(self, node: str) -> None:
        ip = self.ip(node)
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            s = socket.socket(socket.AF_INET, kind)
            try:
                if kind == socket.SOCK_STREAM:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((ip, self.port))
            except OSError as e:
                raise LabError(
                    f"{ip}:{self.port}/{'udp' if kind == socket.SOCK_DGRAM else 'tcp'} is in use "
                    f"(another lab on subnet {self.subnet}, or a system kamailio bound to 0.0.0.0:{self.port}? "
                    f"see `ss -lunp`; stop it with `service kamailio stop`): {e}"
                ) from None
            finally:
                s.close()

    def _start_locked(self, node: str, timeout: float) -> None:
        kamailio = _find_exe("kamailio")
        self._check_addr_free(node)
        cfg = self.cfg_path(node)
        cfg.parent.mkdir(parents=True, exist_ok=True)
        # the config holds HA1 hashes on R: owner-only
        fd = os.open(cfg, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self._render_cfg(node))
        os.chmod(cfg, 0o600)
        rundir = self._run_dir() / node
        rundir.mkdir(parents=True, exist_ok=True)
        ctl = self.ctl_socket(node)
        ctl.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            ctl.unlink()
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        pidfile = rundir / "kamailio.pid"
        cmd = [
            kamailio,
            "-f", str(cfg),
            "-DD", "-E",
            "-m", str(self.shm_mb),
            "-M", "8",
            "-P", str(pidfile),
            "-Y", str(rundir),
            "-w", str(rundir),
        ]
        log = open(self.log_path(node), "ab")
        try:
            with open(self.log_path(node), "ab") as marker:
                marker.write(f"# sipfleet lab: starting {node} at {time.time():.6f}: {' '.join(cmd)}\n".encode())
            pdeath = self.die_with_parent and threading.current_thread() is threading.main_thread()
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=str(rundir),
                start_new_session=True,
                close_fds=True,
                preexec_fn=_set_pdeathsig if pdeath else None,
            )
        finally:
            log.close()
        self._procs[node] = proc
        pids = self._pids()
        pids[node] = {"pid": proc.pid, "cfg": str(cfg), "started_at": time.time(), "address": self.hostport(node)}
        self._write_json("pids.json", pids)
        try:
            self._wait_ready(node, proc, timeout)
        except BaseException:
            self._stop_locked(node)
            raise

    def _wait_ready(self, node: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        sip_ok = tcp_ok = ctl_ok = False
        last_err = ""
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = self._log_tail(node, 25)
                raise LabError(f"kamailio {node} exited with {proc.returncode} while starting; log tail:\n{tail}")
            try:
                if not sip_ok:
                    sip_ok = self._probe_udp(node)
                if sip_ok and not tcp_ok:
                    with socket.create_connection((self.ip(node), self.port), timeout=1.0):
                        tcp_ok = True
                if sip_ok and tcp_ok and not ctl_ok:
                    self.kamcmd(node, "core.version", timeout=5.0)
                    ctl_ok = True
            except (OSError, LabError, subprocess.TimeoutExpired) as e:
                last_err = str(e)
            if sip_ok and tcp_ok and ctl_ok:
                return
            time.sleep(0.05)
        raise LabError(f"kamailio {node} not ready after {timeout:.0f}s ({last_err}); log tail:\n{self._log_tail(node, 25)}")

    def _probe_udp(self, node: str, timeout: float = 0.5) -> bool:
        """Send an OPTIONS the node answers without logging it; True on any response."""
        ip = self.ip(node)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind((f"{self.subnet}.254", 0))
            lport = s.getsockname()[1]
            cid = f"siplab-probe-{uuid.uuid4().hex}"
            msg = (
                f"OPTIONS sip:{ip}:{self.port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {self.subnet}.254:{lport};branch=z9hG4bK{uuid.uuid4().hex[:16]};rport\r\n"
                f"Max-Forwards: 5\r\n"
                f"From: <sip:probe@{self.subnet}.254>;tag={uuid.uuid4().hex[:8]}\r\n"
                f"To: <sip:{ip}:{self.port}>\r\n"
                f"Call-ID: {cid}\r\n"
                f"CSeq: 1 OPTIONS\r\n"
                f"Content-Length: 0\r\n\r\n"
            )
            s.settimeout(timeout)
            s.sendto(msg.encode(), (ip, self.port))
            while True:
                data, _ = s.recvfrom(65535)
                if cid.encode() in data:
                    return True
        except (socket.timeout, ConnectionRefusedError):
            return False
        finally:
            s.close()

    def _stop_locked(self, node: str, timeout: float = 15.0, hard: bool = False) -> None:
        pids = self._pids()
        entry = pids.get(node)
        pid = self._node_pid(node)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                if hard and os.getpgid(pid) == pid:
                    os.killpg(pid, signal.SIGKILL)  # the node's own session/process group (start_new_session)
                else:
                    os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self._alive_or_reap(node, pid):
                time.sleep(0.02)
            if self._alive_or_reap(node, pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and self._alive_or_reap(node, pid):
                    time.sleep(0.02)
        if entry:
            # kamailio children left behind (main killed hard): same process group, same config
            cfg = str(entry.get("cfg"))
            gpid = int(entry.get("pid") or 0)
            if gpid:
                for child in _pids_in_group(gpid):
                    if cfg in _pid_cmdline(child):
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(child, signal.SIGKILL)
            pids.pop(node, None)
            self._write_json("pids.json", pids)
        proc = self._procs.pop(node, None)
        if proc is not None:
            with contextlib.suppress(Exception):
                proc.wait(timeout=5)
        with contextlib.suppress(FileNotFoundError):
            self.ctl_socket(node).unlink()

    def _alive_or_reap(self, node: str, pid: int) -> bool:
        proc = self._procs.get(node)
        if proc is not None and proc.pid == pid:
            return proc.poll() is None
        return _pid_alive(pid)

    def _log_tail(self, node: str, lines: int) -> str:
        try:
            data = self.log_path(node).read_bytes()[-8192:].decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(data.splitlines()[-lines:])

    # ---------------------------------------------------------------- control
    def kamcmd(self, node: str, *args: str, timeout: float = 10.0) -> str:
        """Run one kamcmd RPC against a node's ctl socket; returns stdout, raises LabError on failure."""
        n = self._node_name(node)
        exe = _find_exe("kamcmd")
        ctl = self.ctl_socket(n)
        res = subprocess.run(
            [exe, "-s", f"unixs:{ctl}", *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
        )
        out = res.stdout.decode(errors="replace")
        err = res.stderr.decode(errors="replace")
        if res.returncode != 0 or out.startswith("error:") or err.strip().startswith("error"):
            raise LabError(f"kamcmd {args[0] if args else ''} on {n} failed ({res.returncode}): {(err or out).strip()}")
        return out

    def inject(self, node: str, mode: str) -> None:
        """Set how ``node`` handles REGISTER: normal | 408 | 503 | blackhole | delay:<ms>.

        Takes effect at once on a running node and survives stop_node/start_node (until the next fresh up()).
        """
        n = self._node_name(node)
        cfg_mode, delay_us = parse_inject_mode(mode)
        with self._locked():
            inj = self._injections()
            inj[n] = format_inject_mode(cfg_mode, delay_us)
            self._write_json("inject.json", inj)
            if self._node_pid(n) is not None:
                self.kamcmd(n, "pv.shvSet", "delay_us", "int", str(delay_us))
                self.kamcmd(n, "pv.shvSet", "mode", "str", f"s:{cfg_mode}")

    def injection(self, node: str) -> str:
        return self._injections()[self._node_name(node)]

    def reset_injections(self) -> None:
        for n in NODES:
            if self.injection(n) != "normal":
                self.inject(n, "normal")

    def set_wire_log(self, enabled: bool) -> None:
        """Switch the wire log on or off at run time on every running node (e.g. for load benchmarks)."""
        self.wire_log = bool(enabled)
        for n in NODES:
            if self.node(n).running:
                self.kamcmd(n, "pv.shvSet", "wire", "int", "1" if enabled else "0")

    def add_user(self, username: str, password: str) -> None:
        """Add or change digest credentials at R (realm = domain); effective at once, kept across restarts.

        Only the HA1 hash is stored (users.json, mode 0600) and loaded into R's htable.
        """
        self.add_users([(username, password)])

    def add_users(self, creds: Iterable[tuple[str, str]]) -> None:
        """:meth:`add_user` for many users at once (one state write, one kamcmd run)."""
        entries: list[tuple[str, str]] = []
        for username, password in creds:
            if not _USERNAME_RE.match(username or ""):
                raise LabError(f"bad username {username!r}: letters, digits and . _ ~ + - only")
            if not isinstance(password, str) or not password:
                raise LabError("password must be a non-empty string")
            entries.append((username, digest_ha1(username, self.domain, password)))
        if not entries:
            return
        with self._locked():
            users = self._users()
            users.update(entries)
            self._write_json("users.json", users, mode=0o600)
            if self._node_pid("R") is not None:
                # through stdin, so the hashes never show up in a process list
                self._kamcmd_batch("R", [["htable.sets", "users", u, f"s:{ha1}"] for u, ha1 in entries])

    def _kamcmd_batch(self, node: str, commands: list[list[str]], timeout: float = 60.0) -> str:
        n = self._node_name(node)
        exe = _find_exe("kamcmd")
        script = "".join(" ".join(c) + "\n" for c in commands)
        res = subprocess.run(
            [exe, "-s", f"unixs:{self.ctl_socket(n)}"],
            input=script.encode(),
            capture_output=True,
            timeout=timeout,
        )
        out = res.stdout.decode(errors="replace")
        err = res.stderr.decode(errors="replace")
        bad = [line for line in (out + "\n" + err).splitlines() if "error" in line.lower()]
        ok = sum(1 for line in out.splitlines() if line.startswith("Ok."))
        if res.returncode != 0 or bad or ok < len(commands):
            why = (bad or [err.strip() or out[-300:]])[0]
            raise LabError(f"kamcmd batch on {n} failed ({res.returncode}, {ok}/{len(commands)} ok): {why}")
        return out

    def remove_user(self, username: str) -> None:
        with self._locked():
            users = self._users()
            if users.pop(username, None) is not None:
                self._write_json("users.json", users, mode=0o600)
            if self._node_pid("R") is not None:
                with contextlib.suppress(LabError):
                    self.kamcmd("R", "htable.delete", "users", username)

    def contacts(self, username: str) -> list[str]:
        """The contacts R currently holds for ``username`` (empty if none)."""
        if not _USERNAME_RE.match(username or ""):
            raise LabError(f"bad username {username!r}")
        exe = _find_exe("kamcmd")
        res = subprocess.run(
            [exe, "-s", f"unixs:{self.ctl_socket('R')}", "ul.lookup", "location", username],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=10,
        )
        out = res.stdout.decode(errors="replace") + res.stderr.decode(errors="replace")
        if res.returncode != 0:
            if "not found" in out.lower() or "404" in out:
                return []
            raise LabError(f"ul.lookup {username} failed: {out.strip()}")
        return _parse_ul_lookup(out)

    # ---------------------------------------------------------------- wire log
    def _read_node_records(self, node: str, since: float | None = None) -> list[WireRecord]:
        """The node's records (a copy), starting near ``since`` (records are in log order, nearly by time)."""
        with self._wire_lock:
            recs, ats = self._read_node_records_locked(node)
            start = 0
            if since is not None:
                # a worker stamps $TV just before it writes its line, so log order is time order up to a
                # tiny jitter; 5 s of slack keeps the bisection safe
                start = bisect.bisect_left(ats, since - 5.0)
            return recs[start:]

    def _read_node_records_locked(self, node: str) -> tuple[list[WireRecord], list[float]]:
        path = self.log_path(node)
        try:
            st = path.stat()
        except FileNotFoundError:
            self._wire_cache.pop(node, None)
            return [], []
        cached = self._wire_cache.get(node)
        if cached is None or cached[0] != st.st_ino or st.st_size < cached[1]:
            cached = (st.st_ino, 0, [], [])
        ino, off, recs, ats = cached
        if st.st_size > off:
            with open(path, "rb") as f:
                f.seek(off)
                data = f.read(st.st_size - off)
            end = data.rfind(b"\n")
            if end >= 0:
                off += end + 1
                mark = _WIRE_MARK.encode()
                for raw in data[: end + 1].split(b"\n"):
                    if mark not in raw:
                        continue
                    rec = parse_wire_line(raw.decode(errors="replace"))
                    if rec is not None:
                        recs.append(rec)
                        # keep the bisection key non-decreasing even if two workers' lines crossed
                        ats.append(max(rec.at, ats[-1]) if ats else rec.at)
        self._wire_cache[node] = (ino, off, recs, ats)
        return recs, ats

    def wire(
        self,
        since: float | None = None,
        node: str | None = None,
        method: str | None = None,
        call_id: str | None = None,
    ) -> list[WireRecord]:
        """Requests the nodes received, oldest first (``since`` is an epoch time, inclusive)."""
        nodes = [self._node_name(node)] if node else list(NODES)
        m = method.upper() if method is not None else None
        out: list[WireRecord] = []
        for n in nodes:
            for r in self._read_node_records(n, since):
                if since is not None and r.at < since:
                    continue
                if m is not None and r.method.upper() != m:
                    continue
                if call_id is not None and r.call_id != call_id:
                    continue
                out.append(r)
        out.sort(key=lambda r: r.at)
        return out

    def wait_wire(
        self,
        predicate: Callable[[WireRecord], bool],
        timeout: float = 30.0,
        *,
        since: float | None = None,
        node: str | None = None,
        method: str | None = None,
        interval: float = 0.1,
    ) -> WireRecord:
        """The first (oldest) record matching ``predicate``, polling until ``timeout`` (TimeoutError)."""
        deadline = time.monotonic() + timeout
        while True:
            for r in self.wire(since=since, node=node, method=method):
                if predicate(r):
                    return r
            if time.monotonic() >= deadline:
                recent = self.wire(since=since, node=node, method=method)[-10:]
                summary = "\n".join(
                    f"  {r.node} {r.method} {r.ruri} route={r.route} src={r.src} {r.transport}" for r in recent
                )
                raise TimeoutError(f"no matching wire record within {timeout:.0f}s; last records:\n{summary}")
            time.sleep(interval)

    def follow_wire(self, node: str | None = None, interval: float = 0.2) -> Iterator[WireRecord]:
        """Yield records as they arrive (for ``sipfleet lab wire --follow``)."""
        seen = time.time()
        last: set[tuple[str, float, str, int]] = set()
        while True:
            recs = self.wire(since=seen, node=node)
            for r in recs:
                key = (r.node, r.at, r.call_id, r.cseq)
                if key in last:
                    continue
                last.add(key)
                yield r
            if recs:
                seen = recs[-1].at
                last = {k for k in last if k[1] >= seen}
            time.sleep(interval)

    # ---------------------------------------------------------------- SIPp
    def sipp(
        self,
        scenario: str,
        target: str,
        *,
        calls: int = 1,
        concurrency: int = 1,
        rate: float | None = None,
        timeout: float = 60.0,
        transport: str = "udp",
        users: list[tuple[str, str]] | None = None,
        ruri: str | None = None,
        route: str | None = None,
        expires: int = 300,
        pause_ms: int = 200,
        recv_timeout_ms: int = 10000,
        local_ip: str | None = None,
        local_port: int | None = None,
        keys: dict[str, str] | None = None,
        extra_args: list[str] | None = None,
    ) -> SippResult:
        """Run SIPp once, bounded in calls (``-m calls``) and time (``timeout`` seconds, then killed).

        ``scenario``: ``"register"`` (REGISTER with digest auth, users from ``users``), ``"unregister"``,
        ``"uac_call"`` (INVITE -> 200 -> ACK -> pause ``pause_ms`` -> BYE -> 200), or a path to a scenario.
        Per-call final codes land in ``final_codes`` (call-id -> code, or "timeout"); ``rtts_by_rtd`` holds the
        scenario's response times (1 ms resolution).
        ``target``: a node name ("P", "R", "E"), ``ip:port`` or a SIP URI: where SIPp sends (first hop).
        ``route``: value for a ``Route:`` header (e.g. ``"<sip:127.0.10.1:5060;lr>"``), or None for none.
        ``ruri``: the Request-URI (default: R for REGISTER scenarios, the target for calls).
        """
        for _attempt in range(3):
            res = self._sipp_once(
                scenario, target, calls=calls, concurrency=concurrency, rate=rate, timeout=timeout,
                transport=transport, users=users, ruri=ruri, route=route, expires=expires, pause_ms=pause_ms,
                recv_timeout_ms=recv_timeout_ms, local_ip=local_ip, local_port=local_port, keys=keys,
                extra_args=extra_args,
            )
            # 254 (-2): SIPp could not bind; the free port it was given was taken in between: pick another
            if res.returncode != 254 or local_port is not None or res.duration_s > 5:
                break
        return res

    def _sipp_once(self, scenario: str, target: str, **kw: Any) -> SippResult:
        return start_sipp(self, scenario, target, **kw).wait()

    def sipp_start(self, scenario: str, target: str | None, **kw: Any) -> "SippRun":
        """Like :meth:`sipp` but returns the running :class:`SippRun` (``.wait()`` / ``.stop()``)."""
        return start_sipp(self, scenario, target, **kw)

    def sipp_uas(
        self, local_ip: str, local_port: int, *, calls: int = 1, timeout: float = 60.0, transport: str = "udp", **kw: Any
    ) -> "SippRun":
        """Start a SIPp UAS (``uas`` scenario: 100/180/200 to INVITE, ACK, 200 to BYE) on ``local_ip:local_port``.

        It ends after ``calls`` calls or ``timeout`` seconds; ``.wait()`` gives its result, ``.stop()`` kills it.
        """
        kw.setdefault("recv_timeout_ms", int(timeout * 1000))
        run = start_sipp(
            self, "uas", None, calls=calls, timeout=timeout, transport=transport,
            local_ip=local_ip, local_port=local_port, **kw,
        )
        # return once SIPp holds its port, so a call sent right after finds it
        kind = socket.SOCK_DGRAM if transport.lower() == "udp" else socket.SOCK_STREAM
        deadline = time.monotonic() + 30
        while run.running() and not _port_taken(local_ip, local_port, kind):
            if time.monotonic() > deadline:
                run.stop()
                raise LabError(f"SIPp UAS did not bind {local_ip}:{local_port} within 30 s")
            time.sleep(0.02)
        if not run.running():
            res = run.wait()
            raise LabError(f"SIPp UAS exited at once ({res.returncode}): {res.stdout_tail[-800:]}")
        return run


def _parse_ul_lookup(out: str) -> list[str]:
    contacts: list[str] = []
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Address:"):
            contacts.append(line.split(":", 1)[1].strip())
    return contacts


# --------------------------------------------------------------------------------------------------
# SIPp


def _free_port(ip: str, kinds: tuple[int, ...] = (socket.SOCK_DGRAM, socket.SOCK_STREAM)) -> int:
    for _ in range(50):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((ip, 0))
        port = s.getsockname()[1]
        s.close()
        ok = True
        for kind in kinds:
            t = socket.socket(socket.AF_INET, kind)
            try:
                t.bind((ip, port))
            except OSError:
                ok = False
            finally:
                t.close()
        if ok:
            return port
    raise LabError(f"no free port on {ip}")


def _port_taken(ip: str, port: int, kind: int) -> bool:
    t = socket.socket(socket.AF_INET, kind)
    try:
        if kind == socket.SOCK_STREAM:
            t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        t.bind((ip, port))
        return False
    except OSError:
        return True
    finally:
        t.close()


def _resolve_target(lab: SipLab, target: str) -> tuple[str, int]:
    t = target.strip()
    if t.upper() in _NODE_OCTET:
        return lab.ip(t), lab.port
    if t.lower().startswith("sip:"):
        t = t[4:]
        t = t.split(";", 1)[0]
        if "@" in t:
            t = t.split("@", 1)[1]
    if ":" in t:
        host, port = t.rsplit(":", 1)
        return host, int(port)
    return t, 5060


def scenario_path(scenario: str) -> Path:
    p = Path(scenario)
    if p.suffix == ".xml" and p.exists():
        return p
    q = SIPP_DIR / f"{scenario}.xml"
    if q.exists():
        return q
    raise LabError(f"unknown SIPp scenario {scenario!r} (built-in: {', '.join(sorted(x.stem for x in SIPP_DIR.glob('*.xml')))})")


def run_sipp(lab: SipLab, scenario: str, target: str | None, **kw: Any) -> SippResult:
    """Run SIPp to completion (bounded in calls and time); see :meth:`SipLab.sipp`."""
    return start_sipp(lab, scenario, target, **kw).wait()


class SippRun:
    """A SIPp process started by :func:`start_sipp` (e.g. a UAS running while a test does other things)."""

    def __init__(
        self, proc: subprocess.Popen[bytes], run_dir: Path, scen: Path, calls: int, target: str, timeout: float
    ) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.run_dir = run_dir
        self.scen = scen
        self.calls = calls
        self.target = target
        self.timeout = timeout
        self.started = time.monotonic()
        self._result: SippResult | None = None

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float | None = None) -> SippResult:
        """Wait for SIPp to end (at most its own timeout + 15 s, then SIGKILL) and collect the result."""
        if self._result is not None:
            return self._result
        budget = self.timeout + 15 - (time.monotonic() - self.started) if timeout is None else timeout
        killed = False
        try:
            self.proc.wait(timeout=max(0.0, budget))
        except subprocess.TimeoutExpired:
            killed = True
            self.stop()
        self._result = self._collect(killed)
        return self._result

    def stop(self) -> None:
        """Kill SIPp (by PID) if it still runs."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)

    def _collect(self, killed: bool) -> SippResult:
        # users.csv holds passwords: gone as soon as SIPp is
        with contextlib.suppress(FileNotFoundError):
            (self.run_dir / "users.csv").unlink()
        duration = time.monotonic() - self.started
        return _collect_sipp(self.run_dir, self.scen, self.proc, self.calls, self.target, killed, duration)

    def __enter__(self) -> "SippRun":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_sipp(
    lab: SipLab,
    scenario: str,
    target: str | None,
    *,
    calls: int = 1,
    concurrency: int = 1,
    rate: float | None = None,
    timeout: float = 60.0,
    transport: str = "udp",
    users: list[tuple[str, str]] | None = None,
    ruri: str | None = None,
    route: str | None = None,
    expires: int = 300,
    pause_ms: int = 200,
    recv_timeout_ms: int = 10000,
    local_ip: str | None = None,
    local_port: int | None = None,
    keys: dict[str, str] | None = None,
    extra_args: list[str] | None = None,
) -> SippRun:
    """Start SIPp (a client scenario toward ``target``, or a server scenario when ``target`` is None)."""
    exe = _find_exe("sipp")
    src = scenario_path(scenario)
    calls = max(1, int(calls))
    concurrency = max(1, int(concurrency))
    transport = transport.lower()
    if transport not in ("udp", "tcp"):
        raise LabError("transport must be udp or tcp")
    if target is not None:
        host, port = _resolve_target(lab, target)
        if not host.startswith("127."):
            raise LabError(f"SIPp target must be a loopback address, not {host}")
    else:
        host, port = "", 0
    lip = local_ip or f"{lab.subnet}.10"
    if not lip.startswith("127."):
        raise LabError(f"SIPp local address must be a loopback address, not {lip}")
    lport = int(local_port or _free_port(lip))

    run_dir = lab.state_dir / "sipp" / f"{time.strftime('%Y%m%dT%H%M%S')}-{src.stem}-{uuid.uuid4().hex[:6]}"
    run_dir.mkdir(parents=True, exist_ok=True)
    # the scenario as run: a line naming [route] is dropped when there is no route
    text = src.read_text()
    if not route:
        text = "\n".join(line for line in text.split("\n") if "[route]" not in line)
    scen = run_dir / src.name
    scen.write_text(text)

    first_send = text.split("<send", 1)[-1][:400] if target is not None else ""
    is_register = "REGISTER" in first_send
    if ruri is None:
        ruri = lab.registrar_uri() if is_register else f"sip:service@{host}:{port}"
    kv = {
        "ruri": ruri,
        "domain": lab.domain,
        "expires": str(int(expires)),
    }
    if route:
        kv["route"] = route
    kv.update(keys or {})

    cmd = [exe]
    if target is not None:
        cmd.append(f"{host}:{port}")
    cmd += [
        "-sf", str(scen),
        "-i", lip,
        "-p", str(lport),
        "-t", "u1" if transport == "udp" else "t1",
        "-m", str(calls),
        "-l", str(concurrency),
        "-nostdin",
        "-trace_err",
        "-trace_stat", "-fd", "1",
        "-trace_logs",
        "-trace_rtt", "-rtt_freq", "1",
        "-recv_timeout", str(int(recv_timeout_ms)),
        "-timeout", f"{max(1, int(timeout))}s",
        "-timeout_error",
        "-max_retrans", "5",
        "-d", str(int(pause_ms)),
        "-ci", lip,
        "-cp", str(_free_port(lip, (socket.SOCK_DGRAM,))),
        "-mi", lip,
        "-mp", str(_free_port(lip, (socket.SOCK_DGRAM,))),
    ]
    if target is not None and "INVITE" not in first_send:
        # no dialog: abort on an unexpected answer, but nothing to ACK or BYE
        cmd += ["-nd", "-default_behaviors", "abortunexp"]
    if transport == "tcp":
        cmd += ["-max_reconnect", "0"]
    if target is not None:
        if rate is not None:
            cmd += ["-r", str(rate), "-rp", "1000"]
        else:
            cmd += ["-r", str(max(concurrency, 10)), "-rp", "1000"]
    if users:
        csv_path = run_dir / "users.csv"
        fd = os.open(csv_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("SEQUENTIAL\n")
            for u, p in users:
                f.write(f"{u};{p}\n")
        cmd += ["-inf", str(csv_path)]
    for k, v in kv.items():
        cmd += ["-key", k, v]
    cmd += list(extra_args or [])

    with open(run_dir / "stdout.txt", "wb") as out:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=str(run_dir),
            start_new_session=True,
        )
    where = f"{host}:{port}" if target is not None else f"{lip}:{lport}"
    return SippRun(proc, run_dir, scen, calls, where, timeout)


_SIPP_EVENT_SPLIT = re.compile(r"\n(?=\d{4}-\d{2}-\d{2}\t)")


def _parse_sipp_errors(text: str, final: dict[str, int | str]) -> list[str]:
    """SIPp's -trace_err events, one string each; fills ``final`` for calls it has no code for yet."""
    events = [e.strip() for e in _SIPP_EVENT_SPLIT.split(text) if e.strip()]
    events = [e for e in events if not e.startswith("The following events occurred")]
    for ev in events:
        m = re.search(r"Call-Id '([^']+)'.*?received 'SIP/2\.0 (\d{3})", ev, re.S)
        if m:
            final.setdefault(m.group(1), int(m.group(2)))
            continue
        m = re.search(r"Call-Id[:]? '?([^',\s]+)'?", ev)
        if m and m.group(1) not in final:
            low = ev.lower()
            if "timeout" in low or "retrans" in low:
                final[m.group(1)] = "timeout"
            else:
                final[m.group(1)] = "error:" + " ".join(ev.split())[:160]
    return events[:200]


def _collect_sipp(
    run_dir: Path, scen: Path, proc: subprocess.Popen[bytes], calls: int, target: str, killed: bool, duration: float
) -> SippResult:
    stem = scen.stem
    pid = proc.pid
    final: dict[str, int | str] = {}
    log_lines: list[str] = []
    logs = run_dir / f"{stem}_{pid}_logs.log"
    if logs.exists():
        all_lines = logs.read_text(errors="replace").splitlines()
        log_lines = all_lines[:10000]
        for line in all_lines:
            m = re.search(r"FINAL (\S+) (\d{3})", line)
            if m:
                final[m.group(1)] = int(m.group(2))
    errors: list[str] = []
    err = run_dir / f"{stem}_{pid}_errors.log"
    if err.exists():
        errors = _parse_sipp_errors(err.read_text(errors="replace"), final)
    rtts: list[float] = []
    by_rtd: dict[str, list[float]] = {}
    rtt = run_dir / f"{stem}_{pid}_rtt.csv"
    if rtt.exists():
        for row in csv.reader(rtt.read_text(errors="replace").splitlines(), delimiter=";"):
            if len(row) >= 2:
                try:
                    v = float(row[1])
                except ValueError:
                    continue
                rtts.append(v)
                by_rtd.setdefault(row[2].strip() if len(row) > 2 else "1", []).append(v)
    stats: dict[str, str] = {}
    st = run_dir / f"{stem}_{pid}_.csv"
    if not st.exists():
        cands = sorted(run_dir.glob(f"{stem}_{pid}*.csv"))
        cands = [c for c in cands if not c.name.endswith("_rtt.csv")]
        st = cands[0] if cands else st
    if st.exists():
        rows = list(csv.reader(st.read_text(errors="replace").splitlines(), delimiter=";"))
        if len(rows) >= 2:
            stats = {k: v for k, v in zip(rows[0], rows[-1]) if k}

    def stat_int(*names: str) -> int | None:
        for n in names:
            if n in stats:
                try:
                    return int(float(stats[n]))
                except ValueError:
                    pass
        return None

    ok = stat_int("SuccessfulCall(C)")
    bad = stat_int("FailedCall(C)")
    if ok is None:
        ok = sum(1 for c in final.values() if isinstance(c, int) and 200 <= c < 300)
    if bad is None:
        bad = max(0, len(final) - ok)
    try:
        out = (run_dir / "stdout.txt").read_bytes()[-4000:].decode(errors="replace")
    except OSError:
        out = ""
    return SippResult(
        returncode=proc.returncode if proc.returncode is not None else -9,
        scenario=stem,
        target=target,
        calls=calls,
        successful=ok,
        failed=bad,
        final_codes=final,
        rtts_ms=rtts,
        timed_out=killed,
        duration_s=duration,
        run_dir=str(run_dir),
        stats=stats,
        errors=errors[:200],
        stdout_tail=out,
        logs=log_lines,
        rtts_by_rtd=by_rtd,
    )
