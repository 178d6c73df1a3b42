"""The service's parts without a server: parameters, the spectrogram's picture, the batch counts, the host
rule."""

from __future__ import annotations

import numpy as np
import pytest

from sed.errors import UsageError
from sed.serve.answers import reduce_spectrogram
from sed.serve.app import Stats, check_host
from sed.serve.requests import ServeError, parse_params
from sed.serve.stream import stream_params


def test_parameters_are_checked_and_typed():
    got = parse_params({"top_k": "3", "function_to_apply": "Sigmoid", "window": "2", "detect": "yes"})
    assert got == {"top_k": 3, "function_to_apply": "sigmoid", "window": 2.0, "detect": True}
    assert parse_params({"top_k": 2, "spectrogram": False, "api_key": "k"}) == {
        "top_k": 2,
        "spectrogram": False,
    }
    bad = [
        ({"top_k": "0"}, "out of range (1 <= top_k <= 10000)"),
        ({"top_k": 2.5}, "is not an integer"),
        ({"top_k": True}, "is not an integer"),
        ({"window": "nan"}, "out of range"),
        ({"window": "-1"}, "out of range"),
        ({"function_to_apply": "relu"}, "is not softmax | sigmoid | none"),
        ({"detect": "maybe"}, "is not true or false"),
        ({"hop": "1"}, "hop needs window"),
        ({"threshold": "0.3"}, "need detect=true"),
        ({"bogus\n": "1"}, "unknown parameter 'bogus\\n'"),
        ({"window": "9" * 500}, "out of range"),
    ]
    for raw, message in bad:
        with pytest.raises(ServeError) as e:
            parse_params(raw)
        assert e.value.status == 400 and message in e.value.message and "\n" not in e.value.message


def test_stream_parameters():
    assert stream_params({}) == {"hop": 0.5, "window": None, "top_k": 5, "format": "f32le"}
    assert stream_params({"hop": "0.25", "window": "", "format": "s16le"})["hop"] == 0.25
    for raw in ({"hop": "0"}, {"format": "f64"}, {"rate": "8000"}):
        with pytest.raises(ServeError):
            stream_params(raw)


def test_spectrogram_picture_is_bounded_and_scaled():
    db = np.full((513, 2500), -200.0)
    db[100:110, :] = 0.0  # a loud band: power-averaged into its rows
    db[:, 2000:] = -30.0  # louder background at the end, 30 dB below the band
    db[100:110, 2000:] = 0.0
    pic = reduce_spectrogram(db, 0.01, 16000)
    rows = np.array(pic["rows"])
    assert rows.shape == (103, 834) and rows.dtype.kind == "i"  # ceil(513 / 5) rows, ceil(2500 / 3) columns
    assert pic["seconds_per_column"] == pytest.approx(0.03) and pic["max_hz"] == 8000
    lo, hi = pic["db_range"]
    assert hi == pytest.approx(0.0) and lo == pytest.approx(-80.0)
    assert rows[20:22].min() == 255 and rows[0, 0] == 0  # the band; silence is below the range
    assert rows[0, -1] == round((80 - 30) / 80 * 255)  # -30 dB: 5/8 of the way up


def test_stats_count_batches_by_their_tags():
    s = Stats()
    for tag in (["w1", 1, 3], ["w2", 1, 1], ["w1", 1, 3], ["w1", 2, 2], ["w1", 1, 3], ["w1", 2, 2]):
        s.record(tag)
    assert s.as_dict() == {"requests": 6, "batches": 3, "batch_sizes": {"1": 1, "2": 1, "3": 1}}
    assert s._open == {}  # nothing held once every answer of a batch has come


def test_host_rule():
    assert check_host("127.0.0.1", None) == ("127.0.0.1", None)
    assert check_host("localhost", None) == ("127.0.0.1", None)
    bind, warning = check_host("0.0.0.0", "k")
    assert bind == "0.0.0.0" and "other machines" in warning
    with pytest.raises(UsageError, match="--api-key"):
        check_host("0.0.0.0", None)
    with pytest.raises(UsageError, match="LitServe binds"):
        check_host("10.1.2.3", "k")


def test_device_and_precision_are_checked_before_anything_loads(tmp_path):
    from sed.serve.app import build_server

    with pytest.raises(UsageError, match="int8 runs on the CPU"):
        build_server(tmp_path / "never-read.pt", device="cuda", precision="int8")
    with pytest.raises(UsageError, match="unknown precision"):
        build_server(tmp_path / "never-read.pt", device="cpu", precision="fp8")
    with pytest.raises(UsageError, match="no such file"):
        build_server(tmp_path / "missing.pt", device="cpu")
