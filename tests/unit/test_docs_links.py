"""README and docs: relative links resolve, the two commands are the Makefile's, the chart docs name real values."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", REPO / "charts" / "sipfleet" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK_RE = re.compile(r"\]\(([^)#\s]+)(#[^)]*)?\)")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(doc):
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
    text = re.sub(r"``.*?``|`[^`\n]*`", "", text)  # code spans (regex patterns look like links)
    for target, _anchor in LINK_RE.findall(text):
        if re.match(r"^[a-z]+://", target) or target.startswith("mailto:"):
            continue
        assert (doc.parent / target).exists(), f"{doc.relative_to(REPO)} links to missing {target}"


def test_readme_two_commands_are_make_targets():
    text = (REPO / "README.md").read_text()
    section = text.split("## The two commands", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh", 1)[1].split("```", 1)[0]
    commands = [ln.split("#")[0].strip() for ln in block.strip().splitlines()]
    assert commands == ["make demo", "make test"]
    makefile = (REPO / "Makefile").read_text()
    for target in ("demo", "test"):
        assert re.search(rf"^{target}:", makefile, re.M), target


def test_operations_values_table_names_real_values():
    values = yaml.safe_load((REPO / "charts" / "sipfleet" / "values.yaml").read_text())
    text = (REPO / "docs" / "operations.md").read_text()
    rows = re.findall(r"^\| `([a-zA-Z.]+)`", text, re.M)
    assert len(rows) >= 5
    for row in rows:
        if row.startswith("sipfleet"):
            continue  # metric/annotation tables
        node = values
        for part in row.split("."):
            assert isinstance(node, dict) and part in node, f"docs/operations.md documents unknown value {row}"
            node = node[part]
