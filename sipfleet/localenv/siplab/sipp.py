"""SIPp runs: the lab's scenarios, a bounded SIPp process inside the lab's SIPp netns, and its result.

SIPp runs as ``nsenter --net=/run/netns/sipfleet-l-<lab>-sipp -- sipp ...`` from the SIPp host addresses
``10.213.(200+l).10``-``.19`` (``local_ip``; the first is the default), bounded in calls (``-m``) and time
(``timeout``, then SIGKILL by PID). Scenarios (``sipfleet/localenv/sipp/*.xml``): ``register`` (401 challenge,
then digest), ``unregister``, ``uac_call`` (INVITE -> 200 -> ACK -> pause -> BYE), ``uas`` (answers calls).
A scenario line naming ``[route]`` is dropped when there is no route. Passwords live in ``users.csv`` (0600)
only while SIPp runs.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Protocol

from .. import hostnet, procs
from ..hostnet import plan
from .kamailio import find_exe
from .model import SIP_HOSTS, LabError, SippResult
from .sipp_results import collect

SIPP_DIR = Path(__file__).resolve().parent.parent / "sipp"


class SippLab(Protocol):
    """What a SIPp run needs from its lab."""

    port: int
    domain: str
    state_dir: Path

    def ip(self, node: str) -> str: ...
    def registrar_uri(self, transport: str = "udp") -> str: ...
    def sipp_ip(self, index: int = 0) -> str: ...
    def sipp_index(self, ip: str) -> int: ...
    def netns(self, host: str) -> str: ...


def scenario_path(scenario: str) -> Path:
    p = Path(scenario)
    if p.suffix == ".xml" and p.exists():
        return p
    q = SIPP_DIR / f"{scenario}.xml"
    if q.exists():
        return q
    known = ", ".join(sorted(x.stem for x in SIPP_DIR.glob("*.xml")))
    raise LabError(f"unknown SIPp scenario {scenario!r} (built-in: {known})")


def resolve_target(target: str, node_ip: dict[str, str], port: int) -> tuple[str, int]:
    """A node name, ``ip:port``, ``ip`` or SIP URI -> (ip, port); only sipfleet-network addresses (pure)."""
    t = target.strip()
    if t.upper() in node_ip:
        return node_ip[t.upper()], port
    if t.lower().startswith("sip:"):
        t = t[4:].split(";", 1)[0]
        if "@" in t:
            t = t.split("@", 1)[1]
    host, p = (t.rsplit(":", 1)[0], int(t.rsplit(":", 1)[1])) if ":" in t else (t, 5060)
    if not plan.in_plan(host):
        raise LabError(f"SIPp target must be an address of the sipfleet network {plan.NETWORK}, not {host}")
    return host, p


class SippRun:
    """A SIPp process started by :func:`start_sipp` (e.g. a UAS running while a test does other things)."""

    def __init__(self, rec: procs.ProcRecord, proc: Any, run_dir: Path, scen: Path, calls: int, target: str,
                 timeout: float) -> None:
        self.rec = rec
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
        except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired
            killed = True
            self.stop()
        # users.csv holds passwords: gone as soon as SIPp is
        (self.run_dir / "users.csv").unlink(missing_ok=True)
        self._result = collect(self.run_dir, self.scen, self.pid, self.proc.returncode, self.calls, self.target,
                               killed, time.monotonic() - self.started)
        return self._result

    def stop(self) -> None:
        """Kill SIPp (by PID) if it still runs."""
        if self.proc.poll() is None:
            procs.kill_group(self.rec)
        try:
            self.proc.wait(timeout=10)
        except Exception:  # noqa: BLE001
            pass

    def __enter__(self) -> "SippRun":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_sipp(
    lab: SippLab,
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
    exe = find_exe("sipp")
    src = scenario_path(scenario)
    calls = max(1, int(calls))
    concurrency = max(1, int(concurrency))
    transport = transport.lower()
    if transport not in ("udp", "tcp"):
        raise LabError("transport must be udp or tcp")
    if target is not None:
        host, port = resolve_target(target, {n: lab.ip(n) for n in SIP_HOSTS}, lab.port)
    else:
        host, port = "", 0
    lip = lab.sipp_ip(lab.sipp_index(local_ip) if local_ip else 0)
    ns = lab.netns("sipp")
    try:
        lport = int(local_port or hostnet.free_port(lip, ns))
        cport = hostnet.free_port(lip, ns, (socket.SOCK_DGRAM,))
        mport = hostnet.free_port(lip, ns, (socket.SOCK_DGRAM,))
    except hostnet.HostNetError as e:
        raise LabError(str(e)) from None

    run_dir = lab.state_dir / "sipp" / f"{time.strftime('%Y%m%dT%H%M%S')}-{src.stem}-{uuid.uuid4().hex[:6]}"
    run_dir.mkdir(parents=True, exist_ok=True)
    text = src.read_text()
    if not route:
        text = "\n".join(line for line in text.split("\n") if "[route]" not in line)
    scen = run_dir / src.name
    scen.write_text(text)

    first_send = text.split("<send", 1)[-1][:400] if target is not None else ""
    if ruri is None:
        ruri = lab.registrar_uri() if "REGISTER" in first_send else f"sip:service@{host}:{port}"
    kv = {"ruri": ruri, "domain": lab.domain, "expires": str(int(expires))}
    if route:
        kv["route"] = route
    kv.update(keys or {})

    cmd = hostnet.nsenter_prefix(ns) + [exe]
    if target is not None:
        cmd.append(f"{host}:{port}")
    cmd += [
        "-sf", str(scen), "-i", lip, "-p", str(lport), "-t", "u1" if transport == "udp" else "t1",
        "-m", str(calls), "-l", str(concurrency), "-nostdin",
        "-trace_err", "-trace_stat", "-fd", "1", "-trace_logs", "-trace_rtt", "-rtt_freq", "1",
        "-recv_timeout", str(int(recv_timeout_ms)), "-timeout", f"{max(1, int(timeout))}s", "-timeout_error",
        "-max_retrans", "5", "-d", str(int(pause_ms)),
        "-ci", lip, "-cp", str(cport), "-mi", lip, "-mp", str(mport),
    ]
    if target is not None and "INVITE" not in first_send:
        # no dialog: abort on an unexpected answer, but nothing to ACK or BYE
        cmd += ["-nd", "-default_behaviors", "abortunexp"]
    if transport == "tcp":
        cmd += ["-max_reconnect", "0"]
    if target is not None:
        cmd += ["-r", str(rate if rate is not None else max(concurrency, 10)), "-rp", "1000"]
    if users:
        csv_path = run_dir / "users.csv"
        fd = os.open(csv_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("SEQUENTIAL\n" + "".join(f"{u};{p}\n" for u, p in users))
        cmd += ["-inf", str(csv_path)]
    for k, v in kv.items():
        cmd += ["-key", k, v]
    cmd += list(extra_args or [])

    rec, proc = procs.start(f"sipp-{src.stem}", cmd, run_dir / "stdout.txt", cwd=run_dir)
    where = f"{host}:{port}" if target is not None else f"{lip}:{lport}"
    return SippRun(rec, proc, run_dir, scen, calls, where, timeout)


def wait_bound(run: SippRun, netns: str, ip: str, port: int, transport: str, timeout: float = 30.0) -> None:
    """Return once the SIPp of ``run`` holds ``ip:port`` in ``netns`` (LabError if it exits or never does)."""
    kind = socket.SOCK_DGRAM if transport.lower() == "udp" else socket.SOCK_STREAM
    deadline = time.monotonic() + timeout
    while run.running() and not hostnet.port_bound(ip, port, kind, netns=netns):
        if time.monotonic() > deadline:
            run.stop()
            raise LabError(f"SIPp UAS did not bind {ip}:{port} within {timeout:.0f} s")
        time.sleep(0.02)
    if not run.running():
        res = run.wait()
        raise LabError(f"SIPp UAS exited at once ({res.returncode}): {res.stdout_tail[-800:]}")


def run_sipp(lab: SippLab, scenario: str, target: str | None, **kw: Any) -> SippResult:
    """Run SIPp to completion (bounded in calls and time); see :meth:`SipLab.sipp`."""
    for _attempt in range(3):
        res = start_sipp(lab, scenario, target, **kw).wait()
        # 254 (-2): SIPp could not bind; the free port it was given was taken in between: pick another
        if res.returncode != 254 or kw.get("local_port") is not None or res.duration_s > 5:
            break
    return res


def start_uas(lab: SippLab, local_ip: str, local_port: int, *, calls: int = 1, timeout: float = 60.0,
              transport: str = "udp", **kw: Any) -> SippRun:
    """Start the ``uas`` scenario on ``local_ip:local_port``; returns once SIPp holds the port."""
    kw.setdefault("recv_timeout_ms", int(timeout * 1000))
    run = start_sipp(lab, "uas", None, calls=calls, timeout=timeout, transport=transport, local_ip=local_ip,
                     local_port=local_port, **kw)
    wait_bound(run, lab.netns("sipp"), local_ip, local_port, transport)
    return run
