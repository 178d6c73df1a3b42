"""sed's AST against outputs of the original code (github.com/YuanGongND/ast @ 31088be; README.md here).

The weights of ``weights.json`` are written as the released ``.pth`` files are
(``torch.save(torch.nn.DataParallel(model).state_dict())``: ``module.v.*`` + ``module.mlp_head.*``, strides in
the file name), loaded through ``sed.models.loading.load_model`` and run on the inputs the reference saw.
AST is fixed-length: every clip becomes 1024 frames, zero-padded (log-fbank 0) or cut, as the reference's
``AudiosetDataset._wav2fbank`` does; the mixed-length batch runs as one zero-padded batch with ``lengths`` and
must equal each clip run alone in the reference.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from sed.data.corpora.audioset import audioset_labels
from sed.models.loading import load_model
from tests.reference import common

HERE = Path(__file__).resolve().parent
MANIFEST = common.load_manifest(HERE / "weights.json")
REF = dict(np.load(HERE / "outputs.npz"))
RATE = 16000
ROWS = torch.from_numpy(REF["fbank_rows"])


def inputs(regime: str) -> tuple[np.ndarray, list[int] | None]:
    """The waveforms ``[B, T]`` of a regime and, for the mixed batch, the valid samples per clip."""
    return common.regime_inputs(regime, RATE)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    path = (
        tmp_path_factory.mktemp("ast_release") / MANIFEST["release"]["file_name"]
    )  # audioset_10_10_0.4593.pth
    torch.save(OrderedDict(common.tensors_from(MANIFEST)), path)
    model, desc = load_model(path)
    return model.eval(), desc


REGIMES = [f"{s:g}s" for s in common.LENGTHS] + ["batch", "mixed"]


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
    common.assert_close(
        feats[:, ROWS], REF[f"{regime}_fbank"], f"{regime} fbank (normalised, rows {ROWS[0]}::16)"
    )
    common.assert_close(logits, REF[f"{regime}_logits"], f"{regime} logits")


def test_release_labels_are_the_audioset_names(loaded):
    """A 527-class original ``.pth`` is the AudioSet tagger: its labels are the 527 AudioSet display names."""
    assert loaded[1]["labels"] == audioset_labels()


def test_release_is_multi_label(loaded):
    """The original AudioSet head is scored with independent sigmoids (BCE training, ``validate``'s
    sigmoid)."""
    assert loaded[1]["multi_label"] is True
