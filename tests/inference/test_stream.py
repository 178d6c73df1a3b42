"""Streaming classification (sed.inference.stream, sed.audio.pcm, sedkit stream): stream == offline, readers,
memory."""

from __future__ import annotations

import argparse
import io
import json
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

from sed.audio.io import load_audio
from sed.audio.pcm import decode_pcm, iter_pcm
from sed.checkpoint import describe, save_model
from sed.errors import AudioError
from sed.inference.classifier import Classifier
from sed.inference.stream import Streamer, is_causal, offline_scores, open_input, stream
from sed.models import create_model

SR = 16000
LABELS = ["a", "b", "c"]


def _clf(name: str) -> Classifier:
    torch.manual_seed(3)
    model = create_model(name, num_classes=3, input_tdim=50, labels=LABELS).eval()
    return Classifier(model, describe(model), device="cpu")


@pytest.fixture(scope="module")
def causal():
    return _clf("tcn_tiny")


@pytest.fixture(scope="module")
def windowed():
    return _clf("cnn_tiny")


def noise(seconds: float, seed: int = 0, rate: int = SR) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(round(rate * seconds)) / rate
    return (0.2 * rng.uniform(-1, 1, t.shape) * (1 + np.sin(2 * np.pi * 0.7 * t))).astype(np.float32)


def _same(hops, ref, atol=1e-5):
    assert [round(h.time, 6) for h in hops] == [round(r.time, 6) for r in ref]
    assert max(np.abs(h.scores - r.scores).max() for h, r in zip(hops, ref)) <= atol


@pytest.mark.parametrize("which", ["causal", "windowed"])
@pytest.mark.parametrize("rate", [SR, 22050])
def test_a_file_streamed_equals_the_offline_sliding_window(which, rate, request, tmp_path):
    clf = request.getfixturevalue(which)
    assert is_causal(clf.model) == (which == "causal")
    path = tmp_path / "x.wav"
    sf.write(path, np.stack([noise(2.3, 1, rate), noise(2.3, 2, rate)], 1), rate, subtype="FLOAT")
    hops = list(Streamer(clf, hop=0.3).run(open_input(path, SR, block_frames=1234)))
    wave = load_audio(path, sample_rate=SR, channels="mono")[0][0]
    ref = offline_scores(clf, wave, hop=0.3, batch_size=4)
    assert len(hops) == 8 and hops[-1].time == pytest.approx(wave.shape[0] / SR)  # 7 hops and the tail
    _same(hops, ref)


@pytest.mark.parametrize("which", ["causal", "windowed"])
def test_chunk_sizes_do_not_matter_and_memory_stays_constant(which, request):
    clf = request.getfixturevalue(which)
    x = noise(3.0, 4)
    s = Streamer(clf, hop=0.05)
    sizes, hops, i = set(), [], 0
    rng = np.random.default_rng(0)
    while i < x.shape[0]:
        n = int(rng.choice([1, 100, 799, 800, 5000]))
        hops += s.feed(x[i : i + n])
        i += n
        if s.total > clf.clip_samples:  # the ring buffers are full from here on and never grow
            sizes.add(tuple(sorted(s.sizes().items())))
            if which == "causal":
                assert s.core.state.samples.shape[1] < 400  # at most one unfinished 25 ms frame
    hops += s.finish()
    assert len(hops) == 60 and len(sizes) == 1
    ring = dict(next(iter(sizes)))["ring"]
    assert ring == (50 * 32 if which == "causal" else clf.clip_samples)
    _same(hops, offline_scores(clf, x, hop=0.05))


def test_causal_scores_before_a_full_clip_and_a_short_input(causal, windowed):
    short = noise(0.2, 5)
    for clf in (causal, windowed):
        hops = list(Streamer(clf, hop=0.5).run([short]))
        assert [h.time for h in hops] == [0.2]
        _same(hops, offline_scores(clf, short, hop=0.5))
    for clf in (causal, windowed):
        assert list(Streamer(clf, hop=0.01).run([short[:300]])) == []  # no 25 ms frame yet
        assert [h.time for h in Streamer(clf, hop=0.01).run([short[:500]])] == [0.03, 0.03125]
    # the windowed model scores what has arrived exactly as clip mode scores a short file
    clip = windowed.score([torch.from_numpy(short)])[0].scores
    np.testing.assert_allclose(list(Streamer(windowed, hop=1.0).run([short]))[0].scores, clip, atol=1e-6)


