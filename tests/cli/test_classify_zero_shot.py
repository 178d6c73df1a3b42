"""``sedkit classify --labels`` (zero-shot classes named by text, of a CLAP checkpoint) end to end on tiny
random CLAP directories in the Hugging Face layout: JSON scores equal transformers'
``zero-shot-audio-classification`` pipeline (unfused and fused, CLAP's 48 kHz front end), window rows equal
the pipeline on each window, CSV, a labels file, ensembles with a saved zero-shot checkpoint, the refusals,
and ``sedkit serve --labels`` (the service built and its worker's scores, without HTTP)."""

from __future__ import annotations

import csv
import io
import json
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

from sed.checkpoint import save_model
from sed.models import create_model
from sed.models.zeroshot import DEFAULT_TEMPLATE, zero_shot_classifier
from tests.models.clap_dir import make_clap_dir
from tests.sedkit_run import run

LABELS = ["dog barking", "siren", "rain on a roof"]
SR = 16000  # the small directories' rate


def _noise(seconds: float, seed: int, rate: int = SR, channels: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.2 * np.sin(2 * np.pi * (300 + 700 * seed) * t)
    out = np.stack([tone + 0.05 * rng.standard_normal(t.size) for _ in range(channels)], axis=-1)
    return out[:, 0].astype(np.float32) if channels == 1 else out.astype(np.float32)


class _NotLonger:
    """A feature extractor whose clips are never marked longer than the clip: LAION's own inference of a
    fused model on clips of up to 10 s (sed's default; transformers' extractor marks a clip scored alone)."""

    def __init__(self, extractor):
        self.extractor = extractor

    def __getattr__(self, name):
        return getattr(self.extractor, name)

    def __call__(self, *args, **kwargs):
        out = self.extractor(*args, **kwargs)
        out["is_longer"] = torch.zeros_like(torch.as_tensor(out["is_longer"]))
        return out


def _pipeline(path, fused: bool = False):
    from transformers import pipeline

    pipe = pipeline("zero-shot-audio-classification", model=str(path))
    if fused:
        pipe.feature_extractor = _NotLonger(pipe.feature_extractor)
    return pipe


def _reference(pipe, audio: np.ndarray, labels=LABELS, template=DEFAULT_TEMPLATE) -> list[float]:
    got = {r["label"]: r["score"] for r in pipe(audio, candidate_labels=labels, hypothesis_template=template)}
    return [got[lab] for lab in labels]


def _scores(top_k: list[dict], labels=LABELS) -> list[float]:
    got = {t["label"]: t["score"] for t in top_k}
    assert set(got) == set(labels)
    return [got[lab] for lab in labels]


def _json(capsys, *argv) -> list[dict]:
    code, out, err = run(capsys, "classify", *argv, "--format", "json", "--top-k", len(LABELS))
    assert code == 0 and "error" not in err, err
    return [json.loads(line) for line in out.splitlines()]


@pytest.fixture(scope="module")
def clap(tmp_path_factory):
    root = tmp_path_factory.mktemp("zs")
    small = make_clap_dir(root / "small", small=True)
    other = make_clap_dir(root / "other", small=True, seed=1)
    audio = {"a.wav": _noise(2.5, 1), "b.wav": _noise(0.7, 2)}
    for name, wave in audio.items():
        sf.write(root / name, wave, SR, subtype="FLOAT")
    return SimpleNamespace(root=root, small=small, other=other, audio=audio, files=[root / n for n in audio])


@pytest.fixture(scope="module")
def pipe(clap):
    return _pipeline(clap.small)


@pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused"])
def test_json_scores_equal_the_transformers_pipeline(fused, tmp_path, capsys):
    d = make_clap_dir(tmp_path / "clap", fused=fused)  # CLAP's own 48-kHz, 10-s front end
    clips = {"short.wav": _noise(2.3, 3, 48000), "long.wav": _noise(7.5, 4, 48000, channels=2)}
    for name, audio in clips.items():
        sf.write(tmp_path / name, audio, 48000, subtype="FLOAT")
    rows = _json(capsys, *(tmp_path / n for n in clips), "--checkpoint", d, "--labels", *LABELS)
    pipe = _pipeline(d, fused)
    assert [r["file"] for r in rows] == [str(tmp_path / n) for n in clips]
    for row, audio in zip(rows, clips.values()):
        mono = audio.mean(-1) if audio.ndim == 2 else audio  # classify down-mixes by the mean
        np.testing.assert_allclose(
            _scores(row["top_k"]), _reference(pipe, mono), atol=1e-5, err_msg=row["file"]
        )


def test_window_rows_equal_the_pipeline_on_each_window(clap, pipe, capsys):
    template = "A recording of {} outdoors."
    a = clap.files[0]
    argv = [a, "--checkpoint", clap.small, "--labels", *LABELS, "--template", template, "--window", "1"]
    *windows, row = _json(capsys, *argv, "--hop", "0.5")  # a line per window, then the file's aggregate
    spans = [(w["start"], w["end"]) for w in windows]
    assert spans == [(0.0, 1.0), (0.5, 1.5), (1.0, 2.0), (1.5, 2.5)] and row["aggregate"] == "mean"
    wave = clap.audio["a.wav"]
    got = np.array([_scores(w["top_k"]) for w in windows])
    ref = np.array([_reference(pipe, wave[int(s * SR) : int(e * SR)], template=template) for s, e in spans])
    np.testing.assert_allclose(got, ref, atol=1e-5)
    np.testing.assert_allclose(_scores(row["top_k"]), got.mean(0), atol=1e-6)  # --aggregate mean
    assert np.abs(ref - _reference(pipe, wave[:SR])).max() > 1e-5  # the template changes the scores


def test_csv_rows_are_the_json_scores(clap, capsys, tmp_path):
    argv = [*clap.files, "--checkpoint", clap.small, "--labels", *LABELS]
    rows = _json(capsys, *argv)
    out = tmp_path / "scores.csv"
    code, printed, err = run(capsys, "classify", *argv, "--format", "csv", "--output", out)
    assert code == 0 and printed == "" and "error" not in err
    table = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(table) == 2 * 3 and {(r["start"], r["end"]) for r in table} == {("", "")}  # clip rows
    for row in rows:
        mine = {r["label"]: float(r["score"]) for r in table if r["file"] == row["file"]}
        np.testing.assert_allclose(_scores(row["top_k"])[:3], [mine[lab] for lab in LABELS], atol=1e-5)
        assert [int(r["rank"]) for r in table if r["file"] == row["file"]] == [1, 2, 3]


def test_a_labels_file_skips_blank_and_comment_lines(clap, capsys, tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text(
        "# the classes\n\ndog barking\n  siren  \n# rain next\nrain on a roof\n\n", encoding="utf-8"
    )
    by_file = _json(capsys, *clap.files, "--checkpoint", clap.small, "--labels-file", path)
    by_flag = _json(capsys, *clap.files, "--checkpoint", clap.small, "--labels", *LABELS)
    assert by_file == by_flag


def _checkpoint(tmp_path):
    return save_model(tmp_path / "cnn.pt", create_model("cnn_tiny", num_classes=2), labels=["a", "b"])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--labels-file", "{tmp}/empty.txt"], "empty.txt: holds no label (one label per line)"),
        (["--labels-file", "{tmp}/missing.txt"], "missing.txt: cannot read the labels file"),
        (["--template", "A {}."], "--template needs --labels or --labels-file"),
        (["--labels", "siren", "--template", "no slot"], "template must hold exactly one {} for the label"),
        (["--labels", "siren", "siren"], "label 'siren' is given twice"),
        (["--labels", "x", "--labels-file", "{tmp}/empty.txt"], "not allowed with argument"),
        ([], "has no classes: name them by text (labels=[...], sedkit classify --labels ...)"),
        (["--labels", "x", "--checkpoint", "{sed}"], "is a sed checkpoint, which holds no text tower"),
        (
            ["--labels", "x", "--checkpoint", "{tmp}/m.onnx"],
            "m.onnx: is an exported graph with fixed classes",
        ),
    ],
    ids=[
        "empty-file",
        "no-file",
        "template-alone",
        "bad-template",
        "twice",
        "both",
        "no-labels",
        "sed",
        "onnx",
    ],
)
def test_refusals_are_one_line_and_exit_2(clap, capsys, tmp_path, argv, message):
    (tmp_path / "empty.txt").write_text("# nothing\n\n", encoding="utf-8")
    (tmp_path / "m.onnx").write_bytes(b"not read: an exported graph takes no labels")
    sed = str(_checkpoint(tmp_path)) if "{sed}" in argv else ""
    argv = [a.replace("{tmp}", str(tmp_path)).replace("{sed}", sed) for a in argv]
    checkpoint = [] if "--checkpoint" in argv else ["--checkpoint", clap.small]
    code, out, err = run(capsys, "classify", clap.files[0], *checkpoint, *argv)
    assert code == 2 and out == "" and message in err, err
    assert err.startswith("error: ") and err.count("\n") == 1, err


