"""sed's AST against the Hugging Face port (transformers 5.25.0 ``ASTForAudioClassification`` +
``ASTFeatureExtractor``; README.md here).

The test writes a Hugging Face AST directory as ``save_pretrained`` writes it (``config.json`` and
``preprocessor_config.json`` from ``weights.json``, ``model.safetensors`` with the manifest's tensors under
the names transformers writes), loads it through ``sed.models.loading.load_model(directory)`` and compares
with the port's outputs: input_values (the feature extractor's normalised fbank, 1024 frames padded or cut)
and logits, at every regime; the mixed-length batch runs as one zero-padded batch with ``lengths``.
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
ROWS = torch.from_numpy(REF["fbank_rows"])
REGIMES = [f"{s:g}s" for s in common.LENGTHS] + ["batch", "mixed"]


def inputs(regime: str) -> tuple[np.ndarray, list[int] | None]:
    """The waveforms ``[B, T]`` of a regime and, for the mixed batch, the valid samples per clip."""
    return common.regime_inputs(regime, RATE)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    release = tmp_path_factory.mktemp("ast_hf_release")
    (release / "config.json").write_text(json.dumps(MANIFEST["config_json"], indent=2) + "\n")
    (release / "preprocessor_config.json").write_text(
        json.dumps(MANIFEST["preprocessor_config_json"], indent=2) + "\n"
    )
    save_file(
        common.tensors_from(MANIFEST),
        str(release / "model.safetensors"),
        metadata=MANIFEST["safetensors_metadata"],
    )
    model, desc = load_model(release)
    return model.eval(), desc


@pytest.mark.parametrize("regime", REGIMES)
def test_logits_and_features(loaded, regime):
    model, _ = loaded
    wave, lengths = inputs(regime)
    wave = torch.from_numpy(wave)
    lengths = None if lengths is None else torch.tensor(lengths)
    with torch.no_grad():
        feats = model.features(wave, lengths)
        logits = model(wave, lengths)
    assert tuple(feats.shape) == (wave.shape[0], 1024, 128)
    common.assert_close(feats[:, ROWS], REF[f"{regime}_fbank"], f"{regime} input_values (rows {ROWS[0]}::16)")
    common.assert_close(logits, REF[f"{regime}_logits"], f"{regime} logits")


def test_labels_from_id2label(loaded):
    id2label = MANIFEST["config_json"]["id2label"]
    assert loaded[1]["labels"] == [id2label[str(i)] for i in range(len(id2label))]
    assert len(id2label) == 527 and loaded[1]["multi_label"] is True  # an AudioSet head: sigmoid scores
