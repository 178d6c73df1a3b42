"""The progress bars of sedkit (sed.cli.main.Console.progress): classify's bar counts files against a
total."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
import torch
import tqdm

from sed.checkpoint import save_model
from sed.cli.main import main
from sed.models import create_model


@pytest.fixture
def bars(monkeypatch):
    """Every bar Console draws, drawn (into a buffer) even though stderr is not a terminal here."""
    made = []
    real = tqdm.tqdm

    class Recorder(real):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "disable": False, "file": io.StringIO()})
            made.append(self)

    monkeypatch.setattr(tqdm, "tqdm", Recorder)
    return made


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("progress")
    torch.manual_seed(0)
    ckpt = save_model(
        root / "m.pt", create_model("cnn_tiny", num_classes=2, input_tdim=50, labels=["a", "b"])
    )
    rng = np.random.default_rng(0)
    for name, seconds in [("a.wav", 0.5), ("b.wav", 1.6), ("c.wav", 0.9)]:
        sf.write(root / name, rng.uniform(-0.3, 0.3, int(16000 * seconds)), 16000)
    (root / "d.wav").write_bytes(b"not audio")
    return ckpt, sorted(str(p) for p in root.glob("*.wav"))


@pytest.mark.parametrize("mode", [[], ["--window", "0.5", "--hop", "0.25"]], ids=["clip", "window"])
def test_classify_bar_has_the_number_of_files_as_total_and_ends_there(files, bars, mode, capsys):
    ckpt, wavs = files
    assert (
        main(["classify", *wavs, "--checkpoint", str(ckpt), "--batch-size", "2", *mode]) == 1
    )  # d.wav fails
    bar = next(b for b in bars if b.desc == "classify")
    assert bar.total == 4 and bar.n == 4 and bar.unit == "file"  # windows are not counted as files
    assert "error: " in capsys.readouterr().err
