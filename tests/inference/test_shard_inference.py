"""Inference over shards: classify/embed --shards give the rows of the loose files; sedkit predict on
shards under 2-process DDP gives the single-process rows, merged in order, and resumes per shard."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from sed.checkpoint import save_model
from sed.cli.main import main
from sed.data.shard_writer import read_source, write_shards
from sed.data.synth import make_esc50
from sed.models import create_model

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("shard_inference")
    make_esc50(root / "esc", seed=0, num_classes=3, clips_per_class=5, duration=1.0, sample_rate=16000)
    index = write_shards(read_source(root / "esc"), root / "shards", shard_size=4)
    model = create_model("cnn_tiny", num_classes=3, labels=index["labels"], clip_seconds=1.0)
    return root, save_model(root / "m.pt", model)


def _json_rows(capsys, args):
    capsys.readouterr()
    assert main(args) == 0
    return [json.loads(x) for x in capsys.readouterr().out.splitlines()]


def test_classify_and_embed_shards_equal_the_files(corpus, capsys):
    root, ckpt = corpus
    common = ["--checkpoint", str(ckpt), "--format", "json", "--top-k", "3", "--device", "cpu"]
    files = _json_rows(capsys, ["classify", str(root / "esc" / "audio"), *common])
    shards = _json_rows(capsys, ["classify", "--shards", str(root / "shards"), *common])
    source = {}
    for part in sorted((root / "shards").glob("shard-*.tar")):
        import webdataset as wds

        for s in wds.WebDataset(str(part), shardshuffle=False):
            source[f"{part}/{s['__key__']}"] = json.loads(s["json"])["source"]
    assert len(files) == len(shards) == 15
    by_file = {r["file"]: r["top_k"] for r in files}
    for row in shards:
        assert row["top_k"] == by_file[source[row["file"]]]  # lossless FLAC: the same scores
    assert main(["embed", "--shards", str(root / "shards"), "--checkpoint", str(ckpt), "--out", str(root / "e.npy")]) == 0
    assert main(["embed", str(root / "esc" / "audio"), "--checkpoint", str(ckpt), "--out", str(root / "f.npy")]) == 0
    names = (root / "e.files.txt").read_text().split()
    ref = dict(zip((root / "f.files.txt").read_text().split(), np.load(root / "f.npy")))
    assert np.allclose(np.load(root / "e.npy"), np.stack([ref[source[n]] for n in names]), atol=1e-6)
    assert main(["classify", "--shards", str(root / "shards"), str(root / "esc"), *common]) == 2  # one or the other


def _predict(root: Path, run: Path, devices: int) -> list[dict]:
    cfg = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": devices, "strategy": "ddp" if devices > 1 else "auto",
                    "default_root_dir": str(run), "enable_progress_bar": False, "logger": False},
        "model": {"class_path": "sed.tasks.ClassificationTask",
                  "init_args": {"model_name": "cnn_tiny", "model_kwargs": {"clip_seconds": 1.0}}},
        "data": {"class_path": "sed.data.datamodule.AudioDataModule",
                 "init_args": {"source": "shards", "shards": str(root / "shards"), "val_shards": str(root / "shards"),
                               "clip_seconds": 1.0, "batch_size": 3}},  # predict: the test split, all of it
    }
    path = run.parent / f"{run.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "sed", "predict", "--config", str(path)], capture_output=True, text=True,
                       timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return [json.loads(x) for x in (run / "predictions.jsonl").read_text().splitlines()]


def test_distributed_predict_equals_single_process_and_resumes(corpus, tmp_path):
    root, _ = corpus
    one = _predict(root, tmp_path / "one", 1)
    two = _predict(root, tmp_path / "two", 2)
    assert len(one) == len(two) == 15
    assert [r["file"] for r in one] == [r["file"] for r in two]  # shard order, then key order
    assert all(np.allclose(list(a["scores"].values()), list(b["scores"].values()), atol=1e-6) for a, b in zip(one, two))
    parts = tmp_path / "one" / "predictions"
    assert sorted(p.name for p in parts.iterdir()) == [f"shard-{i:06d}.tar.jsonl" for i in range(4)]
    kept = {p.name: p.stat().st_mtime_ns for p in parts.iterdir()}
    (parts / "shard-000002.tar.jsonl").unlink()  # as if killed before that shard was written
    (tmp_path / "one" / "predictions.jsonl").unlink()
    again = _predict(root, tmp_path / "one", 1)
    assert again == one
    assert all(parts.joinpath(n).stat().st_mtime_ns == t for n, t in kept.items() if n != "shard-000002.tar.jsonl")
