"""Failure injection and the registrar switch, as :class:`SipLab` methods (a mixin; the work is in :mod:`.inject`).

Kamailio-level modes (P, R, E), network faults (P, R, E, S, sipp), link faults in netns the lab does not own,
and :meth:`LabFaults.set_registrar`: whether P and E send REGISTERs meant for R (Request-URI the lab domain or
R's address) to R or to the scripted registrar S (``onward.json``; switched at run time with ``kamcmd
pv.shvSet``, kept across node restarts until the next fresh ``up``). S's own answers are scripted with ``lab.scripted.script(...)``, not injected.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import inject as inj
from .model import NODES, SCRIPTED, LabError, host_name, node_name, sip_host_name
from .topology import net_errors

if TYPE_CHECKING:
    from .scripted import ScriptedRegistrar
    from .state import LabState

ONWARD_FILE = "onward.json"
ONWARD_NODES = ("P", "E")  # the proxies that pick the registrar for REGISTERs to the lab domain


class LabFaults:
    """Needs ``state``, ``_inj``, ``scripted``, ``netns``, ``registrar_uri``, ``node``, ``kamcmd`` and
    ``_running_ctl`` on the instance."""

    state: "LabState"
    _inj: inj.Injector
    scripted: "ScriptedRegistrar"

    def inject(self, target: str, mode: str) -> None:
        """Inject a failure at lab node/host ``target``.

        Kamailio-level (P, R, E; how the node handles REGISTER): ``normal | 408 | 503 | blackhole | delay:<ms>``;
        takes effect at once and survives stop_node/start_node (until the next fresh up()).
        Network-level (P, R, E, S, sipp; real packets): ``partition | block:<ip> | loss:<percent>:<ip> |
        link-down | link-up | heal``; see :mod:`.inject`.
        """
        fault = inj.parse_net_fault(mode)
        if fault is None and str(target).strip().upper() == SCRIPTED:
            raise LabError("S answers as scripted: lab.scripted.script(...) / `sipfleet lab script` (network "
                           "faults apply to S as to any host)")
        with self.state.locked(), net_errors():
            if fault is not None:
                self._inj.apply(host_name(target), fault)
            else:
                n = node_name(target)
                self._inj.set_mode(n, mode, self._running_ctl(n))

    def injection(self, node: str) -> str:
        """The node's Kamailio-level mode."""
        return self._inj.modes()[node_name(node)]

    def net_faults(self) -> dict[str, dict[str, Any]]:
        """Network faults in force, per lab host (hosts without any are left out)."""
        return self._inj.faults()

    def partition(self, host: str) -> None:
        """Drop every packet in and out of lab host ``host`` (until :meth:`heal`)."""
        self.inject(host, "partition")

    def block(self, host: str, address: str, loss: int = 100) -> None:
        """Drop ``loss`` percent (100: all) of the packets between ``address`` and lab host ``host``."""
        self.inject(host, f"loss:{int(loss)}:{address}")

    def heal(self, host: str | None = None) -> None:
        """Remove every network fault from ``host`` (default: from every lab host that has one)."""
        for h in [host] if host else list(self.net_faults()):
            self.inject(h, "heal")

    def fault_counters(self, host: str) -> dict[str, int]:
        """Packets the host's fault rules dropped so far, per chain (``input``, ``output``)."""
        with net_errors():
            return inj.fault_counters(self.netns(host_name(host)))  # type: ignore[attr-defined]

    def link_down(self, *, netns: str | None = None, pid: int | None = None, dev: str = "eth0") -> list[str]:
        """Set ``dev`` down inside a netns the lab does not own (a pod's): ``netns`` (a name or a path) or the
        netns of process ``pid``; returns the routes it flushes, which :meth:`link_up` re-adds. Lab hosts:
        ``inject(host, "link-down")``."""
        with self.state.locked():
            return inj.set_link(inj.resolve_netns(netns, pid), dev, False, self.state)

    def link_up(self, *, netns: str | None = None, pid: int | None = None, dev: str = "eth0") -> list[str]:
        """Set ``dev`` up again and re-add the routes :meth:`link_down` recorded; returns them."""
        with self.state.locked():
            return inj.set_link(inj.resolve_netns(netns, pid), dev, True, self.state)

    # ---------------------------------------------------------------- which registrar P and E use
    def registrar(self) -> str:
        """Where P and E send REGISTERs meant for R: ``R`` (the default) or ``S``."""
        return self.state.read_json(ONWARD_FILE, {}).get("registrar", "R")

    def set_registrar(self, node: str) -> None:
        """Make P and E send REGISTERs meant for R (Request-URI the lab domain or R's address) to ``node``
        (``R`` or ``S``), at once; other requests are not affected."""
        n = sip_host_name(node)
        if n not in ("R", SCRIPTED):
            raise LabError("the registrar behind P and E is R or S")
        with self.state.locked():
            self.state.write_json(ONWARD_FILE, {"registrar": n})
            uri = self.registrar_uri(node=n)  # type: ignore[attr-defined]
            for p in ONWARD_NODES:
                ctl: Path | None = self._running_ctl(p)  # type: ignore[attr-defined]
                if ctl is not None:
                    self.kamcmd(p, "pv.shvSet", "registrar", "str", f"s:{uri}")  # type: ignore[attr-defined]

    def reset_injections(self) -> None:
        """Every node back to ``normal``, every network fault healed, P and E registering at R, S's script back
        to its default (200 to every REGISTER)."""
        for n, mode in self._inj.modes().items():
            if mode != "normal":
                self.inject(n, "normal")
        self.heal()
        if self.registrar() != "R":
            self.set_registrar("R")
        self.scripted.reset()

    def set_wire_log(self, enabled: bool) -> None:
        """Switch the wire log on or off at run time on every running node and S (e.g. for load benchmarks)."""
        self.wire_log = bool(enabled)
        for n in NODES:
            if self.node(n).running:  # type: ignore[attr-defined]
                self.kamcmd(n, "pv.shvSet", "wire", "int", "1" if enabled else "0")  # type: ignore[attr-defined]
        self.scripted.set_wire_log(enabled)
