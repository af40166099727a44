"""Failure injection: Kamailio-level (how a node answers REGISTER) and network-level (real packet loss).

Kamailio-level, per node, switched at run time with ``kamcmd pv.shvSet`` (``inject.json``): ``normal``,
``408`` / ``503`` (answered by that node), ``blackhole`` (REGISTER dropped by Kamailio after it was received and
logged), ``delay:<ms>`` (held, then handled; the only way to add latency: this kernel has no netem).

Network-level, per lab host (P, R, E, sipp), as nftables rules in a table of our own (``inet sipfleet_fault``)
inside that host's netns (``faults.json``; the table goes with the netns):

- ``partition``: every packet in and out of the host is dropped (loopback excepted);
- ``block:<ip>``: every packet between ``<ip>`` and the host is dropped (both directions);
- ``loss:<percent>:<ip>``: that share of packets between ``<ip>`` and the host is dropped, at random, each
  direction on its own (nftables ``numgen random``);
- ``link-down`` / ``link-up``: the host's ``eth0`` set down / up;
- ``heal``: all of the above removed from the host (table deleted, ``eth0`` up).

A dropped packet never reaches Kamailio, so it is not in the wire log. Link down/up also works on a network
namespace the lab does not own (an agent pod's: a path, or a PID whose netns to enter): see :func:`set_link`;
the routes a link-down flushes there (a pod's route to the Services) come back with the link-up.
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .. import hostnet
from ..hostnet import plan
from .kamailio import kamcmd
from .model import INJECT_MODES, NET_FAULTS, NODES, LabError
from .state import LabState

FAULT_TABLE = ("inet", "sipfleet_fault")
FAULTS_FILE = "faults.json"
LINK_ROUTES_FILE = "link-routes.json"


# ---------------------------------------------------------------------------------------------- Kamailio-level


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
    raise LabError(f"unknown inject mode {mode!r}; one of {', '.join(INJECT_MODES + NET_FAULTS)}")


def format_inject_mode(cfg_mode: str, delay_us: int) -> str:
    if cfg_mode == "delay":
        return f"delay:{delay_us // 1000}"
    return cfg_mode


def kamailio_rpcs(cfg_mode: str, delay_us: int) -> list[list[str]]:
    """The kamcmd calls that switch a running node to a mode."""
    return [["pv.shvSet", "delay_us", "int", str(delay_us)], ["pv.shvSet", "mode", "str", f"s:{cfg_mode}"]]


# ---------------------------------------------------------------------------------------------- network-level


@dataclass(frozen=True)
class NetFault:
    kind: str  # partition | block | heal | link-down | link-up
    address: str | None = None
    percent: int = 100


def _address(text: str, mode: str) -> str:
    try:
        a = ipaddress.ip_address(text.strip())
    except ValueError:
        raise LabError(f"bad address in {mode!r}: want an IPv4 address of the sipfleet network") from None
    if a.version != 4 or not plan.in_plan(str(a)):
        raise LabError(f"{a} in {mode!r} is not in the sipfleet network {plan.NETWORK}")
    return str(a)


def parse_net_fault(mode: str) -> NetFault | None:
    """A network fault mode -> :class:`NetFault`; None when ``mode`` is not a network fault (pure)."""
    m = str(mode).strip().lower()
    if m in ("partition", "heal", "link-down", "link-up"):
        return NetFault(m)
    if m.startswith("block:"):
        return NetFault("block", _address(m.split(":", 1)[1], mode))
    if m.startswith("loss:"):
        parts = m.split(":")
        if len(parts) != 3:
            raise LabError(f"bad loss mode {mode!r}: want loss:<percent>:<ip>")
        try:
            pct = int(parts[1])
        except ValueError:
            raise LabError(f"bad percentage in {mode!r}") from None
        if not 1 <= pct <= 100:
            raise LabError(f"loss percentage out of range in {mode!r} (1..100)")
        return NetFault("block", _address(parts[2], mode), pct)
    return None


def empty_host_faults() -> dict[str, Any]:
    return {"partition": False, "drops": {}, "link_down": False}


def apply_fault(host_faults: dict[str, Any] | None, fault: NetFault) -> dict[str, Any]:
    """The host's fault state after ``fault`` (pure)."""
    cur = empty_host_faults() if host_faults is None else {**host_faults, "drops": dict(host_faults.get("drops", {}))}
    if fault.kind == "heal":
        return empty_host_faults()
    if fault.kind == "partition":
        cur["partition"] = True
    elif fault.kind == "block":
        cur["drops"][str(fault.address)] = int(fault.percent)
    elif fault.kind in ("link-down", "link-up"):
        cur["link_down"] = fault.kind == "link-down"
    return cur


