"""Every recipe's run.sh under SYNTH=1 ends with the line saying its numbers are a smoke test (issue 23:
the synthetic runs printed near-chance numbers like results). The scripts run here past their last
stage (``run.sh 99 99``), so no stage does any work and the note is the whole output."""

import os
import subprocess
from pathlib import Path

import pytest

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
RUN_SCRIPTS = sorted(RECIPES.glob("*/run.sh"))


def run(script: Path, tmp_path: Path, synth: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SYNTH": synth}
    return subprocess.run(
        ["bash", str(script), "99", "99"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )


def test_every_recipe_has_a_run_script():
    assert len(RUN_SCRIPTS) >= 10


@pytest.mark.parametrize("script", RUN_SCRIPTS, ids=lambda p: p.parent.name)
def test_synth_run_ends_with_the_smoke_test_note(script, tmp_path):
    out = run(script, tmp_path, "1")
    assert out.returncode == 0, out.stderr
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("note: SYNTH=1") and "smoke test of the pipeline, not results" in last
    real = run(script, tmp_path, "0")
    assert real.returncode == 0 and "smoke test" not in real.stdout