def test_an_ensemble_with_a_saved_zero_shot_checkpoint(clap, capsys, tmp_path):
    saved = save_model(tmp_path / "zs.pt", zero_shot_classifier(clap.other, LABELS))  # another CLAP's
    alone = [_json(capsys, *clap.files, "--checkpoint", c, *extra) for c, extra in
             ((clap.small, ["--labels", *LABELS]), (saved, []))]  # fmt: skip
    both = _json(
        capsys, *clap.files, "--checkpoint", clap.small, "--checkpoint", saved, "--ensemble", "average",
        "--labels", *LABELS,
    )  # fmt: skip
    for i, row in enumerate(both):
        a, b = (np.array(_scores(r[i]["top_k"])) for r in alone)
        assert np.abs(a - b).max() > 1e-4  # two different models: the average is not either
        np.testing.assert_allclose(_scores(row["top_k"]), (a + b) / 2, atol=1e-6)

    shuffled = save_model(tmp_path / "other-order.pt", zero_shot_classifier(clap.other, LABELS[::-1]))
    code, out, err = run(
        capsys, "classify", clap.files[0], "--checkpoint", clap.small, "--checkpoint", shuffled,
        "--ensemble", "average", "--labels", *LABELS,
    )  # fmt: skip
    assert code == 2 and out == "" and err.count("\n") == 1
    assert (
        "other-order.pt: its classes ('rain on a roof', 'siren', 'dog barking') are not the zero-shot " in err
    )
    assert "labels ('dog barking', 'siren', 'rain on a roof')" in err


