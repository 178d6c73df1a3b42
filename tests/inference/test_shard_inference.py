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
from sed.data.shards.writer import read_source, write_shards
from sed.data.synth.corpora import make_esc50
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
    assert (
        main(
            [
                "embed",
                "--shards",
                str(root / "shards"),
                "--checkpoint",
                str(ckpt),
                "--out",
                str(root / "e.npy"),
            ]
        )
        == 0
    )
    assert (
        main(["embed", str(root / "esc" / "audio"), "--checkpoint", str(ckpt), "--out", str(root / "f.npy")])
        == 0
    )
    names = (root / "e.files.txt").read_text().split()
    ref = dict(zip((root / "f.files.txt").read_text().split(), np.load(root / "f.npy")))
    assert np.allclose(np.load(root / "e.npy"), np.stack([ref[source[n]] for n in names]), atol=1e-6)
    assert (
        main(["classify", "--shards", str(root / "shards"), str(root / "esc"), *common]) == 2
    )  # one or the other


def _predict(root: Path, run: Path, devices: int) -> list[dict]:
    cfg = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu",
            "devices": devices,
            "strategy": "ddp" if devices > 1 else "auto",
            "default_root_dir": str(run),
            "enable_progress_bar": False,
            "logger": False,
        },
        "model": {
            "class_path": "sed.tasks.ClassificationTask",
            "init_args": {"model_name": "cnn_tiny", "model_kwargs": {"clip_seconds": 1.0}},
        },
        "data": {
            "class_path": "sed.data.modules.audio.AudioDataModule",
            "init_args": {
                "source": "shards",
                "shards": str(root / "shards"),
                "val_shards": str(root / "shards"),
                "clip_seconds": 1.0,
                "batch_size": 3,
            },
        },  # predict: the test split, all of it
    }
    path = run.parent / f"{run.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run(
        [sys.executable, "-m", "sed", "predict", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return [json.loads(x) for x in (run / "predictions.jsonl").read_text().splitlines()]


def test_distributed_predict_equals_single_process_and_resumes(corpus, tmp_path):
    root, _ = corpus
    one = _predict(root, tmp_path / "one", 1)
    two = _predict(root, tmp_path / "two", 2)
    assert len(one) == len(two) == 15
    assert [r["file"] for r in one] == [r["file"] for r in two]  # shard order, then key order
    scores = [[{t["label"]: t["score"] for t in r["top_k"]} for r in run] for run in (one, two)]
    assert all(
        a.keys() == b.keys() and np.allclose([a[k] for k in a], [b[k] for k in a], atol=1e-6)
        for a, b in zip(*scores)
    )
    parts = tmp_path / "one" / "predictions"
    assert sorted(p.name for p in parts.iterdir()) == [f"shard-{i:06d}.tar.jsonl" for i in range(4)]
    kept = {p.name: p.stat().st_mtime_ns for p in parts.iterdir()}
    (parts / "shard-000002.tar.jsonl").unlink()  # as if killed before that shard was written
    (tmp_path / "one" / "predictions.jsonl").unlink()
    again = _predict(root, tmp_path / "one", 1)
    assert again == one
    assert all(
        parts.joinpath(n).stat().st_mtime_ns == t for n, t in kept.items() if n != "shard-000002.tar.jsonl"
    )


def _copy_with(
    src: Path, dst: Path, extra: list[tuple[str, bytes]], counts: dict[str, int] | None = None
) -> None:
    """``src``'s shards in ``dst``, ``shard-000000.tar`` with ``extra`` members appended, index counts
    of that shard replaced by ``counts``."""
    import io
    import tarfile

    dst.mkdir()
    index = json.loads((src / "index.json").read_text())
    for entry in index["shards"]:
        (dst / entry["name"]).write_bytes((src / entry["name"]).read_bytes())
    with tarfile.open(dst / "shard-000000.tar", "a") as tar:
        for name, data in extra:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    if counts is not None:
        index["shards"][0]["folds"] = counts
    (dst / "index.json").write_text(json.dumps(index))


def _predict_here(shards: Path, run: Path, capfd) -> tuple[int, list[dict], list[str]]:
    cfg = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "default_root_dir": str(run),
            "enable_progress_bar": False,
            "logger": False,
            "enable_model_summary": False,
        },
        "model": {
            "class_path": "sed.tasks.ClassificationTask",
            "init_args": {"model_name": "cnn_tiny", "model_kwargs": {"clip_seconds": 1.0}},
        },
        "data": {
            "class_path": "sed.data.modules.audio.AudioDataModule",
            "init_args": {
                "source": "shards",
                "shards": str(shards),
                "val_shards": str(shards),
                "clip_seconds": 1.0,
                "batch_size": 3,
            },
        },
    }
    path = run.parent / f"{run.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    capfd.readouterr()
    rc = main(["predict", "--config", str(path)])
    err = [x for x in capfd.readouterr().err.splitlines() if x.startswith("error:")]
    return rc, [json.loads(x) for x in (run / "predictions.jsonl").read_text().splitlines()], err


