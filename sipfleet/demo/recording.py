"""The verdict's inputs as JSON (``sipfleet demo --record FILE``), and back: a run's wire records, status history,
events, agent log rows and fault record, so the verdict can be computed again from what a real run saw (the
unit tests do)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .timeline import Row
from .verdict import Event, FaultRecord


def _tuples(v: Any) -> Any:
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


def dump(path: Path, fault: FaultRecord, wire: list[Any], history: list[tuple], events: list[Event],
         agent_rows: list[Row]) -> None:
    data = {
        "fault": {**asdict(fault), "held": fault.held.to_dict() if fault.held is not None else None},
        "wire": [r.to_dict() for r in wire],
        "history": [[t, k, v] for t, k, v in history],
        "events": [asdict(e) for e in events],
        "agentRows": [asdict(r) for r in agent_rows],
    }
    path.write_text(json.dumps(data, indent=1) + "\n")


def load(path: Path) -> dict[str, Any]:
    """The keyword arguments of :func:`sipfleet.demo.verdict.judge` (``fault``, ``wire``, ``history``,
    ``events``, ``agent_rows``) as recorded."""
    from ..localenv.siplab.model import WireRecord

    data = json.loads(Path(path).read_text())
    f = data["fault"]
    fault = FaultRecord(user=f["user"], configured_route=tuple(f["configured_route"]),
                        edge_route=tuple(f["edge_route"]), calm_at=f["calm_at"], started=f["started"],
                        held=WireRecord(**f["held"]) if f.get("held") else None,
                        actions=tuple(Row(**r) for r in f["actions"]))
    return {
        "fault": fault,
        "wire": [WireRecord(**r) for r in data["wire"]],
        "history": [(t, k, _tuples(v)) for t, k, v in data["history"]],
        "events": [Event(**e) for e in data["events"]],
        "agent_rows": [Row(**r) for r in data["agentRows"]],
    }
