"""`sedkit embed` shows a progress bar over its files, with their total (issue 23)."""

import numpy as np
import soundfile as sf
import torch

from sed.checkpoint import save_model
from sed.cli.main import Console, main
from sed.models import create_model

SR = 16000


def test_embed_shows_a_bar_of_files_with_a_total(tmp_path, monkeypatch):
    torch.manual_seed(0)
    ckpt = save_model(
        tmp_path / "m.pt", create_model("cnn_tiny", num_classes=2, clip_seconds=1.0), ["a", "b"]
    )
    rng = np.random.default_rng(0)
    for name, seconds in (("a", 1.0), ("b", 2.5), ("c", 0.5)):
        sf.write(tmp_path / f"{name}.wav", rng.uniform(-0.3, 0.3, int(seconds * SR)), SR)
    bars = []

    def progress(self, iterable, total=None, desc="", done=None, unit="file"):
        bar = {"desc": desc, "total": total, "files_done": 0}
        bars.append(bar)
        for item in iterable:
            bar["files_done"] = (
                done(item) + 1 if done else bar["files_done"] + 1
            )  # done: files before this one
            yield item

    monkeypatch.setattr(Console, "progress", progress)
    code = main(
        [
            "embed",
            *(str(tmp_path / f"{n}.wav") for n in "abc"),
            "--checkpoint",
            str(ckpt),
            "--out",
            str(tmp_path / "e.npy"),
        ]
    )
    assert code == 0 and np.load(tmp_path / "e.npy").shape[0] == 3
    assert bars == [{"desc": "embed", "total": 3, "files_done": 3}]