def test_causal_hop_scores_are_the_clip_output_of_the_last_frames(causal):
    x = torch.from_numpy(noise(1.5, 6))
    hops = list(Streamer(causal, hop=0.5).run([x]))
    with torch.no_grad():
        frames = causal.model.frame_logits(x[None])[0]
    nf = causal.model.frontend.num_frames(8000)
    np.testing.assert_allclose(hops[0].scores, torch.softmax(frames[:nf].mean(0), -1).numpy(), atol=1e-6)
    last = causal.model.frontend.num_frames(24000)
    np.testing.assert_allclose(
        hops[2].scores, torch.softmax(frames[last - 50 : last].mean(0), -1).numpy(), atol=1e-6
    )


def test_stream_lines_carry_time_and_top_k(windowed):
    rows = list(stream(windowed, [noise(1.0, 7)], hop=0.5, top_k=2))
    assert [r["time"] for r in rows] == [0.5, 1.0]
    assert all(len(r["top_k"]) == 2 and r["top_k"][0]["label"] in LABELS for r in rows)
    with pytest.raises(ValueError, match="at least one sample"):
        Streamer(windowed, hop=0.0)


# ---------------------------------------------------------------------- raw PCM readers
def test_f32_and_s16_bytes_decode_and_downmix():
    x = np.array([[0.5, -0.25], [1.0, 0.0], [-1.0, -0.5]], np.float32)
    np.testing.assert_array_equal(decode_pcm(x.astype("<f4").tobytes(), 2, "f32"), x.mean(1))
    pcm = np.array([16384, -32768, 32767, 0], "<i2")
    np.testing.assert_array_equal(decode_pcm(pcm.tobytes(), 1, "s16"), pcm / 32768.0)
    stereo = noise(0.5, 8).reshape(-1, 2)
    data = stereo.astype("<f4").tobytes()
    got = np.concatenate(list(iter_pcm(io.BytesIO(data), 16000, channels=2, block_frames=333)))
    np.testing.assert_allclose(got, stereo.mean(1), atol=0)


def test_raw_input_is_resampled_incrementally():
    import soxr

    x = noise(1.0, 9, rate=8000)
    got = np.concatenate(list(iter_pcm(io.BytesIO(x.tobytes()), 8000, sample_rate=SR, block_frames=500)))
    assert got.shape == (16000,)  # ceil(T * new / old), as load_audio
    np.testing.assert_allclose(
        got, soxr.resample(x, 8000, SR, quality="HQ"), atol=1e-6
    )  # the one-shot result


@pytest.mark.parametrize(
    "data, fmt, channels, match",
    [
        (b"\x00\x01\x02", "s16", 1, "odd number of bytes"),
        (np.zeros(3, "<i2").tobytes(), "s16", 2, "not a multiple of 2 channels"),
        (np.array([0.1, np.nan, 0.2], "<f4").tobytes(), "f32", 1, r"NaN samples \(first at 0.000 s\)"),
        (np.array([0.0] * 1600 + [np.inf], "<f4").tobytes(), "f32", 1, r"Inf samples \(first at 0.100 s\)"),
        (np.array([5e4], "<f4").tobytes(), "f32", 1, "magnitude 5e"),
    ],
)
def test_bad_raw_input_is_one_line_naming_it(data, fmt, channels, match):
    with pytest.raises(AudioError, match=match) as e:
        list(iter_pcm(io.BytesIO(data), 16000, channels=channels, fmt=fmt))
    assert str(e.value).startswith("<stdin>: ") and "\n" not in str(e.value)


def test_open_input_reads_a_headerless_file_and_refuses_rate_for_a_decoded_one(tmp_path, write_wav):
    raw = tmp_path / "x.raw"
    raw.write_bytes((noise(0.25, 10) * 32767).astype("<i2").tobytes())
    assert sum(b.shape[0] for b in open_input(raw, SR, fmt="s16")) == 4000
    with pytest.raises(AudioError, match="file not found"):
        list(open_input(tmp_path / "nope.raw", SR, fmt="f32"))
    with pytest.raises(ValueError, match="raw PCM"):
        open_input(write_wav("a.wav", noise(0.1)), SR, rate=8000)


# ---------------------------------------------------------------------- sedkit stream
def _run_cli(argv, stdin_bytes, monkeypatch, capsys):
    from sed.cli import stream as verb

    parser = argparse.ArgumentParser()
    verb.add_verbs(parser.add_subparsers(dest="verb"))
    args = parser.parse_args(argv)
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BytesIO(stdin_bytes)))
    rc = verb.cmd_stream(args, None)
    return rc, [json.loads(line) for line in capsys.readouterr().out.splitlines()]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, causal):
    return save_model(tmp_path_factory.mktemp("ckpt") / "tcn.pt", causal.model)


