"""The ``baton`` command line, run as a user would: real database, real files, exit codes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests import bpmn_builders as b
from web.cli import main

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT.parent / "shared" / "corpus"


@pytest.fixture
def cli(db_url, monkeypatch, tmp_path):
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("SECRET_KEY", "cli-test")
    monkeypatch.setenv("BATON_SCHEDULER", "off")
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(main, list(args), catch_exceptions=False)

    assert invoke("init").exit_code == 0
    return invoke


def test_deploy_start_and_redeploy(cli, tmp_path):
    bpmn = tmp_path / "approval.bpmn"
    bpmn.write_bytes(b.approval())
    first = cli("deploy", str(bpmn))
    assert first.exit_code == 0 and "approval3 v1 (new version)" in first.output
    again = cli("deploy", str(bpmn))
    assert "approval3 v1 (unchanged)" in again.output
    started = cli("start", "approval3", "--var", "amount=12.5", "--var", "who=li", "--business-key", "B-1")
    assert started.exit_code == 0 and "running" in started.output


def test_deploy_refuses_invalid_file_with_precise_report(cli, tmp_path):
    bad = tmp_path / "timer.bpmn"
    bad.write_text(
        b.approval()
        .decode()
        .replace('<bpmn:userTask id="submit" name="submit" />', '<bpmn:userTask id="submit" name="submit">')
    )
    result = cli("deploy", str(bad))
    assert result.exit_code == 1
    assert "timer.bpmn:" in result.output and "refused" in result.output


def test_start_unknown_key_fails_clearly(cli):
    result = cli("start", "missing")
    assert result.exit_code == 1 and "no process definition" in result.output


@pytest.mark.skipif(not CORPUS.exists(), reason=f"corpus not found at {CORPUS}")
def test_deploy_every_corpus_file(cli, tmp_path):
    """`baton deploy --each` over the whole corpus: each file deploys or is refused precisely."""
    files = sorted(p for p in CORPUS.rglob("*") if p.suffix in (".bpmn", ".dmn"))
    flat = tmp_path / "corpus"
    flat.mkdir()
    for path in files:
        shutil.copy(path, flat / f"{path.parent.name}__{path.name}")
    result = cli("deploy", "--each", str(flat))
    assert result.exit_code in (0, 1), result.output
    lines = [line for line in result.output.splitlines() if line.startswith(("✓", "✗"))]
    reported = {line.split(":")[0][2:] for line in lines}
    assert reported == {f"{p.parent.name}__{p.name}" for p in files}
    for line in lines:
        if line.startswith("✗"):
            assert ": " in line
    assert "Traceback" not in result.output
    deployed = sum(line.startswith("✓") for line in lines)
    print(f"corpus: {deployed} deployed, {len(lines) - deployed} refused, of {len(files)} files")
