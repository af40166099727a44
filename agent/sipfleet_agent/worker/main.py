"""A worker process: reads protocol messages from the supervisor's pipe, drives one pjsua2 Endpoint
(:class:`~sipfleet_agent.worker.engine.Agent`) and writes Hello, Heartbeat, Status and Reply messages back.

Promise: the heartbeat is sent from the Endpoint's event thread (a stuck event loop stops it); end of input (the
supervisor is gone) or :class:`~sipfleet_agent.protocol.Stop` un-REGISTERs every account and exits; SIGINT is
ignored (the supervisor decides), SIGTERM stops like Stop. Run as ``python -m sipfleet_agent.worker.main
--fd N`` (a socket inherited from the supervisor) or through :func:`serve`, forked by the zygote
(:mod:`sipfleet_agent.worker.zygote`).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import Any, TextIO

from sipfleet.api.models import AgentAccount, AgentSettings

from .. import __version__, logs
from .. import protocol as p
from ..config import ResolvedAccount, Secretish
from ..siplog import with_transport
from ..tlsmaterial import TlsMaterial
from .engine import Agent

LOG = logging.getLogger("sipfleet_agent.worker")


class Channel:
    """Writes messages to the supervisor; safe from any thread; a closed pipe is ignored (we are being stopped)."""

    def __init__(self, out: TextIO):
        self.out = out
        self.lock = threading.Lock()
        self.closed = False

    def send(self, msg: p.Message) -> None:
        line = p.encode(msg)
        with self.lock:
            if self.closed:
                return
            try:
                self.out.write(line)
                self.out.flush()
            except (BrokenPipeError, OSError, ValueError):
                self.closed = True


#: heartbeats carrying the worker's metric families: the first, then one in this many
METRICS_EVERY = 10

def resolve(a: p.WireAccount) -> ResolvedAccount:
    return ResolvedAccount(AgentAccount.model_validate(a.spec), Secretish(a.username, a.password, a.realm),
                           a.expires_override, TlsMaterial.from_wire(a.tls) if a.tls else None)


def metric_families(registry: Any) -> list:
    out = []
    for fam in registry.collect():
        samples = [[s.name, s.labels, s.value] for s in fam.samples if not s.name.endswith("_created")]
        out.append([fam.name, fam.type, fam.documentation, samples])
    return out


def serve(fd_in: int, fd_out: int) -> int:
    """Run one worker on the two pipe ends; returns the exit code."""
    rd = os.fdopen(fd_in, "r", encoding="utf-8")
    ch = Channel(os.fdopen(fd_out, "w", encoding="utf-8", buffering=1, closefd=True))
    first = rd.readline()
    if not first:
        return 1
    init = p.decode(first)
    if not isinstance(init, p.Init):
        LOG.error("first message must be init, got %s", type(init).__name__)
        return 2
    settings = AgentSettings.model_validate(init.settings)
    if settings.sip_port:
        settings = settings.model_copy(update={"sip_port": settings.sip_port + init.worker})
    fallback = settings
    if init.sip_port:
        settings = settings.model_copy(update={"sip_port": init.sip_port})

    def sink(key: tuple, name: str, doc: dict) -> None:
        ch.send(p.Status(key[0], name, doc))

    proxy = [with_transport(r, init.transport) for r in init.route] if init.route_mode == "prevent" else []
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    agent = _start(init, settings, sink, proxy)
    if agent is None and settings is not fallback:
        LOG.warning("worker %s: port %s of the previous worker not free: another port", init.worker, init.sip_port)
        agent = _start(init, fallback, sink, proxy)
    if agent is None:
        return 1
    signal.signal(signal.SIGTERM, lambda s, f: agent.request_stop(0))

    def rejected(rt, verdict) -> None:  # noqa: ANN001 - on the pjsua thread, right before the worker ends itself
        ch.send(p.Rejected(rt.key[0] if rt else None, rt.key[1] if rt else None, verdict.reason,
                           verdict.message, verdict.count, verdict.limit))

    agent.reject_hook = rejected
    agent.pace.hook = ch.send  # REGISTER pacing: Want / Answered to the supervisor (.pacing)
    if init.breadcrumbs:
        agent.answer_hook = lambda rt: ch.send(p.Answer(rt.key[0], rt.key[1]))
    ch.send(p.Hello(init.worker, os.getpid(), agent.sip_port, __version__))
    interval = min(1.0, settings.heartbeat_timeout_seconds / 3.0)
    seq = [0]

    def beat() -> None:  # on the event thread
        seq[0] += 1
        # the metrics ride along only every METRICS_EVERY beats: collecting and encoding every family each second
        # in each of a pod's 8 workers is work nobody reads (/metrics asks the workers afresh; these copies only
        # keep the counters of a worker that dies, at most METRICS_EVERY beats old)
        families = metric_families(agent.metrics.registry) if seq[0] % METRICS_EVERY == 1 else []
        ch.send(p.Heartbeat(seq[0], families))
        agent.call_later(interval, beat)

    agent.submit(beat)
    threading.Thread(target=_read, args=(rd, agent, ch), name="pipe-reader", daemon=True).start()
    agent.wait()
    logs.log(LOG, logging.INFO, "worker exited", worker=init.worker, exit_code=agent.exit_code)
    return agent.exit_code


def _start(init: p.Init, settings: AgentSettings, sink: Any, proxy: list[str]) -> Agent | None:
    agent = Agent(settings, sink, name=init.agent, pod=init.pod, self_heal=init.self_heal)
    agent.pjsip_log_level = init.pjsip_log_level
    agent.tls_from_accounts = init.tls_from_accounts
    try:
        agent.start([], global_proxy=proxy)
        return agent
    except Exception as e:  # noqa: BLE001
        LOG.error("worker %s: endpoint start failed: %s", init.worker, e)
        agent.request_stop(1)
        agent.wait(10)
        return None


def _reply(ch: Channel, msg_id: int):
    def done(fut) -> None:  # noqa: ANN001
        e = fut.exception()
        ch.send(p.Reply(msg_id, e is None, None if e else fut.result(), None if e is None else str(e)))

    return done


def _read(rd: TextIO, agent: Agent, ch: Channel) -> None:
    for line in rd:
        try:
            msg = p.decode(line)
        except p.ProtocolError as e:
            LOG.error("bad message from the supervisor: %s", e)
            continue
        if isinstance(msg, p.Apply):
            try:
                accounts = [resolve(a) for a in msg.accounts]
            except Exception as e:  # noqa: BLE001 - validation text names fields, not values
                ch.send(p.Reply(msg.id, False, error=f"bad account: {e}"))
                continue
            agent.apply(accounts).add_done_callback(_reply(ch, msg.id))
        elif isinstance(msg, p.Request) and msg.op == "metrics":
            ch.send(p.Reply(msg.id, True, metric_families(agent.metrics.registry)))
        elif isinstance(msg, p.Request):
            fut = {
                "repair": lambda: agent.request_repair(msg.account, trigger="user"),
                "reregister": lambda: agent.request_reregister(msg.account),
                "drift": lambda: agent.request_drift(msg.account),
                "refresh": lambda: agent.request_refresh(msg.account),
                "ip-change": agent.request_ip_change,
                "snapshot": lambda: agent.submit(agent._snapshot),
            }.get(msg.op)
            if fut is None:
                ch.send(p.Reply(msg.id, False, error=f"unknown op {msg.op}"))
            else:
                fut().add_done_callback(_reply(ch, msg.id))
        elif isinstance(msg, p.Go):
            agent.submit(agent.pace.go, (msg.namespace, msg.name))
        elif isinstance(msg, p.Stop):
            agent.request_stop(msg.exit_code)
    agent.request_stop(0)  # the supervisor is gone: un-REGISTER and exit


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="sipfleet-agent-worker")
    ap.add_argument("--fd", type=int, required=True, help="the worker's end of its socket to the supervisor")
    ap.add_argument("--log-level", default=os.environ.get("SIPFLEET_AGENT_LOG_LEVEL", "INFO"))
    args = ap.parse_args(argv)
    os.dup2(2, 1)  # pjlib prints to fd 1: never onto anything but stderr
    sys.stdout = sys.stderr
    logs.setup(args.log_level)
    return serve(os.dup(args.fd), args.fd)


if __name__ == "__main__":
    sys.exit(main())
