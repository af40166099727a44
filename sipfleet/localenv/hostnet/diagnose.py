"""What the host path to a cluster looks like right now: a read-only snapshot for when the host cannot reach a
cluster's apiserver although the cluster itself runs.

:func:`connect` opens a TCP connection (from the host, or from inside a netns) and says how it went;
:func:`snapshot` reads, never changes: a fresh connect from the host and from inside the cluster's netns (which
tells a broken listener from a broken path), neighbours, routes, links, the bridge's learnt MACs, the ARP and
reverse-path sysctls of sipfleet's links, nftables tables, TCP listen-queue counters and the conntrack count
in both namespaces, and the kernel's last lines when readable. Every failure to read one item is written into
the snapshot instead of raised.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import Callable

from .base import HostNetError, in_netns, run, tool

_SYSCTLS = ("arp_ignore", "arp_announce", "rp_filter", "forwarding")
_NSTAT_KEYS = ("TcpExtListenOverflows", "TcpExtListenDrops", "TcpExtTCPBacklogDrop", "TcpExtSyncookiesSent",
               "TcpExtTCPReqQFullDrop", "TcpActiveOpens", "TcpPassiveOpens", "TcpAttemptFails")


def connect(ip_addr: str, port: int, *, netns: str | None = None, timeout: float = 2.0) -> str:
    """``"ok <ms> ms"`` or ``"failed after <ms> ms: <error>"`` for one fresh TCP connection."""

    def attempt() -> str:
        t0 = time.monotonic()
        try:
            with socket.create_connection((ip_addr, port), timeout=timeout):
                return f"ok {1000 * (time.monotonic() - t0):.0f} ms"
        except OSError as e:
            return f"failed after {1000 * (time.monotonic() - t0):.0f} ms: {e}"

    return in_netns(netns, attempt)


def _item(title: str, fn: Callable[[], str]) -> str:
    try:
        body = fn().rstrip()
    except (HostNetError, OSError, subprocess.SubprocessError) as e:
        body = f"(unreadable: {e})"
    return f"--- {title}\n{body}\n"


def _sysctls(netns: str | None, prefixes: tuple[str, ...]) -> str:
    def read() -> str:
        lines = []
        conf = Path("/proc/sys/net/ipv4/conf")
        for dev in sorted(p.name for p in conf.iterdir()):
            if dev not in ("all", "default") and not dev.startswith(prefixes):
                continue
            vals = []
            for key in _SYSCTLS:
                try:
                    vals.append(f"{key}={(conf / dev / key).read_text().strip()}")
                except OSError:
                    vals.append(f"{key}=?")
            lines.append(f"{dev}: {' '.join(vals)}")
        ct = Path("/proc/sys/net/netfilter/nf_conntrack_count")
        if ct.exists():
            mx = Path("/proc/sys/net/netfilter/nf_conntrack_max")
            lines.append(f"conntrack: {ct.read_text().strip()} of {mx.read_text().strip() if mx.exists() else '?'}")
        return "\n".join(lines)

    return in_netns(netns, read)


def _nstat(netns: str | None) -> str:
    def read() -> str:
        out = []
        for name in ("/proc/net/netstat", "/proc/net/snmp"):
            rows = Path(name).read_text().splitlines()
            for head, vals in zip(rows[::2], rows[1::2]):
                proto, keys = head.split(":", 1)
                for k, v in zip(keys.split(), vals.split(":", 1)[1].split()):
                    if f"{proto}{k}" in _NSTAT_KEYS:
                        out.append(f"{proto}{k}={v}")
        return " ".join(out)

    return in_netns(netns, read)


def snapshot(*, netns: str, bridge: str, node_ip: str, port: int, host_link: str) -> str:
    """A multi-line, read-only picture of the host <-> cluster path (see the module docstring)."""
    ip_ = tool("ip")
    parts = [
        f"=== host path snapshot at {time.strftime('%H:%M:%S')}: host -> {node_ip}:{port} via {host_link}, "
        f"cluster netns {netns}\n",
        _item("connect from host", lambda: connect(node_ip, port)),
        _item("connect from inside the cluster netns", lambda: connect(node_ip, port, netns=netns)),
        _item("host: route to the node", lambda: run([ip_, "-4", "route", "get", node_ip])),
        _item("host: neighbours", lambda: run([ip_, "-4", "neigh", "show"])),
        _item("host: sipfleet links", lambda: "\n".join(
            ln for ln in run([ip_, "-br", "link"]).splitlines() if ln.startswith(("sf", "sipfleet")))),
        _item("host: sysctls", lambda: _sysctls(None, ("sf",))),
        _item("host: tcp counters", lambda: _nstat(None)),
        _item("host: nftables tables", lambda: run([tool("nft"), "list", "tables"])),
        _item("cluster: neighbours", lambda: run([ip_, "-4", "neigh", "show"], netns=netns)),
        _item("cluster: links", lambda: run([ip_, "-br", "link"], netns=netns)),
        _item("cluster: addresses", lambda: run([ip_, "-4", "-br", "addr"], netns=netns)),
        _item("cluster: routes", lambda: run([ip_, "-4", "route"], netns=netns)),
        _item(f"cluster: {bridge} learnt MACs", lambda: "\n".join(
            ln for ln in run([tool("bridge"), "fdb", "show", "br", bridge], netns=netns).splitlines()
            if "permanent" not in ln)),
        _item("cluster: sysctls", lambda: _sysctls(netns, ("cbr", "sf", "eth", "lo"))),
        _item("cluster: tcp counters", lambda: _nstat(netns)),
        _item("cluster: listeners on the apiserver port",
              lambda: run([tool("ss"), "-ltnH", f"sport = :{port}"], netns=netns)),
        _item("cluster: nftables tables", lambda: run([tool("nft"), "list", "tables"], netns=netns)),
        _item("kernel: last lines", lambda: "\n".join(run(["dmesg"], timeout=5).splitlines()[-15:])),
    ]
    return "".join(parts)
