"""sed's CED against outputs of the original code (github.com/RicherMans/CED @ 60a0f54; README.md here).

The weights of ``weights.json`` are written as the released ``.pt`` files are (a bare state dict with the
torchaudio front-end buffers), loaded through ``sed.models.loading.load_model`` and run on the inputs the
reference saw: each clip at its own length, chunked into 1012-frame pieces beyond 1012 frames with the
chunks' sigmoid probabilities averaged; the mixed-length batch as one zero-padded batch with ``lengths``
equal to each clip run alone; an input of exactly 2 x 1012 frames averages both chunks (the reference
drops the last one, see README.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchaudio

from sed.models.loading import load_model
from tests.reference import common

HERE = Path(__file__).resolve().parent
MANIFEST = common.load_manifest(HERE / "weights.json")
REF = dict(np.load(HERE / "outputs.npz"))
RATE = 16000
#: the release file names no head count (the width 64 is no released size): given to the importer
NUM_HEADS = MANIFEST["reference_model"]["kwargs"]["num_heads"]


def release_state() -> dict[str, torch.Tensor]:
    """The released ``.pt`` layout: the manifest's tensors plus the torchaudio front-end buffers."""
    state = common.tensors_from(MANIFEST)
    assert set(MANIFEST["release"]["front_end_buffers"]) == {
        "front_end.0.spectrogram.window",
        "front_end.0.mel_scale.fb",
    }
    state["front_end.0.spectrogram.window"] = torch.hann_window(512)
    state["front_end.0.mel_scale.fb"] = torchaudio.functional.melscale_fbanks(
        257, 0.0, 8000.0, 64, 16000, None, "htk"
    )
    return state


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("ced_release") / "audiotransformer_test.pt"
    torch.save(release_state(), path)
    loaded, _ = load_model(path, num_heads=NUM_HEADS)
    return loaded.eval()


def run(model, wave: np.ndarray, lengths=None) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        logits = model(torch.from_numpy(wave), None if lengths is None else torch.tensor(lengths))
    return logits, torch.sigmoid(logits)


def check(logits, probs, prefix: str) -> None:
    common.assert_close(probs, REF[f"{prefix}_probs"], f"{prefix} probabilities")
    if f"{prefix}_logits" in REF:  # one chunk: the reference's outputlayer outputs
        common.assert_close(logits, REF[f"{prefix}_logits"], f"{prefix} logits")


@pytest.mark.parametrize("seconds", common.LENGTHS, ids=[f"{s:g}s" for s in common.LENGTHS])
def test_single_clip(model, seconds):
    check(*run(model, common.signal(seconds, RATE, 0)), f"single_{seconds:g}s")


def test_same_length_batch(model):
    check(*run(model, common.regime_inputs("batch", RATE)[0]), "batch")


def test_mixed_length_batch_equals_each_clip_alone(model):
    check(*run(model, *common.regime_inputs("mixed", RATE)), "mixed")


def test_exact_two_chunks_averages_both(model):
    """2 x 1012 frames: sed averages both chunks; the reference's output (first chunk only) is a quirk."""
    samples = MANIFEST["signals"]["exact2x"]["samples"]
    wave = common.signal(samples / RATE, RATE, 0)
    assert wave.shape[-1] == samples
    _, probs = run(model, wave)
    common.assert_close(probs, REF["exact2x_probs"], "2 x 1012 frames, both chunks averaged")
    quirk = common.max_rel_diff(probs, REF["exact2x_quirk_probs"])
    assert quirk > 100 * common.TOLERANCE, (
        f"sed is within {quirk:.3g} of the reference's dropped-chunk output"
    )
