"""docs/crd-reference.md is generated from the models and must be current."""

from __future__ import annotations

from pathlib import Path

from sipfleet.api import docs, models as m
from sipfleet.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_committed_reference_is_current():
    problem = docs.check(REPO)
    assert problem is None, problem


def test_reference_covers_every_spec_field():
    text = docs.render_markdown()
    for name, field in m.SipAccountSpec.model_fields.items():
        assert f"`spec.{field.alias or name}`" in text
    for name, field in m.SipAccountStatus.model_fields.items():
        assert f"`status.{field.alias or name}`" in text
    # defaults, limits and the CEL messages come through from the CRD schema
    assert "`spec.registration.expiresSeconds` | integer |  | `300` | >= 60; <= 86400" in text
    assert "routeMode prevent needs at least one proxy in route" in text
    assert f"{m.MAX_ACCOUNTS_PER_WORKER} accounts" in text


def test_check_detects_a_stale_file(tmp_path: Path):
    assert "missing" in docs.check(tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "crd-reference.md").write_text(docs.render_markdown().replace("Address of record", "AOR"))
    assert "differs" in docs.check(tmp_path)


def test_cli_writes_then_checks(tmp_path: Path, capsys):
    assert main(["crd", "docs", "--check", "--root", str(tmp_path)]) == 1
    assert main(["crd", "docs", "--root", str(tmp_path)]) == 0
    assert main(["crd", "docs", "--check", "--root", str(tmp_path)]) == 0
    assert (tmp_path / "docs" / "crd-reference.md").read_text() == docs.render_markdown()