def is_clean(host_faults: dict[str, Any] | None) -> bool:
    return host_faults is None or host_faults == empty_host_faults() or (
        not host_faults.get("partition") and not host_faults.get("drops") and not host_faults.get("link_down"))


def _drop(match: str, percent: int) -> str:
    rnd = "" if percent >= 100 else f" numgen random mod 100 < {int(percent)}"
    return f"\t\t{match}{rnd} counter drop\n"


def render_fault_table(host_faults: dict[str, Any] | None) -> str | None:
    """The nft script that makes the fault table match ``host_faults`` (replacing any earlier one), or None
    when the host has no packet faults and the table is to be deleted (pure)."""
    hf = host_faults or empty_host_faults()
    drops = {str(ipaddress.ip_address(a)): int(p) for a, p in sorted(hf.get("drops", {}).items())}
    if not hf.get("partition") and not drops:
        return None
    family, name = FAULT_TABLE
    chains = []
    for chain, lo, direction in (("input", "iifname", "saddr"), ("output", "oifname", "daddr")):
        body = f'\t\ttype filter hook {chain} priority -10; policy accept;\n\t\t{lo} "lo" accept\n'
        if hf.get("partition"):
            body += "\t\tcounter drop\n"
        for addr, pct in drops.items():
            body += _drop(f"ip {direction} {addr}", pct)
        chains.append(f"\tchain {chain} {{\n{body}\t}}\n")
    return (f"table {family} {name}\ndelete table {family} {name}\n"
            f"table {family} {name} {{\n{''.join(chains)}}}\n")


def push_faults(owned: hostnet.Owned, netns: str, host_faults: dict[str, Any] | None) -> None:
    """Make the host's netns match ``host_faults``: the nft table, and eth0's state."""
    script = render_fault_table(host_faults)
    family, name = FAULT_TABLE
    if script is None:
        owned.drop_nft_table(family, name, netns=netns)
        if (family, name) in hostnet.nft_tables(netns):  # left by an earlier record
            hostnet.nft_delete_table(family, name, netns=netns)
    else:
        owned.nft_table(family, name, script, netns=netns)
    want_up = not (host_faults or {}).get("link_down")
    if hostnet.link_is_up("eth0", netns) != want_up:
        hostnet.link_set_state("eth0", want_up, netns=netns)


def fault_counters(netns: str) -> dict[str, int]:
    """Packets dropped so far by the host's fault table, per chain (empty when there is none)."""
    family, name = FAULT_TABLE
    if (family, name) not in hostnet.nft_tables(netns):
        return {}
    data = json.loads(hostnet.run([hostnet.tool("nft"), "-j", "list", "table", family, name], netns=netns))
    out: dict[str, int] = {}
    for item in data.get("nftables", []):
        rule = item.get("rule")
        if not rule:
            continue
        for expr in rule.get("expr", []):
            if "counter" in expr:
                out[rule["chain"]] = out.get(rule["chain"], 0) + int(expr["counter"].get("packets", 0))
    return out


def resolve_netns(netns: str | None = None, pid: int | None = None) -> str:
    """A netns to enter for a link fault: a path or a name as given, or the netns of process ``pid``."""
    if (netns is None) == (pid is None):
        raise LabError("give exactly one of netns (a name or a path such as /proc/<pid>/ns/net) and pid")
    try:
        return hostnet.pid_netns(pid) if pid is not None else hostnet.netns_path(str(netns))
    except hostnet.HostNetError as e:
        raise LabError(str(e)) from None


