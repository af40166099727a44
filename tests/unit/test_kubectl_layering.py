"""sipfleet/kubectl depends on sipfleet.api, the kubernetes client and PyYAML only; only client.py does API I/O."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "sipfleet" / "kubectl"
ALLOWED = {"sipfleet.api", "kubernetes", "yaml"}


def imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
    return out


def test_only_the_api_the_client_and_the_stdlib():
    files = sorted(PKG.glob("*.py"))
    assert len(files) >= 8
    for f in files:
        for mod in imports(f):
            top = mod.split(".")[0]
            if top in sys.stdlib_module_names or top == "__future__":
                continue
            assert any(mod == a or mod.startswith(a + ".") for a in ALLOWED), f"{f.name} imports {mod}"
        assert len(f.read_text().splitlines()) <= 400, f"{f.name} is over 400 lines"


def test_only_client_talks_to_the_api():
    for f in sorted(PKG.glob("*.py")):
        uses = {m for m in imports(f) if m.startswith("kubernetes")}
        if f.name == "client.py":
            assert "kubernetes" in uses
        elif f.name == "main.py":
            assert uses <= {"kubernetes.client.rest"}, uses  # ApiException only, to report errors
        else:
            assert not uses, f"{f.name} imports {uses}"
