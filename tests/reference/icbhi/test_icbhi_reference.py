"""sed's ICBHI loader against the Patch-Mix repository's ``ICBHIDataset`` (fixtures: generate.py, README.md).

The synthetic corpus of :func:`generate.write_corpus` is rebuilt in ``tmp_path``; sed reads it through
:class:`~sed.data.modules.icbhi.IcbhiDataModule` (``select_on_test=True``: the reference's train split is
every training recording) and the AST front end of an ICBHI-sized model (``input_tdim=798``) turns the
8-s cycles into what the model sees. Per cycle: the waveform, the fbank, the labels (4 and 2 classes) and the
split (official 60/40, patient folds 0 and 1).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sed.data.clips import collate_clips
from sed.data.corpora.icbhi import IcbhiDataset
from sed.data.modules.icbhi import IcbhiDataModule
from sed.models.ast import ASTModel
from tests.reference import common
from tests.reference.icbhi import generate

HERE = Path(__file__).resolve().parent
REF = dict(np.load(HERE / "outputs.npz"))
INFO = json.loads((HERE / "cycles.json").read_text(encoding="utf-8"))
KEYS = [(c["recording"], c["row"]) for c in INFO["cycles"]]
WAVE_IDX, FRAME_IDX = np.asarray(INFO["wave_idx"]), np.asarray(INFO["frame_idx"])
PARTS = ("train", "test")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return generate.write_corpus(tmp_path_factory.mktemp("icbhi"))


def _key(item_or_meta) -> tuple[str, int]:
    path, cycle = (
        (item_or_meta["path"], item_or_meta["cycle"])
        if isinstance(item_or_meta, dict)
        else (item_or_meta[0], item_or_meta[2])
    )
    return Path(path).stem, int(cycle)


@pytest.fixture(scope="module")
def seen(corpus) -> dict:
    """``{part: (keys, waves [n, T], fbanks [n, 798, 128])}`` as sed feeds the model (official split)."""
    dm = IcbhiDataModule(str(corpus), select_on_test=True, batch_size=2)
    model = ASTModel(num_classes=4, embed_dim=16, depth=1, num_heads=2, input_tdim=generate.FRAMES).eval()
    out = {}
    for part in PARTS:
        if part == "test":
            batches = list(dm.test_dataloader())
            keys = [_key(m) for m in dm.dataset("test").meta]
        else:  # the training loader shuffles: the same items in dataset order
            ds = dm.dataset("train")
            batches = [
                collate_clips([ds[i] for i in range(j, min(j + 2, len(ds)))]) for j in range(0, len(ds), 2)
            ]
            keys = [_key(m) for m in ds.meta]
        with torch.no_grad():
            fbanks = torch.cat([model.features(b["wave"], b["lengths"]) for b in batches])
        out[part] = (keys, torch.cat([b["wave"] for b in batches]), fbanks)
    return out


def test_fixture_covers_the_cases():
    """Both splits, all four classes in each, three file sample rates, short / exact / long cycles."""
    for part in PARTS:
        labels = {c["label4"] for c in INFO["cycles"] if c["split_official"] == part}
        assert labels == {0, 1, 2, 3}, (part, labels)
    assert {r[1] for r in generate.RECORDINGS} == {4000, 10000, 44100}
    assert [tuple(k) for k in KEYS] == generate.cycle_keys()


@pytest.mark.parametrize("part", PARTS)
def test_cycles_and_order(seen, part):
    """The same cycles in each split as the reference (order: sed sorts recordings, the reference does
    not)."""
    keys = seen[part][0]
    ref = sorted(k for k, c in zip(KEYS, INFO["cycles"]) if c["split_official"] == part)
    assert sorted(keys) == ref
    assert keys == sorted(keys)


@pytest.mark.parametrize("fold", ["official", "0", "1"])
@pytest.mark.parametrize("classes", [4, 2])
def test_splits_and_labels(corpus, fold, classes):
    for part in PARTS:
        ds = IcbhiDataset(corpus, split=part, fold=fold, classes=classes, select_on_test=True)
        got = {_key(m): m[3] for m in ds.meta}
        ref = {k: c[f"label{classes}"] for k, c in zip(KEYS, INFO["cycles"]) if c[f"split_{fold}"] == part}
        assert got == ref, (fold, classes, part)
        assert not ds.skipped


@pytest.mark.parametrize("key", KEYS, ids=[f"{s}-{j}" for s, j in KEYS])
def test_waveform(seen, key):
    """The 8-s cycle: resampled to 16 kHz, faded over the whole recording, sliced, cut or repeat-padded."""
    i = KEYS.index(key)
    part = INFO["cycles"][i]["split_official"]
    keys, waves, _ = seen[part]
    ours = waves[keys.index(key)]
    assert ours.shape == (generate.TARGET,)
    common.assert_close(ours.numpy()[WAVE_IDX], REF["wave"][i], f"waveform of {key}")


@pytest.mark.parametrize("key", KEYS, ids=[f"{s}-{j}" for s, j in KEYS])
def test_fbank(seen, key):
    """What the model is fed: Kaldi fbank of the 8-s cycle, 798 x 128, AudioSet normalisation."""
    i = KEYS.index(key)
    part = INFO["cycles"][i]["split_official"]
    keys, _, fbanks = seen[part]
    ours = fbanks[keys.index(key)]
    assert ours.shape == (generate.FRAMES, generate.N_MELS)
    common.assert_close(ours.numpy()[FRAME_IDX], REF["fbank"][i], f"fbank of {key}")


# ---------------------------------------------------------------------------- the ICBHI score
SCORES = json.loads((HERE / "score.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", list(SCORES))
def test_score(name):
    """``main.validate``'s hits and counts and ``get_score``'s (Sp, Se, Score) vs
    sed.metrics.classification."""
    from sed.metrics.classification import ICBHIScore, icbhi_hits_counts, icbhi_score, icbhi_score_from_counts

    r = SCORES[name]
    logits, labels = generate.score_inputs(r["case"])
    c, two, batch = logits.shape[1], r["two_cls_eval"], generate.SCORE_CASES[r["case"]][4]
    want = np.array([r["sp"], r["se"], r["score"]])
    hits, counts = icbhi_hits_counts(labels, logits, two_class=two, num_classes=c)
    assert hits.tolist() == r["hits"] and counts.tolist() == r["counts"]
    np.testing.assert_allclose(icbhi_score_from_counts(r["hits"], r["counts"]), want, rtol=0, atol=1e-9)
    np.testing.assert_allclose(icbhi_score(labels, logits, two_class=two), want, rtol=0, atol=1e-9)
    metric = ICBHIScore(two_class=two, num_classes=c)
    for i in range(0, len(labels), batch):  # the reference's batches, streamed
        metric.update(torch.from_numpy(logits[i : i + batch]), torch.from_numpy(labels[i : i + batch]))
    assert metric.hits.tolist() == r["hits"] and metric.counts.tolist() == r["counts"]
    np.testing.assert_allclose(
        [float(v) for v in metric.compute()], want, rtol=0, atol=1e-4
    )  # float32 result
