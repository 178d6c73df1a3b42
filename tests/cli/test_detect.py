"""``sedkit detect`` and ``sedkit plot-events``, in process (the test registers the toy frame model)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from sed.checkpoint import save_model
from sed.cli.main import main
from sed.inference.detect import Detector
from sed.models import create_model
from tests.inference.detect_toy import build, registered

SR = 16000
LABELS = ["dog", "cat", "speech"]


@pytest.fixture
def setup(tmp_path):
    rng = np.random.default_rng(1)
    for name, seconds in (("a", 2.5), ("b", 4.0)):
        w = 0.05 * rng.standard_normal(int(seconds * SR))
        w[SR // 2 : SR] *= 10
        sf.write(tmp_path / f"{name}.wav", w.astype(np.float32), SR, subtype="FLOAT")
    (tmp_path / "bad.wav").write_bytes(b"RIFF not audio")
    with registered():
        save_model(tmp_path / "toy.pt", build())
        yield tmp_path


def _run(capsys, *argv):
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:  # argparse's usage errors
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def test_detect_tsv_scores_dir_and_failures(setup, capsys):
    t = setup
    rc, out, err = _run(
        capsys,
        "detect",
        t / "a.wav",
        t / "bad.wav",
        t / "b.wav",
        "--checkpoint",
        t / "toy.pt",
        "--threshold",
        "0.45",
        "--block",
        "1",
        "--overlap",
        "0.2",
        "--stitch",
        "centre",
        "--output",
        t / "events.tsv",
        "--scores-dir",
        t / "scores",
    )
    assert rc == 1 and out == ""
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(t / "bad.wav") in errors[0]
    det = Detector.from_pretrained(t / "toy.pt", device="cpu", block=1.0, overlap=0.2, stitch="centre")
    rows = (t / "events.tsv").read_text().splitlines()
    assert rows[0] == "filename\tonset\toffset\tevent_label"
    expected = [
        f"{name}\t{a:.3f}\t{b:.3f}\t{lab}"
        for name in ("a.wav", "b.wav")
        for a, b, lab in next(det.detect([t / name], thresholds=0.45)).events
    ]
    assert rows[1:] == expected and len(expected) > 2
    from sed_scores_eval.base_modules.io import read_sed_scores

    assert sorted(p.name for p in (t / "scores").iterdir()) == ["a.tsv", "b.tsv"]
    df = read_sed_scores(str(t / "scores" / "b.tsv"))
    assert list(df.columns) == ["onset", "offset", *LABELS] and len(df) == 400
    probs, _ = det.frame_probs(t / "b.wav")
    np.testing.assert_allclose(df[LABELS].to_numpy(), probs, atol=1e-6)
    np.testing.assert_allclose(df["offset"].to_numpy()[-1], 4.0)


def test_detect_formats_and_postprocessing_options(setup, capsys):
    t = setup
    base = ["detect", t / "a.wav", "--checkpoint", t / "toy.pt", "--block", "1"]
    (t / "th.txt").write_text("dog 0.3\ncat 0.9\nspeech 0.5\n")
    rc, out, _ = _run(
        capsys, *base, "--format", "json", "--thresholds", t / "th.txt", "--median-filter", "0.05"
    )
    det = Detector.from_pretrained(t / "toy.pt", device="cpu", block=1.0)
    (ref,) = det.detect([t / "a.wav"], {"dog": 0.3, "cat": 0.9, "speech": 0.5}, median=0.05)
    rows = json.loads(out)
    assert rc == 0 and rows[0]["file"] == str(t / "a.wav") and rows[0]["duration"] == 2.5
    assert [(e["onset"], e["offset"], e["event_label"]) for e in rows[0]["events"]] == [
        (round(a, 3), round(b, 3), lab) for a, b, lab in ref.events
    ]
    rc, out, _ = _run(capsys, *base, "--format", "csv", "--threshold", "0.0", "--merge-gap", "5")
    # every frame is above 0: one event per class spanning the file (rows by onset, then label)
    assert rc == 0 and out.splitlines() == ["file,onset,offset,event_label"] + [
        f"{t / 'a.wav'},0.000,2.500,{lab}" for lab in sorted(LABELS)
    ]
    rc, out, _ = _run(capsys, *base, "--threshold", "0.0", "--min-duration", "3")
    assert rc == 0 and out.splitlines() == ["filename\tonset\toffset\tevent_label"]


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--thresholds", "{t}/th.txt"], "unknown label(s) 'bird'"),
        (["--median-filter", "{t}/missing.txt"], "missing.txt: cannot read it"),
        (["--median-filter", "90"], "--median-filter 90 is out of range"),
        (["--threshold", "1.5"], "1.5 is out of range"),
        (["--checkpoint", "{t}/clip.pt"], "cnn_tiny gives clip scores only"),
        (["--output", "{t}/a.wav"], "is an input"),
    ],
)
def test_detect_usage_errors_are_one_line(setup, capsys, extra, message):
    t = setup
    (t / "th.txt").write_text("dog 0.3\nbird 0.9\n")
    save_model(t / "clip.pt", create_model("cnn_tiny", num_classes=3, labels=LABELS, clip_seconds=1.0))
    argv = ["detect", t / "a.wav", "--checkpoint", t / "toy.pt"] + [x.format(t=t) for x in extra]
    rc, out, err = _run(capsys, *argv)
    assert rc in (1, 2) and out == "" and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (t / "a.wav").read_bytes().startswith(b"filename")  # an input is never overwritten


def test_plot_events_from_checkpoint_and_from_scores(setup, capsys, monkeypatch):
    import sed.metrics.curves as curves

    t = setup
    (t / "gt.tsv").write_text(
        "filename\tonset\toffset\tevent_label\na.wav\t0.5\t1.0\tdog\nb.wav\t0\t1\tcat\n"
    )
    figures = []
    save = curves.save_figure
    monkeypatch.setattr(curves, "save_figure", lambda fig, out: figures.append(fig) or save(fig, out))
    argv = ["plot-events", t / "a.wav", "--checkpoint", t / "toy.pt", "--ground-truth", t / "gt.tsv"]
    rc, _, err = _run(capsys, *argv, "--out", t / "a.png", "--threshold", "0.45")
    assert rc == 0 and (t / "a.png").read_bytes()[:4] == b"\x89PNG" and str(t / "a.png") in err
    spec, scores, boxes = figures[0].axes[:3]
    assert spec.get_ylabel() == "frequency (Hz)" and boxes.get_xlabel() == "time (s)"
    assert scores.get_ylabel() == "score (0-1)" and [x.get_text() for x in boxes.get_yticklabels()] == LABELS
    assert [x.get_text() for x in scores.get_legend().get_texts()] == LABELS
    assert "1 in the ground truth" in spec.get_title()
    # from a score file of sedkit detect (no audio: no spectrogram)
    _run(capsys, "detect", t / "a.wav", "--checkpoint", t / "toy.pt", "--scores-dir", t / "s")
    rc, _, _ = _run(capsys, "plot-events", "--scores", t / "s" / "a.tsv", "--out", t / "s.png")
    assert rc == 0 and (t / "s.png").exists() and len(figures) == 2
    assert [x.get_text() for x in figures[1].axes[1].get_yticklabels()] == LABELS
    # a score file with its audio: the title names the audio, not the score file
    rc, _, _ = _run(capsys, "plot-events", t / "a.wav", "--scores", t / "s" / "a.tsv", "--out", t / "sa.png")
    assert rc == 0 and figures[2].axes[0].get_title().startswith("a.wav: ")
    rc, _, err = _run(capsys, "plot-events", t / "a.wav", "--out", t / "x.png")
    assert rc == 2 and "give either --checkpoint" in err and not (t / "x.png").exists()


def test_detect_of_a_waveform_matches_the_file(setup):
    t = setup
    det = Detector.from_pretrained(t / "toy.pt", device="cpu")
    wave, _ = sf.read(t / "b.wav", dtype="float32")
    (a,) = det.detect([t / "b.wav"])
    (b,) = det.detect([("b", torch.from_numpy(wave))])
    assert a.events == b.events and np.allclose(a.probs, b.probs)
