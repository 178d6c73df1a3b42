"""Property-based fuzz test of ``sedkit stream``: its raw PCM input and its options.

Input: random bytes, or float32 / 16-bit PCM of 1 to 4 interleaved channels at odd rates, then cut
inside a sample or a frame, or given NaN, infinite or huge samples; on stdin, or as a headerless file
with a hostile name (or a missing one). Options: every numeric option drawn from good values, edges
and absurd ones (NaN, inf, 0, negatives, 1e305, sizes that would allocate gigabytes, hops under one
sample), ``--format``/``--rate``/``--channels`` with a decoded file.

The invariant: exit 2 with one ``error:`` line exactly when an option is out of its stated range
(or not for this input); otherwise exit 0 with valid lines (JSON, times rising to the input's end,
``top_k`` of the model's labels with scores in [0, 1]) when the bytes are whole frames of finite,
plausible samples, and else exit 1 with one line naming the input after the lines before the bad
sample. Never a traceback, a hang or a large allocation (:func:`tests.fuzz.strategies.watchdog`).
"""

from __future__ import annotations

import io
import json
import math
import sys
from contextlib import redirect_stderr, redirect_stdout
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import event, example, given
from hypothesis import strategies as st

from sed.checkpoint import save_model
from sed.cli.main import main
from sed.errors import printable
from sed.models import create_model
from tests.fuzz.strategies import STEMS, scaled, watchdog

LABELS = ["a", "b", "c"]
MODEL_RATE = 16000
MAX_AMPLITUDE = 1000  # float PCM samples beyond this are refused (sed.audio.io.MAX_AMPLITUDE)
WIDTH = {"f32": 4, "s16": 2}

#: option -> (values in its range, values out of it, or not for this model: a hop under one sample)
OPTIONS = {
    "--hop": (["0.05", "0.013", "0.5", "3600"], ["1e-5", "0", "-0.5", "nan", "inf", "1e305", "3601"]),
    "--window": ([None, "0.1", "1", "600"], ["601", "1e7", "1e305", "-inf", "1e-6"]),
    "--rate": ([None, "8000", "22050", "1000", "768000"], ["999", "0", "-16000", "1e9", "16000.5"]),
    "--channels": ([None, "1", "2", "3", "256"], ["0", "257", "1000000", "two"]),
    "--top-k": (["1", "2", "10000"], ["0", "10001", "nan"]),
}


@st.composite
def options(draw) -> tuple[dict[str, str | None], bool]:
    """(option -> text, all in range): good values, and at most one option out of its range."""
    chosen = {opt: draw(st.sampled_from(good)) for opt, (good, _) in OPTIONS.items()}
    bad = draw(st.sampled_from([None] * 10 + list(OPTIONS)))
    if bad is not None:
        chosen[bad] = draw(st.sampled_from(OPTIONS[bad][1]))
    return chosen, bad is None


FORMAT = st.sampled_from([None, "f32", "s16"])


