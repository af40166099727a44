"""The agent's module layout: no import cycles (lazy and type-only imports included), no module over ~400 lines,
and the subpackages the architecture names."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "agent" / "sipfleet_agent"


def _modules() -> dict[str, Path]:
    out = {}
    for f in ROOT.rglob("*.py"):
        parts = f.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = f
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph = {}
    for name, f in mods.items():
        pkg = name if f.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps = set()
        for n in ast.walk(ast.parse(f.read_text())):
            if isinstance(n, ast.ImportFrom):
                if n.level:
                    base = pkg.split(".")[: len(pkg.split(".")) - (n.level - 1)]
                    m = ".".join(base + ([n.module] if n.module else []))
                else:
                    m = n.module or ""
                deps |= {c for c in [m] + [f"{m}.{a.name}" for a in n.names] if c in mods}
            elif isinstance(n, ast.Import):
                deps |= {a.name for a in n.names if a.name in mods}
        graph[name] = deps - {name, "sipfleet_agent"}
    return graph


def test_no_import_cycles():
    graph = _graph()
    assert len(graph) > 25
    state: dict[str, int] = {}
    cycles = []

    def visit(u: str, stack: list[str]) -> None:
        state[u] = 1
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                cycles.append(stack[stack.index(v):] + [v])
            elif not state.get(v):
                visit(v, stack)
        stack.pop()
        state[u] = 2

    for m in sorted(graph):
        if not state.get(m):
            visit(m, [])
    assert cycles == []


def test_no_module_over_about_400_lines():
    big = {n: len(f.read_text().splitlines()) for n, f in _modules().items()}
    assert {n: c for n, c in big.items() if c > 420} == {}


def test_the_supervisor_and_kubernetes_sides_never_import_the_worker():
    graph = _graph()
    for name, deps in graph.items():
        if name.startswith(("sipfleet_agent.supervisor", "sipfleet_agent.k8s")):
            assert not {d for d in deps if d.startswith("sipfleet_agent.worker")}, name
    assert {"sipfleet_agent.supervisor.runtime", "sipfleet_agent.worker.engine", "sipfleet_agent.k8s.edge"} <= set(graph)
