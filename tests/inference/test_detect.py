"""Detection post-processing (exact on hand-made arrays) and block-wise scoring of long files
(sed.metrics.postprocess, sed.inference.detect)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import soundfile as sf
import torch

from sed.checkpoint import save_model
from sed.errors import CheckpointError, DatasetError
from sed.inference.detect import Detector
from sed.metrics.postprocess import (
    class_values,
    filter_frames,
    frames_to_events,
    median_filter,
    read_class_values,
)
from sed.models import create_model
from tests.inference.detect_toy import build, registered

SR = 16000
LABELS = ["dog", "cat", "speech"]


# ---------------------------------------------------------------- post-processing, exact
def test_median_filter_per_class_reflect_boundary():
    probs = np.array(
        [
            [0, 1, 1],
            [1, 1, 0],
            [0, 0, 1],
            [0, 0, 0],
            [1, 0, 1],
            [1, 0, 0],
            [1, 0, 1],
            [0, 0, 0],
        ],
        dtype=np.float32,
    )
    out = median_filter(probs, [3, 5, 1])
    np.testing.assert_array_equal(out[:, 0], [0, 0, 0, 0, 1, 1, 1, 0])
    # reflect mode: the edge is extended by its mirror (b a | a b ...), so the leading 1 1 survive a
    # 5-frame filter (zero padding would drop frame 0)
    np.testing.assert_array_equal(out[:, 1], [1, 1, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(out[:, 2], probs[:, 2])  # length 1: unchanged
    np.testing.assert_array_equal(median_filter(probs, 1), probs)


def test_filter_lengths_in_seconds_are_odd_frames():
    hop = 0.064  # the DCASE baseline's frames
    np.testing.assert_array_equal(filter_frames(0.45, hop, ["a"]), [7])  # 7.03 frames
    np.testing.assert_array_equal(filter_frames(0.5, hop, ["a"]), [9])  # 7.8 -> 8 -> odd 9
    np.testing.assert_array_equal(filter_frames(0.0, hop, ["a"]), [1])
    np.testing.assert_array_equal(filter_frames({"a": 0.2, "b": 1.0}, 0.1, ["a", "b"]), [3, 11])
    with pytest.raises(ValueError, match="no median filter length for b"):
        filter_frames({"a": 0.2}, 0.1, ["a", "b"])


def test_frames_to_events_exact():
    hop = 0.1
    col = np.array([0.2, 0.9, 0.8, 0.5, 0.7, 0.6, 0.1, 0.1, 0.9, 0.9])
    probs = np.stack([col, 1 - col], 1)
    # strict threshold: 0.5 is off; frame i covers [i * hop, (i + 1) * hop)
    assert frames_to_events(probs, hop, ["a", "b"], {"a": 0.5, "b": 0.85}) == [
        (pytest.approx(0.1), pytest.approx(0.3), "a"),
        (pytest.approx(0.4), pytest.approx(0.6), "a"),
        (pytest.approx(0.6), pytest.approx(0.8), "b"),
        (pytest.approx(0.8), pytest.approx(1.0), "a"),
    ]
    a_only = probs[:, :1]

    def ev(**kw):
        return [(round(s, 6), round(e, 6)) for s, e, _ in frames_to_events(a_only, hop, ["a"], **kw)]

    assert ev(merge_gap=0.1) == [(0.1, 0.6), (0.8, 1.0)]  # the 0.1 s gap merged, the 0.2 s one not
    assert ev(merge_gap=0.05) == [(0.1, 0.3), (0.4, 0.6), (0.8, 1.0)]
    assert ev(merge_gap=0.2) == [(0.1, 1.0)]
    assert ev(min_duration=0.25) == []  # every event is 0.2 s
    assert ev(min_duration=0.2) == [(0.1, 0.3), (0.4, 0.6), (0.8, 1.0)]
    # gaps first, then lengths: the merged 0.5 s event survives a 0.3 s minimum
    assert ev(merge_gap=0.1, min_duration=0.3) == [(0.1, 0.6)]
    assert frames_to_events(a_only, hop, ["a"], offset=10.0)[0][:2] == (
        pytest.approx(10.1),
        pytest.approx(10.3),
    )
    assert frames_to_events(np.zeros((0, 1)), hop, ["a"]) == []
    with pytest.raises(ValueError, match=r"\[frames, 2\]"):
        frames_to_events(a_only, hop, ["a", "b"])


def test_class_values_and_file(tmp_path):
    np.testing.assert_array_equal(class_values(0.3, ["a", "b"]), [0.3, 0.3])
    with pytest.raises(ValueError, match="unknown label.*'x'.*no threshold for b"):
        class_values({"a": 0.1, "x": 0.2}, ["a", "b"], "threshold")
    f = tmp_path / "th.tsv"
    f.write_text("event_label\tthreshold\n# tuned on val\nAlarm_bell_ringing\t0.4\nDog bark  0.55\n\n")
    assert read_class_values(f, "threshold", high=1.0) == {"Alarm_bell_ringing": 0.4, "Dog bark": 0.55}
    for text, reason in [
        ("a 0.4\nb x\n", "line 2: 'x' is not a number"),
        ("a 0.4\nb 1.5\n", "line 2: threshold 1.5 is out of range"),
        ("a 0.4\na 0.5\n", "line 2: 'a' is given twice"),
        ("a\n", "line 1: expected 'label threshold'"),
        ("# nothing\n", "no 'label threshold' lines"),
    ]:
        f.write_text(text)
        with pytest.raises(DatasetError, match=reason) as e:
            read_class_values(f, "threshold", high=1.0)
        assert str(e.value).startswith(str(f)) and "\n" not in str(e.value)


# ---------------------------------------------------------------- block-wise scoring
def _wave(seconds: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = 0.05 * torch.randn(int(seconds * SR), generator=g)
    for k in range(int(seconds)):  # bursts that light some frames
        if k % 3 == 0:
            w[k * SR : k * SR + SR // 3] *= 8
    return w


@pytest.mark.parametrize("block,overlap", [(1.0, 0.2), (0.75, 0.3), (2.0, 0.04)])
def test_blockwise_centre_equals_whole(block, overlap):
    """Receptive field 1 frame either side, inside half the overlap: every frame and event equal."""
    det = Detector(build(kernel=3), device="cpu", block=block, overlap=overlap, stitch="centre", batch_size=3)
    wave = _wave(6.3)
    probs, duration = det.frame_probs(wave)
    whole, _ = det.frame_probs(wave, whole=True)
    assert probs.shape == whole.shape == (630, 3) and duration == pytest.approx(6.3)
    np.testing.assert_allclose(probs, whole, atol=1e-5)
    th = float(np.median(whole))
    assert frames_to_events(probs, det.hop, LABELS, th) == frames_to_events(whole, det.hop, LABELS, th)
    assert len(frames_to_events(whole, det.hop, LABELS, th)) > 5


def test_blockwise_mean_equals_whole_for_local_frames_and_differs_only_near_cuts():
    wave = _wave(5.0)
    local = Detector(build(kernel=1), device="cpu", block=1.0, overlap=0.5)  # frames see only themselves
    np.testing.assert_allclose(local.frame_probs(wave)[0], local.frame_probs(wave, whole=True)[0], atol=1e-5)
    wide = Detector(build(kernel=5), device="cpu", block=1.0, overlap=0.5)  # 2 frames either side
    diff = np.abs(wide.frame_probs(wave)[0] - wide.frame_probs(wave, whole=True)[0]).max(1)
    cuts = np.arange(0, 500, 50)  # block starts and ends every 0.5 s = 50 frames
    near = np.abs(np.arange(500)[:, None] - cuts[None, :]).min(1) <= 2
    assert diff[near].max() > 1e-3 and diff[~near].max() < 1e-5


def test_fixed_length_model_keeps_the_frames_of_the_audio():
    """A fixed-length model pads every block to its clip: only the frames that reach into the audio count,
    for each block and for the file (not the model's fixed count)."""
    wave = _wave(5.55)
    fixed = Detector(build(kernel=1, clip=SR), device="cpu", overlap=0.5, stitch="centre")
    assert fixed.block == SR  # its clip
    probs, _ = fixed.frame_probs(wave)
    ref, _ = Detector(build(kernel=1), device="cpu", block=1.0, overlap=0.5).frame_probs(wave, whole=True)
    assert probs.shape == ref.shape == (555, 3)
    np.testing.assert_allclose(probs, ref, atol=1e-5)


@pytest.mark.parametrize("name,kwargs", [("cnn_tiny", {"clip_seconds": 1.0}), ("tcn_tiny", {})])
def test_a_family_frame_head_checkpoint_scores_a_long_file(tmp_path, name, kwargs):
    """A registry family with its frame head, saved and loaded: block-wise frames cover the file, in blocks
    of the model's clip."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, labels=LABELS, frame_pooling="attention", **kwargs)
    save_model(tmp_path / "m.pt", model)
    det = Detector.from_pretrained(tmp_path / "m.pt", device="cpu")
    wave = _wave(12.4)
    probs, duration = det.frame_probs(wave)
    assert det.labels == LABELS and duration == pytest.approx(12.4)
    assert probs.shape == (det._frames_of(len(wave)), 3) and np.isfinite(probs).all()
    assert len(probs) == pytest.approx(12.4 / det.hop, abs=2)
    # blocks of the model's clip on the frame grid (cnn_tiny: 1 s holds 3 of its 320 ms frames)
    assert det.block == model.clip_samples // det.hop_samples * det.hop_samples
    assert det.block == {"cnn_tiny": 15360, "tcn_tiny": 79840}[name]


def test_detect_file_resampled_stereo_and_bad_files(tmp_path):
    wave = _wave(3.0).numpy()
    stereo = np.stack([wave, wave], 1)
    path = tmp_path / "a.wav"
    sf.write(path, stereo, SR, subtype="FLOAT")
    (tmp_path / "bad.wav").write_bytes(b"RIFF....nonsense")
    det = Detector(build(), device="cpu", block=1.0, overlap=0.2, stitch="centre")
    res = list(det.detect([path, tmp_path / "bad.wav", path], thresholds=0.5, median=0.05))
    assert [r.error is None for r in res] == [True, False, True]
    assert res[1].error.startswith(str(tmp_path / "bad.wav")) and "\n" not in res[1].error
    ref, _ = det.frame_probs(torch.from_numpy(wave), whole=True)
    np.testing.assert_allclose(res[0].probs, median_filter(ref, 5), atol=1e-5)
    assert res[0].duration == pytest.approx(3.0) and res[0].events == res[2].events
    assert res[0].events == frames_to_events(median_filter(ref, 5), det.hop, LABELS, 0.5)
    # 44.1 kHz: read resampled to the model's rate, block by block
    sf.write(tmp_path / "b.wav", stereo[:, 0], 44100)
    (r,) = det.detect([tmp_path / "b.wav"])
    assert r.error is None and r.probs.shape == (round(3.0 * 16000 / 44100 * 100), 3)


def test_checkpoint_without_frames_is_one_line(tmp_path):
    with registered():
        ok = tmp_path / "toy.pt"
        save_model(ok, build())
        assert Detector.from_pretrained(ok, device="cpu").labels == LABELS
    clip = tmp_path / "clip.pt"
    save_model(clip, create_model("cnn_tiny", num_classes=3, labels=LABELS, clip_seconds=1.0))
    with pytest.raises(CheckpointError, match="cnn_tiny gives clip scores only") as e:
        Detector.from_pretrained(clip)
    assert "\n" not in str(e.value) and str(e.value).startswith(str(clip))


def test_memory_is_flat_in_file_length(tmp_path):
    """The peak of Python/numpy allocations (tracemalloc: what soundfile reads, the frame arrays) while
    scoring a 2 minute file is that of a 30 s one plus the longer frame arrays, far below the file's
    decoded size."""
    det = Detector(build(), device="cpu", block=5.0, overlap=1.0, stitch="centre", batch_size=8)
    noise = (np.random.default_rng(0).standard_normal(10 * SR) * 3000).astype(np.int16)
    peaks = {}
    for seconds in (30, 120):
        path = tmp_path / f"{seconds}.wav"
        with sf.SoundFile(path, "w", SR, 1, "PCM_16") as f:
            for _ in range(seconds // 10):
                f.write(noise)
        tracemalloc.start()
        probs, _ = det.frame_probs(path)
        peaks[seconds] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert probs.shape == (seconds * 100, 3)
    decoded = 120 * SR * 4  # float32 samples of the long file: 7.7 MB
    assert peaks[120] < decoded / 5
    # what grows is the frame arrays (100 frames/s, 3 classes, float64 with their temporaries), never the
    # samples: 90 s more audio is 5.8 MB decoded, 0.2 MB of frames
    assert peaks[120] - peaks[30] < 90 * SR * 4 / 5
