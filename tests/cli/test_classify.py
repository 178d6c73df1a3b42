"""`sedkit classify` and `sedkit embed` end to end on synthetic wavs with a checkpoint file."""

import csv
import io
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from sed.checkpoint import save_model
from sed.cli.main import main
from sed.models import create_model
from tests.sedkit_run import run

SR = 16000


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cls")
    torch.manual_seed(3)
    model = create_model("ast_micro", num_classes=3, input_tdim=100, labels=["bird", "car", "rain"])
    ckpt = save_model(root / "model.pt", model)
    audio = root / "audio"
    (audio / "nested").mkdir(parents=True)
    rng = np.random.default_rng(0)
    sf.write(audio / "a.wav", rng.uniform(-0.3, 0.3, SR), SR)
    sf.write(audio / "b.wav", rng.uniform(-0.3, 0.3, int(2.5 * SR)), SR)
    sf.write(audio / "nested" / "c.flac", rng.uniform(-0.3, 0.3, SR // 2), 44100)
    return root, ckpt, audio


def test_clip_mode_json_folder(setup, capsys):
    root, ckpt, audio = setup
    code, out, err = run(
        capsys, "classify", str(audio), "--checkpoint", str(ckpt), "--format", "json", "--top-k", "2"
    )
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and err.count("error") == 0
    assert [r["file"].split("/")[-1] for r in rows] == ["a.wav", "b.wav", "c.flac"]
    assert all(len(r["top_k"]) == 2 and set(r["top_k"][0]) == {"label", "score"} for r in rows)
    assert {t["label"] for r in rows for t in r["top_k"]} <= {"bird", "car", "rain"}
    assert "note: 1 file longer than the model's clip was scored on its centre 1.01 s" in err  # b.wav's 2.5 s


def test_window_mode_json_and_csv(setup, capsys):
    root, ckpt, audio = setup
    code, out, _ = run(
        capsys,
        "classify",
        str(audio / "b.wav"),
        "--checkpoint",
        str(ckpt),
        "--window",
        "1",
        "--hop",
        "0.5",
        "--format",
        "json",
        "--aggregate",
        "max",
    )
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [(r["start"], r["end"]) for r in rows[:-1]] == [
        (0.0, 1.0),
        (0.5, 1.5),
        (1.0, 2.0),
        (1.5, 2.5),
    ]
    assert "start" not in rows[-1] and rows[-1]["aggregate"] == "max"
    code, out, _ = run(
        capsys,
        "classify",
        str(audio / "b.wav"),
        "--checkpoint",
        str(ckpt),
        "--window",
        "1",
        "--format",
        "csv",
        "--top-k",
        "1",
    )
    table = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and list(table[0]) == ["file", "start", "end", "rank", "label", "score"]
    assert [r["start"] for r in table] == ["0.0", "1.0", "2.0", "all"]


def test_table_glob_output_file_and_corrupt_file(setup, capsys, tmp_path):
    root, ckpt, audio = setup
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    out_file = tmp_path / "out" / "preds.txt"
    code, out, err = run(
        capsys,
        "classify",
        str(audio / "*.wav"),
        str(bad),
        "--checkpoint",
        str(ckpt),
        "--output",
        str(out_file),
        "--batch-size",
        "2",
    )
    assert code == 1 and out == ""
    assert err.count("error:") == 1 and "bad.wav" in err
    lines = out_file.read_text().splitlines()
    assert lines[0].split() == ["file", "span", "top"] and len(lines) == 3
    assert "bird" in out_file.read_text() or "car" in out_file.read_text()


def test_usage_errors_exit_2(setup, capsys, tmp_path):
    root, ckpt, audio = setup
    assert run(capsys, "classify", str(audio), "--checkpoint", str(tmp_path / "nope.pt"))[0] == 2
    code, _, err = run(capsys, "classify", str(audio), "--checkpoint", str(ckpt), "--hop", "1")
    assert code == 2 and "--hop needs --window" in err
    with pytest.raises(SystemExit) as e:
        main(["classify", str(audio), "--checkpoint", str(ckpt), "--format", "xml"])
    assert e.value.code == 2


def test_single_and_multi_label_flags(setup, capsys):
    root, ckpt, audio = setup
    _, out_soft, _ = run(
        capsys, "classify", str(audio / "a.wav"), "--checkpoint", str(ckpt), "--format", "json"
    )
    _, out_multi, _ = run(
        capsys,
        "classify",
        str(audio / "a.wav"),
        "--checkpoint",
        str(ckpt),
        "--format",
        "json",
        "--multi-label",
    )
    soft = sum(t["score"] for t in json.loads(out_soft)["top_k"])
    multi = sum(t["score"] for t in json.loads(out_multi)["top_k"])
    assert soft == pytest.approx(1.0, abs=1e-4) and multi != pytest.approx(1.0, abs=1e-3)


def test_embed(setup, capsys, tmp_path):
    root, ckpt, audio = setup
    (tmp_path / "x.wav").write_bytes(b"")
    code, _, err = run(
        capsys,
        "embed",
        str(audio),
        str(tmp_path / "x.wav"),
        "--checkpoint",
        str(ckpt),
        "--out",
        str(tmp_path / "emb.npy"),
    )
    emb = np.load(tmp_path / "emb.npy")
    names = (tmp_path / "emb.files.txt").read_text().splitlines()
    assert code == 1 and "x.wav: empty file" in err
    assert emb.shape == (3, 64) and [n.split("/")[-1] for n in names] == ["a.wav", "b.wav", "c.flac"]
