"""sed's BEATs against the original code (microsoft/unilm ``beats/``; see README.md in this folder).

The manifest (``weights.json``) rebuilds the micro model's tensors; they are written here in the BEATs release
layout ``{"cfg", "model", "label_dict": {row: mid}}`` and loaded through ``sed.models.loading.load_model``.
sed runs the ``common.signal`` clips of every regime and must give the reference's outputs (``outputs.npz``,
written by ``generate.py``), its predictor rows re-ordered to the AudioSet ontology order: sed output ``j`` is
reference row ``r`` with ``label_dict[r] == mids[j]``. Each clip runs at its own length, as the reference's
``extract_features`` does; the mixed-length batch runs as one zero-padded batch with ``lengths`` and must
equal each clip alone.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from sed.models.loading import load_model
from tests.reference import common

HERE = Path(__file__).resolve().parent
LABELS_CSV = HERE.parents[2] / "sed" / "data" / "corpora" / "audioset_labels.csv"
RATE = 16000

MANIFEST = common.load_manifest(HERE / "weights.json")
REF = dict(np.load(HERE / "outputs.npz"))

#: regime -> its clips (the generator's: seed 0 singles, the 3-s batch of seeds 1-3, the mixed clips of
#: seeds 4-6)
REGIMES: dict[str, list[tuple[float, int]]] = {
    **{f"single_{s:g}s": [(s, 0)] for s in common.LENGTHS},
    "batch_3s": [(3.0, seed) for seed in (1, 2, 3)],
    "mixed": list(zip(common.MIXED, (4, 5, 6))),
}


def _audioset() -> tuple[list[str], list[str]]:
    """(mids, display names) of the 527 AudioSet classes, file order."""
    with open(LABELS_CSV, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["mid"] for r in rows], [r["display_name"] for r in rows]


def _ontology_order() -> list[int]:
    """The reference predictor row of each AudioSet class (file order)."""
    row_of = {mid: int(r) for r, mid in MANIFEST["label_dict"].items()}
    return [row_of[mid] for mid in _audioset()[0]]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """The release file written from the manifest, loaded through sed's public path."""
    tensors = common.tensors_from(MANIFEST)
    state = dict(tensors)
    for alias, key in MANIFEST["shared"].items():  # the relative-position table, saved under every layer
        state[alias] = tensors[key]
    release = {
        "cfg": dict(MANIFEST["cfg"]),
        "model": state,
        "label_dict": {int(r): mid for r, mid in MANIFEST["label_dict"].items()},
    }
    path = tmp_path_factory.mktemp("beats") / "BEATs_micro_finetuned.pt"
    torch.save(release, path)
    net, _ = load_model(path)
    return net.eval()


def test_labels_and_multi_label(model):
    assert list(model.labels) == _audioset()[1]
    assert model.multi_label is True


@pytest.mark.parametrize("regime", list(REGIMES))
def test_matches_reference(model, regime):
    clips = [common.signal(s, RATE, seed)[0] for s, seed in REGIMES[regime]]
    lengths = [len(c) for c in clips]
    assert lengths == REF[f"{regime}/samples"].tolist(), "the generator ran other clips"
    wave = torch.zeros(len(clips), max(lengths))
    for i, c in enumerate(clips):
        wave[i, : len(c)] = torch.from_numpy(c)
    kwargs = {"lengths": torch.tensor(lengths)} if regime == "mixed" else {}
    with torch.no_grad():
        pooled = model.embed(wave, **kwargs)
        logits = model(wave, **kwargs)
    order = _ontology_order()
    # the stages in order: backbone (pooled embedding), head + row order (logits), the reference's sigmoid
    common.assert_close(pooled, REF[f"{regime}/pooled"], f"{regime} pooled embedding")
    common.assert_close(logits, REF[f"{regime}/logits"][:, order], f"{regime} logits")
    common.assert_close(torch.sigmoid(logits), REF[f"{regime}/probs"][:, order], f"{regime} probabilities")