def restorable_routes(routes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The routes (``ip -j route show dev <dev>``) that a link-down flushes and a link-up does not bring back:
    all but the kernel's own on-link prefixes (e.g. a pod's route to the Services, set up by its CNI). Pure."""
    return [r for r in routes if r.get("protocol") != "kernel" and r.get("dst")]


def route_args(route: dict[str, Any], dev: str) -> list[str]:
    """``ip route replace`` arguments that re-create ``route`` (as ``ip -j`` shows it) on ``dev``. Pure."""
    args = [route["dst"]]
    if route.get("gateway"):
        args += ["via", route["gateway"]]
    args += ["dev", dev]
    for key, word in (("protocol", "proto"), ("scope", "scope"), ("prefsrc", "src"), ("metric", "metric")):
        if route.get(key) not in (None, ""):
            args += [word, str(route[key])]
    return args


def _link_key(netns: str, dev: str) -> str:
    """A netns is identified by its nsfs inode (the same for its name, a PID's path, a bind mount)."""
    try:
        return f"{os.stat(hostnet.netns_path(netns)).st_ino}:{dev}"
    except OSError as e:
        raise LabError(f"network namespace {netns}: {e.strerror}") from None


def set_link(netns: str, dev: str, up: bool, state: LabState | None = None) -> list[str]:
    """``ip link set <dev> up|down`` inside ``netns`` (entered only; a pod's netns is never changed otherwise).

    With ``state``, the routes via ``dev`` that going down flushes (:func:`restorable_routes`) are recorded
    (``link-routes.json``) and re-added when the link comes up again: a pod keeps, e.g., its route to the
    Services across a flap. Returns those routes (``ip route`` syntax)."""
    try:
        if state is None:
            hostnet.link_set_state(dev, up, netns=netns)
            return []
        key = _link_key(netns, dev)
        saved = state.read_json(LINK_ROUTES_FILE, {})
        if not up:
            if key not in saved:  # a second down keeps the routes of the first
                saved[key] = restorable_routes(hostnet.ip_json("-4", "route", "show", "dev", dev, netns=netns))
                state.write_json(LINK_ROUTES_FILE, saved)
            hostnet.link_set_state(dev, False, netns=netns)
            return [" ".join(route_args(r, dev)) for r in saved[key]]
        hostnet.link_set_state(dev, True, netns=netns)
        routes = saved.pop(key, [])
        for r in routes:
            hostnet.ip("route", "replace", *route_args(r, dev), netns=netns)
        state.write_json(LINK_ROUTES_FILE, saved)
        return [" ".join(route_args(r, dev)) for r in routes]
    except hostnet.HostNetError as e:
        raise LabError(str(e)) from None


# ---------------------------------------------------------------------------------------------- the lab's state


class Injector:
    """A lab's injections: Kamailio modes (``inject.json``, pushed to running nodes over their ctl socket) and
    network faults (``faults.json``, pushed into the hosts' netns). Callers hold the lab's lock."""

    MODES_FILE = "inject.json"

    def __init__(self, state: LabState, owned: hostnet.Owned, netns_of: Callable[[str], str]) -> None:
        self.state = state
        self.owned = owned
        self.netns_of = netns_of

    def reset(self) -> None:
        """A fresh lab: every node ``normal``, no network fault recorded."""
        self.state.write_json(self.MODES_FILE, {n: "normal" for n in NODES})
        self.state.remove(FAULTS_FILE)

    def modes(self) -> dict[str, str]:
        data = self.state.read_json(self.MODES_FILE, {})
        return {n: data.get(n, "normal") for n in NODES}

    def set_mode(self, node: str, mode: str, ctl: Path | None) -> None:
        """Record ``node``'s Kamailio-level mode and switch the node when it runs (``ctl`` given)."""
        cfg_mode, delay_us = parse_inject_mode(mode)
        modes = self.modes()
        modes[node] = format_inject_mode(cfg_mode, delay_us)
        self.state.write_json(self.MODES_FILE, modes)
        if ctl is not None:
            for rpc in kamailio_rpcs(cfg_mode, delay_us):
                kamcmd(ctl, node, *rpc)

    def faults(self) -> dict[str, dict[str, Any]]:
        """Network faults in force, per lab host (hosts without any are left out)."""
        return {h: f for h, f in self.state.read_json(FAULTS_FILE, {}).items() if not is_clean(f)}

    def apply(self, host: str, fault: NetFault) -> None:
        """Apply ``fault`` to lab host ``host``: its netns first, then the record."""
        data = self.state.read_json(FAULTS_FILE, {})
        new = apply_fault(data.get(host), fault)
        push_faults(self.owned, self.netns_of(host), new)
        data[host] = new
        self.state.write_json(FAULTS_FILE, {h: f for h, f in data.items() if not is_clean(f)})
