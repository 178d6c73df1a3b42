"""sed's CED loaded from a Hugging Face directory against outputs of the port's own code
(github.com/jimbozhang/hf_transformers_custom_model_ced @ 1a9cd46, behind mispeech/ced-*; README.md here).

The weights of ``weights.json`` are written as ``save_pretrained`` writes them (``config.json`` +
``model.safetensors``), loaded through ``sed.models.loading.load_model(directory)`` and run on the inputs
the port saw. The port runs each clip at its own length; beyond 1012 frames it cuts 1012-frame chunks
and averages the chunks' TOKENS (so their pooled embeddings) before one head and one sigmoid, unlike the
original release, which averages the chunks' probabilities. The mixed-length batch runs as one
zero-padded batch with ``lengths`` and must equal each clip alone; an input of exactly 2 x 1012 frames
averages both chunks (the port, like the original, drops the last one: see README.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from sed.models.loading import load_model
from tests.reference import common

HERE = Path(__file__).resolve().parent
MANIFEST = common.load_manifest(HERE / "weights.json")
REF = dict(np.load(HERE / "outputs.npz"))
RATE = 16000


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ced_hf_release")
    (directory / "config.json").write_text(json.dumps(MANIFEST["config"], indent=2), encoding="utf-8")
    (directory / "preprocessor_config.json").write_text(
        json.dumps(MANIFEST["preprocessor_config"], indent=2), encoding="utf-8"
    )
    save_file(common.tensors_from(MANIFEST), directory / "model.safetensors", metadata={"format": "pt"})
    loaded, _ = load_model(directory)
    return loaded.eval()


def run(model, wave: np.ndarray, lengths=None) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        logits = model(torch.from_numpy(wave), None if lengths is None else torch.tensor(lengths))
    return logits, torch.sigmoid(logits)


def check(logits, probs, prefix: str) -> None:
    common.assert_close(probs, REF[f"{prefix}_probs"], f"{prefix} probabilities")
    common.assert_close(logits, REF[f"{prefix}_logits"], f"{prefix} logits (the port's outputlayer outputs)")


@pytest.mark.parametrize("seconds", common.LENGTHS, ids=[f"{s:g}s" for s in common.LENGTHS])
def test_single_clip(model, seconds):
    check(*run(model, common.signal(seconds, RATE, 0)), f"single_{seconds:g}s")


def test_same_length_batch(model):
    check(*run(model, common.regime_inputs("batch", RATE)[0]), "batch")


def test_mixed_length_batch_equals_each_clip_alone(model):
    check(*run(model, *common.regime_inputs("mixed", RATE)), "mixed")


def test_exact_two_chunks_averages_both(model):
    """2 x 1012 frames: both chunks' embeddings averaged; the port's own output (first chunk only) is a
    quirk."""
    samples = MANIFEST["signals"]["exact2x"]["samples"]
    wave = common.signal(samples / RATE, RATE, 0)
    assert wave.shape[-1] == samples
    _, probs = run(model, wave)
    common.assert_close(probs, REF["exact2x_probs"], "2 x 1012 frames, both chunks' embeddings averaged")
    quirk = common.max_rel_diff(probs, REF["exact2x_quirk_probs"])
    assert quirk > 100 * common.TOLERANCE, f"sed is within {quirk:.3g} of the port's dropped-chunk output"
