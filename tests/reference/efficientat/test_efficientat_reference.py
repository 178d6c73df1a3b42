"""sed's EfficientAT against the original code (github.com/fschmid56/EfficientAT; see README.md here).

The manifest's tensors are written as the release file ``mn04_as_mAP_432.pt`` (a bare state dict of the
reference ``MN``), loaded through ``sed.models.loading.load_model`` and run on the same
``common.signal`` clips the reference ran on, each at its own length as the reference's ``inference.py``
does; the mixed-length clips go through sed as ONE zero-padded batch with ``lengths`` and must equal each
clip run alone in the reference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sed.models.loading import load_model
from tests.reference import common

HERE = Path(__file__).resolve().parent
MANIFEST = common.load_manifest(HERE / "weights.json")
RATE = int(MANIFEST["sample_rate"])
SINGLE = [f"{s:g}s" for s in common.LENGTHS]
REGIMES = [*SINGLE, "batch", "mixed"]


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    with np.load(HERE / "outputs.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("efficientat") / MANIFEST["release_file"]
    torch.save(common.tensors_from(MANIFEST), path)  # the release layout: a bare state dict
    model, _ = load_model(path)
    return model.eval()


def inputs(regime: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The regime's waves ``[B, T]`` (zero-padded for the mixed batch) and valid samples per clip."""
    wave, lengths = common.regime_inputs(regime, RATE)
    return torch.from_numpy(wave), None if lengths is None else torch.tensor(lengths)


@pytest.mark.parametrize("regime", REGIMES)
def test_logits_and_embedding(model, ref, regime):
    wave, lengths = inputs(regime)
    seen = []  # the pooled embedding, as the head receives it (one forward pass gives both outputs)
    hook = model.head.register_forward_pre_hook(lambda _module, args: seen.append(args[0]))
    try:
        with torch.no_grad():
            logits = model(wave, lengths)
    finally:
        hook.remove()
    assert len(seen) == 1, f"the head ran {len(seen)} times"
    embedding = seen[0]
    common.assert_close(embedding, ref[f"embedding_{regime}"], f"{regime} embedding")
    common.assert_close(logits, ref[f"logits_{regime}"], f"{regime} logits")


@pytest.mark.parametrize("regime", MANIFEST["regimes"]["mel"])
def test_frontend(model, ref, regime):
    wave, lengths = inputs(regime)
    with torch.no_grad():
        mel = model.features(wave, lengths)  # [B, frames, bins]; the reference's is [B, bins, frames]
    common.assert_close(mel.transpose(1, 2), ref[f"mel_{regime}"], f"{regime} front end")
