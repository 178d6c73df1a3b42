"""recipes/esc50_clap_zeroshot under SYNTH=1, stages 0-2 (data and labels file, zero-shot classification
by two tiny random CLAPs, unfused and fused, accuracy from classify's CSV): the commands run end to end and
the accuracy lines agree with the CSVs. Stage 3 (fewshot-eval --zero-shot) and 4 (export --labels, covered by
tests/export/test_clap_export.py) are left out to keep this fast."""

import csv
import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "recipes" / "esc50_clap_zeroshot" / "run.sh"


def test_synth_zero_shot_stages_run_and_score_the_csvs(tmp_path):
    repo = str(SCRIPT.parents[2])
    env = {
        **os.environ,
        "SYNTH": "1",
        "PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        ["bash", str(SCRIPT), "0", "2"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    out = tmp_path / "work" / "esc50_clap_zeroshot_synth"
    meta = list(csv.DictReader(open(tmp_path / "work" / "esc50_clap_synth" / "meta" / "esc50.csv")))
    names = {int(r["target"]): r["category"].replace("_", " ") for r in meta}
    assert (out / "labels.txt").read_text().splitlines() == [names[t] for t in sorted(names)]
    assert any(" " in n for n in names.values())  # an underscore was read as a space
    truth = {r["filename"]: names[int(r["target"])] for r in meta}
    lines = (out / "accuracy.txt").read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["tiny_clap_unfused", "tiny_clap_fused"]
    for line in lines:
        rows = [r for r in csv.DictReader(open(out / f"{line.split()[0]}.csv")) if r["rank"] == "1"]
        assert len(rows) == len(meta)
        ok = sum(r["label"] == truth[Path(r["file"]).name] for r in rows)
        assert f"top-1 {100 * ok / len(rows):.2f} % of {len(rows)} clips" in line
    assert done.stdout.strip().splitlines()[-1].startswith("note: SYNTH=1")