def test_serve_builds_a_zero_shot_service(clap, capsys, tmp_path):
    pytest.importorskip("litserve")
    from fastapi.testclient import TestClient

    from sed.serve.app import build_server
    from tests.serve.helpers import free_port

    template = "A recording of {} outdoors."
    server = build_server(str(clap.small), labels=LABELS, template=template, device="cpu")
    info = TestClient(server.app).get("/info").json()
    assert info["labels"] == LABELS and info["model_name"] == "prototype_classifier"
    api = server.lit_api  # what each worker process does: the zero-shot classifier built again
    api.setup("cpu")
    buf = io.BytesIO()
    sf.write(buf, clap.audio["a.wav"], SR, format="WAV", subtype="FLOAT")
    (answer,) = api.predict([api.decode_request({"name": "a.wav", "data": buf.getvalue(), "params": {}})])
    (row,) = _json(
        capsys, clap.files[0], "--checkpoint", clap.small, "--labels", *LABELS, "--template", template
    )
    np.testing.assert_allclose(_scores(answer["body"]), _scores(row["top_k"]), atol=1e-6)

    sed = _checkpoint(tmp_path)
    code, out, err = run(capsys, "serve", "--checkpoint", sed, "--labels", "siren", "--port", free_port())
    assert code == 2 and "is a sed checkpoint, which holds no text tower" in err and err.count("\n") == 1


def test_shards_score_as_their_files(clap, capsys, tmp_path):
    (tmp_path / "src" / "street").mkdir(parents=True)
    for name, wave in clap.audio.items():  # 16-bit: the shards hold the same samples
        sf.write(tmp_path / "src" / "street" / name, wave, SR, subtype="PCM_16")
    code, _, err = run(capsys, "shard", tmp_path / "src", "--out", tmp_path / "shards", "--format", "wav")
    assert code == 0, err
    by_shard = _json(capsys, "--shards", tmp_path / "shards", "--checkpoint", clap.small, "--labels", *LABELS)
    files = sorted((tmp_path / "src" / "street").iterdir())
    by_file = _json(capsys, *files, "--checkpoint", clap.small, "--labels", *LABELS)
    assert len(by_shard) == len(by_file) == 2
    for s, f in zip(sorted(by_shard, key=lambda r: r["file"]), by_file):
        np.testing.assert_allclose(_scores(s["top_k"]), _scores(f["top_k"]), atol=1e-6)


def test_which_sources_take_the_labels(clap, tmp_path):
    from sed.models.zeroshot import clap_source

    def is_clap_source(source) -> bool:
        return clap_source(source) is not None

    saved = save_model(tmp_path / "zs.pt", zero_shot_classifier(clap.small, LABELS))
    (tmp_path / "m.onnx").write_bytes(b"")
    assert is_clap_source(clap.small) and is_clap_source("clap-htsat-fused")  # a directory, a short name
    assert is_clap_source("laion/clap-htsat-unfused")  # a declared hub id: nothing downloaded to know
    assert not any(map(is_clap_source, [saved, tmp_path / "m.onnx", tmp_path, "ast-audioset-0.4593"]))