def test_cmd_stream_on_stdin_pcm16_equals_the_python_api(ckpt, causal, monkeypatch, capsys):
    x = noise(1.2, 11, rate=8000)
    pcm = np.round(np.stack([x, -x], 1) * 32767).astype("<i2")
    rc, rows = _run_cli(
        [
            "stream",
            "--checkpoint",
            str(ckpt),
            "--format",
            "s16",
            "--rate",
            "8000",
            "--channels",
            "2",
            "--hop",
            "0.4",
            "--top-k",
            "2",
        ],
        pcm.tobytes(),
        monkeypatch,
        capsys,
    )
    assert rc == 0 and [r["time"] for r in rows] == [0.4, 0.8, 1.2]
    chunks = open_input(io.BytesIO(pcm.tobytes()), SR, fmt="s16", rate=8000, channels=2, block_frames=3200)
    api = list(stream(causal, chunks, hop=0.4, top_k=2))
    assert [[t["label"] for t in r["top_k"]] for r in rows] == [[t["label"] for t in r["top_k"]] for r in api]
    np.testing.assert_allclose(
        [[t["score"] for t in r["top_k"]] for r in rows],
        [[t["score"] for t in r["top_k"]] for r in api],
        atol=1e-6,
    )


def test_cmd_stream_usage_errors(ckpt, tmp_path, write_wav, monkeypatch, capsys):
    from sed.errors import UsageError

    wav = write_wav("a.wav", noise(0.5))
    with pytest.raises(UsageError, match="raw PCM"):
        _run_cli(
            ["stream", "--checkpoint", str(ckpt), "--input", str(wav), "--rate", "8000"],
            b"",
            monkeypatch,
            capsys,
        )
    with pytest.raises(
        UsageError, match="--hop/--window: hop must be at least one sample"
    ):  # under 1/16000 s
        _run_cli(["stream", "--checkpoint", str(ckpt), "--hop", "1e-5"], b"", monkeypatch, capsys)
    for argv in (
        ["--hop", "0"],
        ["--top-k", "0"],
        ["--channels", "0"],
        ["--rate", "-8000"],
        ["--threads", "0"],
    ):
        with pytest.raises(SystemExit):  # the option's type (sed.cli.options): one usage line
            _run_cli(["stream", "--checkpoint", str(ckpt), *argv], b"", monkeypatch, capsys)
        assert f"argument {argv[0]}: {argv[1]} is out of range" in capsys.readouterr().err
    with pytest.raises(UsageError, match="nope.pt"):
        _run_cli(["stream", "--checkpoint", str(tmp_path / "nope.pt")], b"", monkeypatch, capsys)


def test_sedkit_stream_through_the_main_parser(ckpt, write_wav, capsys):
    """Needs ``stream`` in sed.cli.main.VERB_GROUPS."""
    from sed.cli.main import main

    wav = write_wav("b.wav", noise(1.0, 12), subtype="FLOAT")
    assert (
        main(["stream", "--checkpoint", str(ckpt), "--input", str(wav), "--hop", "0.25", "--top-k", "1"]) == 0
    )
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["time"] for r in rows] == [0.25, 0.5, 0.75, 1.0] and all(len(r["top_k"]) == 1 for r in rows)
    assert main(["stream", "--checkpoint", str(ckpt), "--input", str(wav), "--channels", "2"]) == 2
    assert main(["stream", "--checkpoint", str(ckpt), "--input", str(wav) + ".missing"]) == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"hop": 1e305},
        {"hop": float("inf")},
        {"hop": float("nan")},
        {"hop": -1.0},
        {"hop": 0.5, "window": 1e305},
        {"hop": 0.5, "window": -2.0},
        {"hop": 0.5, "window": float("nan")},
    ],
)
def test_streamer_refuses_hops_and_windows_of_no_or_infinitely_many_samples(windowed, kwargs):
    with pytest.raises(ValueError, match="hop|window") as e:
        Streamer(windowed, **kwargs)
    assert "sample" in str(e.value)
    with pytest.raises(ValueError, match="hop|window"):
        offline_scores(windowed, noise(0.5), **kwargs)


def test_sedkit_stream_options_the_issue_found_are_usage_errors_before_any_allocation(ckpt, capsys):
    """``--hop 1e305``/``--window 1e305`` were OverflowError tracebacks, ``--window 1e7`` tried to allocate
    596 GiB and ``--channels 1000000`` raised MemoryError: now one line each, exit 2."""
    from sed.cli.main import main

    for option, value in [
        ("--hop", "1e305"),
        ("--window", "1e305"),
        ("--window", "1e7"),
        ("--channels", "1000000"),
        ("--rate", "1e9"),
        ("--hop", "-0.5"),
        ("--window", "0"),
        ("--top-k", "nan"),
    ]:
        with pytest.raises(SystemExit) as e:
            main(["stream", "--checkpoint", str(ckpt), "--format", "f32", option, value])
        err = capsys.readouterr().err
        assert (
            e.value.code == 2
            and len(err.splitlines()) == 1
            and err.startswith(f"error: sedkit stream: argument {option}")
        )