@st.composite
def pcm(draw, fmt: str, channels: int, rate: int) -> bytes:
    """Up to a quarter second of whole frames of a plausible signal (or of zeros), then perhaps a hostile
    sample or a cut (short: every hop scores up to a window of audio, and hops may be 13 ms apart)."""
    frames = min(draw(st.sampled_from([4000, 2000, 800, 1, 0]) | st.integers(0, 4000)), rate // 4)
    rng = np.random.default_rng(draw(st.integers(0, 3)))
    x = (rng.uniform(-1, 1, (frames, channels)) * draw(st.sampled_from([0.0, 0.01, 0.5, 1.0]))).astype(
        np.float32
    )
    if fmt == "f32" and frames and draw(st.booleans()):
        x[draw(st.integers(0, frames - 1)), draw(st.integers(0, channels - 1))] = draw(
            st.sampled_from([np.nan, np.inf, -np.inf, 1e4, 1000.0, -1000.5])
        )
    data = (
        x.astype("<f4").tobytes()
        if fmt == "f32"
        else np.round(np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()
    )
    cut = draw(st.sampled_from([0, 0, 1, 3, WIDTH[fmt], WIDTH[fmt] * channels - 1]))
    return data[: max(0, len(data) - cut)]


def _whole_plausible_frames(data: bytes, fmt: str, channels: int) -> bool:
    if len(data) % (WIDTH[fmt] * channels):
        return False
    if fmt == "s16":
        return True
    x = np.frombuffer(data, "<f4")
    return bool(np.isfinite(x).all() and (np.abs(x) <= MAX_AMPLITUDE).all())


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(3)
    model = create_model("cnn_tiny", num_classes=3, input_tdim=50, labels=LABELS).eval()
    return save_model(tmp_path_factory.mktemp("stream") / "m.pt", model)


def run(argv: list[str], stdin: bytes) -> tuple[int, list[str], list[str]]:
    out, err = io.StringIO(), io.StringIO()
    with (
        watchdog(),
        mock.patch.object(sys, "stdin", SimpleNamespace(buffer=io.BytesIO(stdin))),
        redirect_stdout(out),
        redirect_stderr(err),
    ):  # the watchdog's faulthandler needs the real stderr
        try:
            code = main(argv)
        except SystemExit as e:  # argparse: a usage error
            code = e.code
    return code, out.getvalue().splitlines(), err.getvalue().splitlines()


def check_lines(lines: list[str], top_k: int, hop: float, samples: int | None = None) -> None:
    """Valid result lines at ``hop, 2 hop, ...`` seconds; with the ``samples`` (model rate) of a whole
    input, the last ends with it (there is one once the first 25-ms feature frame is complete)."""
    times = []
    for line in lines:
        row = json.loads(line)
        assert set(row) == {"time", "top_k"} and len(row["top_k"]) == min(top_k, len(LABELS))
        assert all(t["label"] in LABELS and 0 <= t["score"] <= 1 for t in row["top_k"])
        times.append(row["time"])
    assert times == sorted(set(times)), f"times not rising: {times}"
    step = round(hop * MODEL_RATE)
    assert all(round(t * MODEL_RATE) % step == 0 for t in times[:-1]), times
    if samples is not None:
        assert times[-1:] == ([round(samples / MODEL_RATE, 6)] if samples >= 0.025 * MODEL_RATE else []), (
            times,
            samples,
        )


@scaled(0.3)
@given(
    data=st.data(),
    opts=options(),
    fmt=FORMAT,
    where=st.sampled_from(["stdin", "stdin", "stdin", "file", "missing"]),
    stem=STEMS,
    random_bytes=st.sampled_from([False, False, True]),
)
@example(
    data=None,
    opts=({"--hop": "1e305", "--top-k": "5"}, False),
    fmt=None,
    where="stdin",
    stem="f",
    random_bytes=True,
)
@example(
    data=None,
    opts=({"--hop": "0.5", "--window": "1e7", "--channels": "1000000"}, False),
    fmt="s16",
    where="stdin",
    stem="f",
    random_bytes=True,
)
def test_fuzz_stream_raw_input_and_options(checkpoint, scratch, data, opts, fmt, where, stem, random_bytes):
    opts, in_range = opts
    n_channels = int(opts.get("--channels") or 1) if in_range else 1
    raw_fmt = fmt or "f32"
    if data is None:  # an @example
        stdin = b"\x00" * 64
    elif random_bytes:
        stdin = data.draw(st.binary(max_size=1000))  # at most half a second (s16 at 1000 Hz)
    else:
        stdin = data.draw(
            pcm(raw_fmt, min(n_channels, 4), int(opts["--rate"] or MODEL_RATE) if in_range else 1000)
        )
    argv = ["stream", "--checkpoint", str(checkpoint)]
    for flag, value in opts.items():
        argv += [flag, value] if value is not None else []
    argv += ["--format", fmt] if fmt else []
    path = None
    if where != "stdin":
        path = scratch() / f"{stem}.raw"
        if where == "file":
            path.write_bytes(stdin)
        argv += ["--input", str(path)]
    code, out, err = run(argv, stdin)
    event(f"exit {code}, {'some' if out else 'no'} lines")

    assert all(
        line.startswith(("error: ", "note: ")) and line.isprintable() and len(line) < 1000 for line in err
    ), err
    errors = [line for line in err if line.startswith("error: ")]
    decoded_file = where != "stdin" and fmt is None
    if not in_range or decoded_file and (opts.get("--rate") or opts.get("--channels")):
        assert code == 2 and len(errors) == 1 and not out, (argv, err)
        return
    assert code in (0, 1) and len(errors) == (code == 1), (argv, err)
    top, hop = int(opts["--top-k"]), float(opts["--hop"])
    if where == "missing":
        assert code == 1 and printable(str(path)) in errors[0]
    elif decoded_file:  # the bytes read by their header: a good file streams, a bad one is one line naming it
        check_lines(out, top, hop)
        assert code == 0 or printable(str(path)) in errors[0]
    elif _whole_plausible_frames(stdin, raw_fmt, n_channels):
        assert code == 0, (argv, err, len(stdin))
        rate = int(opts["--rate"] or MODEL_RATE)
        check_lines(out, top, hop, math.ceil(len(stdin) // (WIDTH[raw_fmt] * n_channels) * MODEL_RATE / rate))
    else:  # the lines before the bad sample, then one line naming the input
        assert code == 1 and printable(str(path) if path else "<stdin>") in errors[0], (argv, err)
        check_lines(out, top, hop)
