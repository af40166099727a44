"""The wire log: every request a lab node receives, as Kamailio logged it, parsed into :class:`WireRecord`.

Each node writes one ``SIPLAB-WIRE`` line per received request to its log (``route[WIRE]`` in kamailio.cfg;
values quoted with ``s.escape.common``, Authorization never logged, only whether one was present).
:func:`parse_wire_line` is pure; :class:`WireLog` reads the node logs incrementally (cached per inode and
offset, so a log recreated at a fresh ``up`` is read from the start) and offers read / wait / follow.
"""

from __future__ import annotations

import bisect
import re
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .model import SIP_HOSTS, WireRecord, sip_host_name

WIRE_MARK = "SIPLAB-WIRE "
_WIRE_FIELD_RE = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


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
    i = line.find(WIRE_MARK)
    if i < 0:
        return None
    fields = {k: _unescape_common(v) for k, v in _WIRE_FIELD_RE.findall(line[i + len(WIRE_MARK) :])}
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
        tls_version=val("tls_version"),
        tls_cipher=val("tls_cipher"),
        tls_peer=val("tls_peer"),
        answer=val("answer"),
    )


WIRE_FIELDS = ("node", "at", "method", "ruri", "route", "src", "dst", "transport", "call_id", "cseq", "from_uri",
               "to_uri", "contact", "expires", "auth", "tls_version", "tls_cipher", "tls_peer", "answer")


def _escape_common(s: str) -> str:
    # what Kamailio's {s.escape.common} does (CR/LF cannot occur in a header value; made spaces to be safe)
    s = s.replace("\\", "\\\\").replace('"', '\\"').replace("'", "\\'").replace("\0", "\\0")
    return s.replace("\r", " ").replace("\n", " ")


def format_wire_line(fields: dict[str, object]) -> str:
    """One SIPLAB-WIRE line (no newline) in the format Kamailio's ``route[WIRE]`` writes; the inverse of
    :func:`parse_wire_line` for the fields in ``WIRE_FIELDS`` (``auth`` as a bool). Pure."""
    out = []
    for k in WIRE_FIELDS:
        v = fields.get(k, "")
        if k == "auth":
            v = "1" if v else "0"
        out.append(f'{k}="{_escape_common(str(v))}"')
    return WIRE_MARK + " ".join(out) + ' end="1"'


def select(
    records: Iterable[WireRecord], *, since: float | None = None, method: str | None = None, call_id: str | None = None
) -> list[WireRecord]:
    """The records matching every given filter (``since`` inclusive)."""
    m = method.upper() if method is not None else None
    return [
        r
        for r in records
        if (since is None or r.at >= since)
        and (m is None or r.method.upper() == m)
        and (call_id is None or r.call_id == call_id)
    ]


class WireLog:
    """Incremental reader of the nodes' logs; ``log_path(node)`` names each node's log file."""

    def __init__(self, log_path: Callable[[str], Path]) -> None:
        self._log_path = log_path
        self._lock = threading.Lock()
        # node -> (inode, offset, records, bisection keys)
        self._cache: dict[str, tuple[int, int, list[WireRecord], list[float]]] = {}

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()

    def node_records(self, node: str, since: float | None = None) -> list[WireRecord]:
        """The node's records (a copy), starting near ``since`` (records are in log order, nearly by time)."""
        with self._lock:
            recs, ats = self._read_locked(node)
            start = 0
            if since is not None:
                # a worker stamps $TV just before it writes its line, so log order is time order up to a
                # tiny jitter; 5 s of slack keeps the bisection safe
                start = bisect.bisect_left(ats, since - 5.0)
            return recs[start:]

    def _read_locked(self, node: str) -> tuple[list[WireRecord], list[float]]:
        path = self._log_path(node)
        try:
            st = path.stat()
        except FileNotFoundError:
            self._cache.pop(node, None)
            return [], []
        cached = self._cache.get(node)
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
                mark = WIRE_MARK.encode()
                for raw in data[: end + 1].split(b"\n"):
                    if mark not in raw:
                        continue
                    rec = parse_wire_line(raw.decode(errors="replace"))
                    if rec is not None:
                        recs.append(rec)
                        # keep the bisection key non-decreasing even if two workers' lines crossed
                        ats.append(max(rec.at, ats[-1]) if ats else rec.at)
        self._cache[node] = (ino, off, recs, ats)
        return recs, ats

    def wire(
        self, since: float | None = None, node: str | None = None, method: str | None = None, call_id: str | None = None
    ) -> list[WireRecord]:
        """Requests the nodes received, oldest first (``since`` is an epoch time, inclusive)."""
        nodes = [sip_host_name(node)] if node else list(SIP_HOSTS)
        out: list[WireRecord] = []
        for n in nodes:
            out.extend(select(self.node_records(n, since), since=since, method=method, call_id=call_id))
        out.sort(key=lambda r: r.at)
        return out

    def wait(
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

    def follow(self, node: str | None = None, interval: float = 0.2) -> Iterator[WireRecord]:
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
