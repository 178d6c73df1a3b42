"""Detection timelines from a clip model's windows (:mod:`sed.inference.detect_windows`): a planted tone found
at the hop's resolution, the timeline equal to ``classify``'s windows, a zero-shot CLAP model end to end
through ``sedkit detect``/``plot-events``, and the refusals (one line each)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from sed.checkpoint import save_model
from sed.cli.main import main
from sed.errors import CheckpointError
from sed.inference.classifier import Classifier
from sed.inference.detect_output import read_scores
from sed.inference.detect_windows import WindowDetector, load_detector
from sed.metrics.postprocess import filter_frames, frames_to_events, median_filter
from sed.models import create_model
from sed.models.family import tiny_kwargs
from tests.models.clap_dir import make_clap_dir

SR = 16000


class ShareModel(nn.Module):
    """A clip model whose scores are predictable: p(tone) = the share of a window's valid samples louder than
    0.5 (softmax over [log share, log (1 - share)])."""

    sample_rate = SR
    num_classes = 2

    def forward(self, wave, lengths=None):
        n = lengths if lengths is not None else torch.full((wave.shape[0],), wave.shape[1])
        valid = torch.arange(wave.shape[1])[None] < n[:, None]
        share = ((wave.abs() > 0.5) & valid).sum(1) / n
        return torch.stack([share, 1 - share], 1).clamp_min(1e-9).log()


def _main(*argv) -> int:
    try:
        return main([str(a) for a in argv])
    except SystemExit as e:  # argparse's usage errors
        return e.code


def _tone_file(path, seconds=5.0, on=2.0, off=3.0):
    rng = np.random.default_rng(0)
    w = 0.01 * rng.standard_normal(int(seconds * SR))
    t = np.arange(int(on * SR), int(off * SR))
    w[t] = 0.8 * np.sign(np.sin(2 * np.pi * 440 * t / SR) + 1e-3)
    sf.write(path, w.astype(np.float32), SR, subtype="FLOAT")
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("windows")
    _tone_file(d / "tone.wav")
    sf.write(d / "short.wav", np.zeros(int(0.3 * SR), np.float32), SR, subtype="FLOAT")
    (d / "bad.wav").write_bytes(b"RIFF not audio")
    save_model(
        d / "cnn.pt", create_model("cnn_tiny", num_classes=3, labels=["a", "b", "c"], clip_seconds=1.0)
    )
    save_model(
        d / "frames.pt", create_model("crnn_dcase2024", num_classes=3, **tiny_kwargs("crnn_dcase2024"))
    )
    clap = make_clap_dir(d / "clap", small=True)  # 16 kHz, 1-s clips
    return d, clap


def _share_detector(window=1.0, hop=0.25):
    return WindowDetector(
        Classifier(ShareModel(), {"labels": ["tone", "background"]}, device="cpu"), window, hop
    )


def test_planted_tone_is_an_event_at_the_hops_resolution(files):
    """Window i (start 0.25 i) scores the share of [start, start + 1) the tone fills; placed on the 0.25-s
    stretch around its centre, p(tone) > 0.5 exactly on the windows whose centre lies inside the tone."""
    det = _share_detector()
    probs, duration = det.frame_probs(files[0] / "tone.wav")
    starts = 0.25 * np.arange(17)  # 5 s: windows at 0, 0.25, ..., 4.0 (the last ends at 5 s)
    share = np.clip(1 - np.abs(starts - 2.0), 0, 1)
    np.testing.assert_allclose(probs[:, 0], share, atol=1e-4)
    assert duration == 5.0 and det.offset == 0.375
    (d,) = det.detect([files[0] / "tone.wav"], thresholds=0.6)
    # tone: windows 7..9 (centres 2.25..2.75), [0.375 + 7 * 0.25, 0.375 + 10 * 0.25); within hop / 2 of [2, 3]
    # background (share < 0.4): windows 0..5 and 11..16, the first from the file's start, the last to its end
    assert d.events == pytest.approx(
        [(0.0, 1.875, "background"), (2.125, 2.875, "tone"), (3.125, 5.0, "background")]
    )
    (low,) = det.detect([files[0] / "tone.wav"], thresholds={"tone": 0.45, "background": 1.0})
    assert low.events == pytest.approx([(1.875, 3.125, "tone")])  # share > 0.45: windows 6..10
    # the same post-processing as the frame path: median filter at the hop, merge gap, min duration
    kw = {"thresholds": 0.6, "min_duration": 1.5, "merge_gap": 1.3}
    (m,) = det.detect([files[0] / "tone.wav"], median=0.75, **kw)
    filtered = median_filter(probs, filter_frames(0.75, 0.25, det.labels))
    np.testing.assert_array_equal(m.probs, filtered)
    ref = frames_to_events(filtered, 0.25, det.labels, offset=0.375, **kw)
    assert ref == pytest.approx([(0.375, 4.625, "background")])  # merged over the tone, then edges
    assert m.events == pytest.approx([(0.0, 5.0, "background")])


def test_file_shorter_than_a_window_is_one_frame_spanning_it(files):
    det = _share_detector(window=1.0, hop=0.25)
    (d,) = det.detect([files[0] / "short.wav"], thresholds=0.6)
    assert d.probs.shape == (1, 2) and d.duration == pytest.approx(0.3)
    assert d.events == pytest.approx([(0.0, 0.3, "background")])


def test_timeline_equals_the_classify_windows(files):
    d = files[0]
    det = WindowDetector.from_pretrained(d / "cnn.pt", window=0.4, hop=0.3, device="cpu")
    clf = Classifier.from_pretrained(d / "cnn.pt", device="cpu")
    (r,) = clf.score([d / "tone.wav"], window=0.4, hop=0.3)
    probs, duration = det.frame_probs(d / "tone.wav")
    assert len(r.windows) == 17 and r.windows[-1][:2] == pytest.approx((4.8, 5.0))  # a tail window
    np.testing.assert_allclose(probs, np.stack([w[2] for w in r.windows]), atol=1e-6)
    assert duration == 5.0 and det.labels == ["a", "b", "c"] and det.offset == pytest.approx(0.05)


def test_zero_shot_clap_through_the_cli(files, tmp_path, capsys):
    d, clap = files
    labels = ["dog barking", "siren", "rain"]
    out, scores = tmp_path / "events.json", tmp_path / "scores"
    argv = ["--checkpoint", clap, "--labels", *labels, "--window", "0.5", "--hop", "0.25", "--device", "cpu"]
    rc = _main(
        *["detect", d / "tone.wav", d / "bad.wav", *argv, "--threshold", "0.34", "--format", "json"],
        *["--output", out, "--scores-dir", scores],
    )
    err = capsys.readouterr().err
    assert (
        rc == 1 and err.count("bad.wav") == 1 and "Traceback" not in err
    )  # a bad file: one line, the rest on
    (row,) = json.loads(out.read_text())
    times, sc, names = read_scores(scores / "tone.tsv")
    assert names == labels and sc.shape == (19, 3)  # windows at 0, 0.25, ..., 4.5
    np.testing.assert_allclose(times, 0.125 + 0.25 * np.arange(20), atol=1e-6)
    np.testing.assert_allclose(sc.sum(1), 1, atol=1e-5)  # a single-label zero-shot model: softmax
    clf = Classifier.from_pretrained(clap, labels=labels, device="cpu")
    (r,) = clf.score([d / "tone.wav"], window=0.5, hop=0.25)
    np.testing.assert_allclose(sc, np.stack([w[2] for w in r.windows]), atol=1e-5)
    det = WindowDetector.from_pretrained(clap, 0.5, 0.25, labels=labels, device="cpu")
    (ref,) = det.detect([d / "tone.wav"], thresholds=0.34)
    got = [(e["onset"], e["offset"], e["event_label"]) for e in row["events"]]
    assert got == pytest.approx([(round(a, 3), round(b, 3), lab) for a, b, lab in ref.events])
    assert got and row["duration"] == 5.0
    png = tmp_path / "p.png"
    assert _main("plot-events", d / "tone.wav", *argv, "--threshold", "0.34", "--out", png) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert _main("plot-events", "--scores", scores / "tone.tsv", "--out", tmp_path / "q.png") == 0
    capsys.readouterr()
    assert (
        _main("plot-events", "--scores", scores / "tone.tsv", "--hop", "1", "--out", tmp_path / "r.png") == 2
    )
    err = capsys.readouterr().err
    assert "a score file is already scored" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--checkpoint", "{d}/cnn.pt"], "cnn_tiny gives clip scores only, not frame scores: give a window"),
        (["--checkpoint", "{d}/frames.pt", "--window", "1"], "is a frame model: its frames are the timeline"),
        (
            ["--checkpoint", "{d}/cnn.pt", "--window", "1", "--block", "2"],
            "--block sets the blocks of a frame",
        ),
        (["--checkpoint", "{d}/cnn.pt", "--hop", "1"], "--hop needs --window"),
        (
            ["--checkpoint", "{c}", "--labels", "dog"],
            "zero-shot labels make a clip classifier: give a window",
        ),
        (["--checkpoint", "{c}", "--window", "0.5"], "has no classes: name them by text"),
        (
            ["--checkpoint", "{c}", "--labels", "dog", "--window", "2"],
            "window 2 s is longer than the model takes",
        ),
        (
            ["--checkpoint", "{d}/cnn.pt", "--window", "0.5", "--thresholds", "{d}/t.txt"],
            "unknown label(s) 'x'",
        ),
    ],
)
def test_refusals_are_one_line(files, capsys, argv, message):
    d, clap = files
    (d / "t.txt").write_text("x 0.5\n")
    rc = _main("detect", d / "tone.wav", *(a.format(d=d, c=clap) for a in argv))
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_python_api_refusals(files):
    d, clap = files
    with pytest.raises(CheckpointError, match="is a frame model") as e:
        load_detector(d / "frames.pt", window=1.0)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="hop 2 s is longer than the window 1 s: audio between windows"):
        _share_detector(window=1.0, hop=2.0)
    with pytest.raises(ValueError, match="whole numbers of samples"):
        _share_detector(window=1.0, hop=1e-5)
    assert type(load_detector(d / "cnn.pt", window=0.5, device="cpu")).__name__ == "WindowDetector"
