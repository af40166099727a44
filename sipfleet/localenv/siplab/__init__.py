"""The SIP lab: three real Kamailio nodes, a scripted registrar and SIPp, each in a network namespace of its own,
with failure injection (Kamailio-level and real network faults), TLS from a CA of its own, and a wire log.

Topology (lab slot ``l`` chosen free at :meth:`SipLab.up`, kept in the state dir; port 5060 UDP and TCP, 5061 TLS)::

    host netns: bridge sfl<l>br 10.213.(200+l).254/24  (+ /32 client addresses .100-.249 for host processes)
      |-- netns sipfleet-l-<lab>-P     eth0 10.213.(200+l).1/16   proxy: loose-routing, stateful, forwards to R
      |-- netns sipfleet-l-<lab>-R     eth0 10.213.(200+l).2/16   registrar: digest auth, Service-Route <E;lr>
      |-- netns sipfleet-l-<lab>-E     eth0 10.213.(200+l).3/16   edge proxy (where a drifted REGISTER goes)
      |-- netns sipfleet-l-<lab>-S     eth0 10.213.(200+l).4/16   scripted registrar: answers as told
      `-- netns sipfleet-l-<lab>-sipp  eth0 10.213.(200+l).10/16 (+ .11-.19)  SIPp

Modules: :mod:`.topology` (namespaces, bridge, client addresses, join), :mod:`.kamailio` (config, processes,
readiness, kamcmd), :mod:`.wire` (the wire log), :mod:`.inject` / :mod:`.faults_api` (Kamailio-level and
network faults, the registrar switch), :mod:`.scripted` / :mod:`.scripted_server` / :mod:`.answers` /
:mod:`.respond` / :mod:`.sipmsg` (the scripted registrar S), :mod:`.tlspki` (CA and certificates),
:mod:`.sipclient` (a raw-socket REGISTER client), :mod:`.users` (digest users, contacts), :mod:`.sipp` /
:mod:`.sipp_results` (SIPp runs), :mod:`.state` (files).

Example::

    with SipLab("demo") as lab:                              # up() ... down()
        lab.add_user("alice", "secret")
        t0 = time.time()
        res = lab.sipp("register", "P", users=[("alice", "secret")], route=f"<{lab.proxy_uri()}>")
        assert res.count(200) == 1
        rec = lab.wait_wire(lambda r: r.node == "R" and r.has_auth, timeout=30, since=t0)
        lab.inject("R", "503")                               # R answers the next REGISTERs with 503
        me = lab.client_address()                            # a /32 on the lab bridge for a host process
        lab.inject("P", f"block:{me}")                       # packets between me and P are dropped
        lab.inject("P", "heal")
        lab.scripted.script("503 retry-after=30", "200 expires=60")  # S: one 503, then 200s
        lab.set_registrar("S")                               # P and E send REGISTERs to S instead of R
        ca = lab.ca_pem(); uri = lab.proxy_uri("tls")        # TLS through P, verified against the lab CA

Processes are started and stopped by PID; the state is enough for another process (``sipfleet lab ...``) to
drive or stop a lab started elsewhere. ``down`` removes every netns, veth, bridge, address and nftables table
the lab created, and nothing else.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .. import hostnet
from . import inject as inj
from . import kamailio, tlspki, users
from .addresses import TLS_CERTS, LabAddresses
from .answers import Answer, AnswerError, Script, parse_answer
from .faults_api import LabFaults
from .model import (HOSTS, INJECT_MODES, NET_FAULTS, NODES, SCRIPTED, SIP_HOSTS, LabError, LabNode, SippResult,
                    WireRecord, node_name, sip_host_name)
from .scripted import ScriptedProc, ScriptedRegistrar, server_config
from .sipp import SippRun, run_sipp, scenario_path, start_sipp, start_uas
from .state import LabState, default_state_root
from .tlspki import LabTlsFiles
from .topology import Topology, net_errors
from .wire import WireLog, parse_wire_line, split_route_header

parse_inject_mode = inj.parse_inject_mode
parse_net_fault = inj.parse_net_fault
render_fault_table = inj.render_fault_table

__all__ = [
    "LabError", "LabNode", "SipLab", "SippResult", "SippRun", "run_sipp", "start_sipp", "WireRecord", "NODES",
    "HOSTS", "SIP_HOSTS", "SCRIPTED", "INJECT_MODES", "NET_FAULTS", "default_state_root", "parse_inject_mode",
    "parse_net_fault", "render_fault_table", "parse_wire_line", "split_route_header", "scenario_path", "Answer",
    "AnswerError", "Script", "parse_answer", "TLS_CERTS",
]


class SipLab(LabAddresses, LabFaults, LabTlsFiles):
    """P/R/E Kamailio nodes, the scripted registrar S and a SIPp host, each in its own netns. See the module
    docstring."""

    def __init__(
        self,
        name: str = "default",
        state_dir: str | os.PathLike[str] | None = None,
        *,
        slot: int | None = None,
        port: int = 5060,
        domain: str = "lab.sipfleet.test",
        shm_mb: int | None = None,
        children: int = 4,
        tcp_children: int = 2,
        proxy_fr_timer_ms: int = 8000,
        wire_log: bool = True,
        die_with_parent: bool = False,
        service_route_transport: str = "auto",
        tls: bool | None = None,
    ) -> None:
        self.name = name
        self.state_dir = Path(state_dir) if state_dir else default_state_root() / "labs" / name
        self.state = LabState(self.state_dir)
        self.topology = Topology(name, self.state)
        self.requested_slot = slot
        self.port = int(port)
        self.domain = domain
        self.shm_mb = int(shm_mb or os.environ.get("SIPFLEET_LAB_SHM_MB", "128"))
        self.children = int(children)
        self.tcp_children = int(tcp_children)
        self.proxy_fr_timer_ms = int(proxy_fr_timer_ms)
        self.wire_log = bool(wire_log)
        # Kamailio gets SIGTERM when this process dies (test sessions); only for nodes started on the main thread
        self.die_with_parent = bool(die_with_parent)
        # "auto": R's Service-Route is edge_uri(<the client's transport at P or E>); "udp"/"tcp": always that one
        if service_route_transport not in ("auto", "udp", "tcp"):
            raise LabError("service_route_transport must be auto, udp or tcp")
        self.service_route_transport = service_route_transport
        # TLS listeners on the Kamailio nodes (None: when Debian's kamailio-tls-modules is installed); S always
        self.tls_enabled = kamailio.has_tls_module() if tls is None else bool(tls)
        self._nodes = kamailio.NodeProcs(self.state)
        self._scripted = ScriptedProc(self.state)
        self.scripted = ScriptedRegistrar(self)
        self._wire = WireLog(self.log_path)
        self._inj = inj.Injector(self.state, self.topology.owned, self.netns)

    def sipp_ip(self, index: int = 0) -> str:
        """SIPp host address ``index`` (0..9: ``.10``-``.19`` in the SIPp netns, added on first use)."""
        with self.state.locked():
            return self.topology.sipp_ip(index)

    def sipp_index(self, ip: str) -> int:
        if ip not in self.topology.sipp_ips():
            raise LabError(f"SIPp runs from {', '.join(self.topology.sipp_ips()[:2])} ... (the SIPp host), not {ip}")
        return self.topology.sipp_ips().index(ip)

    def free_port(self, ip: str) -> int:
        """A UDP+TCP port free on SIPp address ``ip`` (inside the SIPp netns)."""
        with net_errors():
            return hostnet.free_port(ip, self.netns("sipp"))

    def client_address(self) -> str:
        """A fresh address for one host process (a /32 on the lab bridge; it reaches every lab host)."""
        with self.state.locked():
            return self.topology.client_address()

    def release_client_address(self, ip: str) -> None:
        with self.state.locked():
            self.topology.release_client_address(ip)

    def join(self, cluster_netns: str, cluster_slot: int, cluster_bridge: str = "cbr0") -> str:
        """Join this lab's bridge and a cluster's ``cbr0`` at L2 (pods reach the lab hosts); the link's name."""
        with self.state.locked():
            return self.topology.join(cluster_netns, cluster_slot, cluster_bridge)

    def unjoin(self, cluster_slot: int) -> bool:
        with self.state.locked():
            return self.topology.unjoin(cluster_slot)

    # ---------------------------------------------------------------- paths
    @property
    def logs_dir(self) -> Path:
        return self.state.logs_dir

    def log_path(self, node: str) -> Path:
        return self.state.log_path(sip_host_name(node))

    def cfg_path(self, node: str) -> Path:
        return self.state.cfg_path(node_name(node))

    def ctl_socket(self, node: str) -> Path:
        return self.state.ctl_socket(node_name(node))

    # ---------------------------------------------------------------- lifecycle
    def node(self, name: str) -> LabNode:
        """P, R, E (Kamailio) or S (the scripted registrar)."""
        n = sip_host_name(name)
        rec = self._scripted.record() if n == SCRIPTED else self._nodes.record(n)
        ip = self.ip(n) if (self.slot or self.topology.last_slot) else ""
        return LabNode(name=n, ip=ip, port=self.port, pid=rec.pid if rec else None, running=rec is not None,
                       netns=self.netns(n))

    def nodes(self) -> list[LabNode]:
        """The Kamailio nodes (S: ``node("S")``)."""
        return [self.node(n) for n in NODES]

    def is_up(self) -> bool:
        return all(self.node(n).running for n in SIP_HOSTS)

    def up(self, timeout: float = 60.0) -> "SipLab":
        """Build the network if needed and start every node that is not running (idempotent); returns when all
        answer SIP and ctl."""
        with self.state.locked():
            if not self.topology.is_built():
                for n in reversed(NODES):  # processes recorded for a network that is gone
                    self._nodes.stop(n)
                self._teardown_net()
                with net_errors():
                    self.topology.build(self.requested_slot)
            running = {n: self.node(n).running for n in SIP_HOSTS}
            if not any(running.values()):
                # fresh start: new logs (new inodes, so readers elsewhere start over), nothing injected or scripted
                self._inj.reset()
                for f in ("onward.json", "scripted-script.json"):
                    self.state.remove(f)
                self.logs_dir.mkdir(parents=True, exist_ok=True)
                for n in SIP_HOSTS:
                    self.log_path(n).unlink(missing_ok=True)
                    self.log_path(n).touch()
                self._wire.clear()
            tlspki.ensure(self.tls.dir, {h: self.ip(h) for h in SIP_HOSTS}, self.domain)
            net = self.topology.net
            self.state.write_json("lab.json", {
                "name": self.name, "slot": net.slot, "subnet": net.prefix, "bridge": net.bridge,
                "port": self.port, "domain": self.domain, "nodes": {n: self.hostport(n) for n in NODES},
                "netns": {h: self.netns(h) for h in HOSTS}, "proxy_uri": self.proxy_uri(),
                "registrar_uri": self.registrar_uri(), "edge_uri": self.edge_uri(),
                "scripted_uri": self.scripted.uri(), "tls": self._tls_status(),
            })
            for n in SIP_HOSTS:
                if not running[n]:
                    self._start_locked(n, timeout)
        return self

    def down(self) -> None:
        """Stop every node by its recorded PID, then remove the lab's whole network (LabError if anything it
        created could not be removed; what is left stays recorded for the next ``down``)."""
        with self.state.locked():
            self._scripted.stop()
            for n in reversed(NODES):
                self._nodes.stop(n)
            problems = self._teardown_net()
            if not problems:  # the network faults went with the namespaces
                self.state.remove(inj.FAULTS_FILE)
            self.state.remove(inj.LINK_ROUTES_FILE)  # routes of pods' links set down through this lab
        if problems:
            raise LabError(f"lab {self.name} down left: " + "; ".join(problems))

    def _teardown_net(self) -> list[str]:
        with net_errors():
            return self.topology.teardown()

    def start_node(self, name: str, timeout: float = 60.0) -> LabNode:
        """Start P, R, E or S again on the same address (nothing if it runs)."""
        n = sip_host_name(name)
        with self.state.locked():
            if not self.node(n).running:
                self._start_locked(n, timeout)
        return self.node(n)

    def stop_node(self, name: str, hard: bool = False) -> None:
        """Stop one node by PID: SIGTERM (Kamailio shuts down its workers), or with ``hard`` SIGKILL to all
        of the node's processes at once (a crash: sockets closed by the kernel)."""
        n = sip_host_name(name)
        with self.state.locked():
            if n == SCRIPTED:
                self._scripted.stop(hard=hard)
            else:
                self._nodes.stop(n, hard=hard)

    def restart_node(self, name: str, timeout: float = 60.0) -> LabNode:
        self.stop_node(name)
        return self.start_node(name, timeout=timeout)

    def __enter__(self) -> "SipLab":
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    def status(self) -> dict[str, Any]:
        kam = self._inj.modes()
        faults = self.net_faults()
        slot = self.slot
        nodes = {}
        for ln in self.nodes():
            nodes[ln.name] = {"ip": ln.ip, "port": ln.port, "address": ln.hostport if slot else "", "pid": ln.pid,
                              "running": ln.running, "inject": kam.get(ln.name, "normal"), "netns": ln.netns,
                              "faults": faults.get(ln.name), "log": str(self.log_path(ln.name)),
                              "ctl": str(self.ctl_socket(ln.name))}
        return {
            "name": self.name, "slot": slot, "subnet": self.subnet if slot else None,
            "bridge": self.bridge if slot else None, "state_dir": str(self.state_dir), "domain": self.domain,
            "up": all(v["running"] for v in nodes.values()),
            "proxy_uri": self.proxy_uri() if slot else None, "registrar_uri": self.registrar_uri() if slot else None,
            "edge_uri": self.edge_uri() if slot else None, "users": sorted(users.load(self.state)),
            "clients": self.topology.client_addresses(), "sipp": {"netns": self.netns("sipp"),
                                                                 "faults": faults.get("sipp")},
            "nodes": nodes, "registrar": self.registrar(), "tls": self._tls_status() if slot else None,
            "scripted": self._scripted_status(faults) if slot else None,
        }

    def _tls_status(self) -> dict[str, Any]:
        return {"kamailio": self.tls_enabled, "port": self.tls_port, "ca": str(self.tls.ca_crt),
                "wrong_ca": str(self.tls.wrong_ca_crt), "proxy_uri": self.proxy_uri("tls"),
                "names": {h: self.tls_name(h) for h in SIP_HOSTS},
                "bad_proxy_uris": {c: self.proxy_uri("tls", c) for c in TLS_CERTS if c != "good"}}

    def _scripted_status(self, faults: dict[str, Any]) -> dict[str, Any]:
        s = self.node(SCRIPTED)
        return {"ip": s.ip, "address": s.hostport, "pid": s.pid, "running": s.running, "netns": s.netns,
                "uri": self.scripted.uri(), "log": str(self.log_path(SCRIPTED)), "faults": faults.get(SCRIPTED),
                "script": [a.to_text() for a in self.scripted.current().steps],
                "scope": self.scripted.current().scope}

    # ---------------------------------------------------------------- Kamailio processes
    def _render_cfg(self, node: str) -> str:
        mode, delay_us = inj.parse_inject_mode(self._inj.modes()[node])
        fixed = "udp" if self.service_route_transport == "auto" else self.service_route_transport
        tls_cfg = self.state.path(f"{node}-tls.cfg")
        if self.tls_enabled:
            self.state.write_secret(tls_cfg, tlspki.kamailio_tls_cfg(node, self.ip(node), self.tls_port, self.tls))
        params = {
            "NODE": node, "IP": self.ip(node), "PORT": str(self.port), "DOMAIN": self.domain,
            "CTL": str(self.ctl_socket(node)), "MODE": mode, "DELAY_US": str(delay_us),
            "WIRE": "1" if self.wire_log else "0", "CHILDREN": str(self.children),
            "TCP_CHILDREN": str(self.tcp_children), "FR_TIMER_MS": str(self.proxy_fr_timer_ms),
            "MPATH": kamailio.kamailio_mpath(), "REGISTRAR_URI": f"sip:{self.ip('R')}:{self.port}",
            "EDGE_URI": self.edge_uri(), "EDGE_URI_TCP": self.edge_uri("tcp"), "EDGE_URI_FIXED": self.edge_uri(fixed),
            "USERS_INIT": kamailio.users_init(users.load(self.state)),
            "TLS_PORT": str(self.tls_port), "TLS_PORT_WRONG_NAME": str(self.port + TLS_CERTS["wrong-name"]),
            "TLS_PORT_WRONG_CA": str(self.port + TLS_CERTS["wrong-ca"]), "TLS_CFG": str(tls_cfg),
            "EDGE_URI_TLS": self.edge_uri("tls"), "ONWARD_URI": self.registrar_uri(node=self.registrar()),
            "R_IP": self.ip("R"),
        }
        return kamailio.render_cfg(kamailio.CFG_TEMPLATE.read_text(), node, params, registrar=node == "R",
                                   service_route_auto=self.service_route_transport == "auto",
                                   defines=("WITH_TLS",) if self.tls_enabled else ())

    def _start_locked(self, node: str, timeout: float) -> None:
        with net_errors():
            if node == SCRIPTED:
                t = self.tls
                cfg = server_config(self, (str(t.crt(SCRIPTED)), str(t.key(SCRIPTED)), str(t.ca_crt)))
                self._scripted.start(cfg, self.netns(node), self.topology.net.bridge_ip,
                                     die_with_parent=self.die_with_parent, timeout=timeout)
                return
            self._nodes.start(node, self._render_cfg(node), self.netns(node), self.ip(node), self.port,
                              self.topology.net.bridge_ip, shm_mb=self.shm_mb, die_with_parent=self.die_with_parent,
                              timeout=timeout, tls_port=self.tls_port if self.tls_enabled else None)

    def _running_ctl(self, node: str) -> Path | None:
        return self.ctl_socket(node) if self._nodes.record(node) is not None else None

    def kamcmd(self, node: str, *args: str, timeout: float = 10.0) -> str:
        """Run one kamcmd RPC against a node's ctl socket; returns stdout, raises LabError on failure."""
        n = node_name(node)
        return kamailio.kamcmd(self.ctl_socket(n), n, *args, timeout=timeout)

    # ---------------------------------------------------------------- users
    def add_user(self, username: str, password: str) -> None:
        """Add or change digest credentials at R (realm = domain); effective at once, kept across restarts."""
        self.add_users([(username, password)])

    def add_users(self, creds: Iterable[tuple[str, str]]) -> None:
        """:meth:`add_user` for many users at once (one state write, one kamcmd run)."""
        entries = users.hashed_entries(creds, self.domain)
        if entries:
            with self.state.locked():
                users.save_and_push(self.state, entries, self._running_ctl("R"))

    def remove_user(self, username: str) -> None:
        self.remove_users([username])

    def remove_users(self, usernames: Iterable[str]) -> None:
        """Forget digest users at R (and in the lab's state: R's config holds every user it knows at start)."""
        with self.state.locked():
            users.remove(self.state, usernames, self._running_ctl("R"))

    def contacts(self, username: str) -> list[str]:
        """The contacts R currently holds for ``username`` (empty if none)."""
        return users.contacts(self.ctl_socket("R"), username)

    # ---------------------------------------------------------------- wire log
    def wire(self, since: float | None = None, node: str | None = None, method: str | None = None,
             call_id: str | None = None) -> list[WireRecord]:
        """Requests the nodes received, oldest first (``since`` is an epoch time, inclusive)."""
        return self._wire.wire(since=since, node=node, method=method, call_id=call_id)

    def wait_wire(self, predicate: Callable[[WireRecord], bool], timeout: float = 30.0, *, since: float | None = None,
                  node: str | None = None, method: str | None = None, interval: float = 0.1) -> WireRecord:
        """The first (oldest) record matching ``predicate``, polling until ``timeout`` (TimeoutError)."""
        return self._wire.wait(predicate, timeout, since=since, node=node, method=method, interval=interval)

    def follow_wire(self, node: str | None = None, interval: float = 0.2) -> Iterator[WireRecord]:
        """Yield records as they arrive (for ``sipfleet lab wire --follow``)."""
        return self._wire.follow(node=node, interval=interval)

    # ---------------------------------------------------------------- SIPp
    def sipp(self, scenario: str, target: str, **kw: Any) -> SippResult:
        """Run SIPp once from the SIPp host, bounded in calls (``calls``) and time (``timeout`` s, then killed).

        ``scenario``: ``register`` (digest auth, users from ``users``), ``unregister``, ``uac_call``, or a path.
        ``target``: a node name (P, R, E, S), ``ip:port`` or a SIP URI (first hop). ``route``: a ``Route:`` value or None.
        ``ruri``: the Request-URI (default: R for REGISTER, the target for calls). ``local_ip``: one of the SIPp
        addresses (:meth:`sipp_ip`). Other keywords: see :func:`.sipp.start_sipp`.
        """
        return run_sipp(self, scenario, target, **kw)

    def sipp_start(self, scenario: str, target: str | None, **kw: Any) -> SippRun:
        """Like :meth:`sipp` but returns the running :class:`SippRun` (``.wait()`` / ``.stop()``)."""
        return start_sipp(self, scenario, target, **kw)

    def sipp_uas(self, local_ip: str, local_port: int, *, calls: int = 1, timeout: float = 60.0,
                 transport: str = "udp", **kw: Any) -> SippRun:
        """Start a SIPp UAS (100/180/200 to INVITE, ACK, 200 to BYE) on SIPp address ``local_ip:local_port``;
        returns once it holds the port. It ends after ``calls`` calls or ``timeout`` seconds."""
        with net_errors():
            return start_uas(self, local_ip, local_port, calls=calls, timeout=timeout, transport=transport, **kw)