def test_predict_counts_duplicates_count_mismatches_and_bad_members(corpus, tmp_path, capfd):
    """A key twice in a shard, an index counting fewer samples than the shard holds, a member in a
    folder or above the shard: each one line naming shard and key, counted (exit 1); no part file
    is rewritten by a later batch, so the shard's rows stay."""
    import tarfile

    root, _ = corpus
    src = root / "shards"
    with tarfile.open(src / "shard-000000.tar") as tar:
        first = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    dup = [(n, first[n]) for n in sorted(first) if n.startswith("00000000.")]
    moved = [(f"sub/{n}", d) for n, d in dup] + [(f"../../{n}", d) for n, d in dup]
    _copy_with(src, tmp_path / "s", dup + moved, counts={"1": 3})  # holds 4 keys, index counts 3
    rc, rows, err = _predict_here(tmp_path / "s", tmp_path / "run", capfd)
    per_shard = {}
    for r in rows:
        per_shard.setdefault(r["file"].rsplit("/", 2)[-2], []).append(r["file"][-8:])
    assert (
        rc == 1
        and len(rows) == 15 - 1
        and per_shard["shard-000000.tar"] == ["00000000", "00000001", "00000002"]
    )
    assert len(err) == 6 and all(e.count("shard-000000.tar") == 1 for e in err)
    assert sum("key appears twice in the shard" in e for e in err) == 1
    assert sum("'sub/00000000." in e for e in err) == 2 and sum("'../../00000000." in e for e in err) == 2
    assert any(
        e.endswith("shard-000000.tar/00000003: the shard holds more samples than index.json counts (3)")
        for e in err
    )
    errors = (tmp_path / "run" / "predictions" / "shard-000000.tar.errors").read_text().splitlines()
    assert len(errors) == 6  # a resumed run counts them again
    rc, again, err = _predict_here(tmp_path / "s", tmp_path / "run", capfd)
    assert rc == 1 and again == rows and len(err) == 6


def test_predict_rows_in_the_classify_json_schema(corpus, tmp_path, capfd):
    root, ckpt = corpus
    rc, rows, err = _predict_here(root / "shards", tmp_path / "run", capfd)
    assert rc == 0 and not err and len(rows) == 15
    for r in rows:
        assert set(r) == {"file", "top_k"} and [set(t) for t in r["top_k"]] == [{"label", "score"}] * 3
        scores = [t["score"] for t in r["top_k"]]
        assert scores == sorted(scores, reverse=True) and sum(scores) == pytest.approx(1, abs=1e-5)


def test_classify_shards_counts_every_failure(corpus, tmp_path, capfd):
    root, ckpt = corpus
    _copy_with(
        root / "shards",
        tmp_path / "s",
        [
            ("00000099.flac", b"garbage" * 20),
            ("00000099.json", b"{}"),
            ("00000098.flac", b"x"),
            ("00000098.json", b"[1"),
        ],
    )
    capfd.readouterr()
    rc = main(["classify", "--shards", str(tmp_path / "s"), "--checkpoint", str(ckpt), "--format", "json"])
    out, err = capfd.readouterr()
    lines = [x for x in err.splitlines() if not x.startswith("note: ")]
    assert (
        rc == 1
        and len(out.splitlines()) == 15
        and len(lines) == 2
        and all(x.startswith("error: ") for x in lines)
    )
    assert lines[0].endswith("shard-000000.tar/00000099: not a readable audio file (Format not recognised)")
    assert "<_io" not in err and err.count("00000098") == 1
