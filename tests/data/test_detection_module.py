"""DetectionDataModule on a tiny synthetic DESED corpus: batches, masks, events, epochs, durations."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf
import torch

from sed.data.corpora.desed import DESED_LAYOUT
from sed.data.modules.detection import DetectionDataModule
from sed.data.modules.detection_dataset import SourceBatchSampler
from sed.data.synth.desed import make_desed
from sed.errors import DatasetError

SR = 8000


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("desed")
    return root, make_desed(root, seed=3, num_classes=3, clips=5, duration=2.0, sample_rate=SR)


def _module(corpus, **kw):
    root, summary = corpus
    args = dict(root=str(root), labels=summary["classes"], batch_sizes=[2, 1, 2], clip_seconds=2.0)
    return DetectionDataModule(**{**args, "sample_rate": SR, "eval_batch_size": 3, **kw})


def _events(row: torch.Tensor) -> list[tuple[float, float, int]]:
    return [(round(a, 3), round(b, 3), int(c)) for a, b, c in row.tolist() if c >= 0]


def test_training_batches_strong_weak_unlabelled(corpus):
    root, summary = corpus
    dm = _module(corpus)
    assert dm.num_classes == 3 and dm.label_names == summary["classes"] and dm.is_multi_label
    loader = dm.train_dataloader()
    assert (
        len(loader) == 2
    )  # the baseline's epoch: the source that runs out first (5 strong // 2, 5 unlabelled // 2)
    batches = list(loader)
    assert len(batches) == 2
    names = summary["classes"]
    for b in batches:
        assert b["wave"].shape == (5, 2 * SR) and b["wave"].dtype == torch.float32
        assert b["lengths"].tolist() == [2 * SR] * 5
        assert b["source"].tolist() == [0, 0, 1, 2, 2]
        assert b["class_mask"].tolist() == [[True] * 3] * 3 + [[False] * 3] * 2
        assert b["events"].shape[0] == 5 and b["events"].shape[2] == 3
        assert (b["events"][2:] == -1).all()  # weak and unlabelled clips carry no events
        for i, path in enumerate(b["path"]):
            name, split = Path(path).name, Path(path).name.split("_")[0]
            truth = summary["labels"][split][name]
            weak = [float(any(e[2] == c for e in truth)) for c in names]
            if split == "strong":
                assert _events(b["events"][i]) == [(a, b_, names.index(c)) for a, b_, c in truth]
                assert b["weak"][i].tolist() == weak
            elif split == "weak":
                assert b["weak"][i].tolist() == weak
            else:
                assert split == "unlabeled" and b["weak"][i].tolist() == [0.0] * 3
        assert {len(set(b["path"]))} == {5}
    strong = [p for b in batches for p in b["path"][:2]]
    assert len(set(strong)) == 4  # one shuffled pass: no strong clip twice in an epoch


def test_epochs_reshuffle_and_repeat_with_set_epoch(corpus):
    dm = _module(corpus)
    sampler = dm.train_dataloader().batch_sampler
    assert isinstance(sampler, SourceBatchSampler) and sampler.sampler is sampler

    def epoch(e):
        sampler.set_epoch(e)
        return list(sampler)

    first, second = epoch(0), epoch(1)
    assert first != second and epoch(0) == first
    assert all(len(b) == 5 for b in first)
    assert all(0 <= i < 5 and 5 <= j < 10 and 10 <= k < 15 for b in first for i, j, k in [(b[0], b[2], b[3])])


def test_zero_batch_size_drops_a_source(corpus):
    dm = _module(corpus, batch_sizes=[3, 0, 0])
    loader = dm.train_dataloader()
    assert len(loader) == 1
    batch = next(iter(loader))
    assert batch["source"].tolist() == [0, 0, 0] and batch["class_mask"].all()


def test_random_crop_moves_the_events(corpus):
    root, summary = corpus
    dm = _module(corpus, batch_sizes=[5, 0, 0], clip_seconds=0.5)
    torch.manual_seed(0)
    batch = next(iter(dm.train_dataloader()))
    names = summary["classes"]
    for i, path in enumerate(batch["path"]):
        whole, _ = sf.read(path, dtype="float32")
        crop = batch["wave"][i].numpy()
        assert crop.shape == (SR // 2,)
        starts = [k for k in range(len(whole) - len(crop) + 1) if abs(whole[k] - crop[0]) < 1e-7]
        offset = next(k for k in starts if (abs(whole[k : k + len(crop)] - crop) < 1e-6).all()) / SR
        expect = [
            (round(max(a, offset) - offset, 3), round(min(b, offset + 0.5) - offset, 3), names.index(c))
            for a, b, c in summary["labels"]["strong"][Path(path).name]
            if b > offset and a < offset + 0.5
        ]
        assert _events(batch["events"][i]) == expect
        assert batch["weak"][i].tolist() == [float(any(e[2] == c for e in expect)) for c in range(3)]


def test_validation_and_test_batches_have_durations(corpus):
    root, summary = corpus
    dm = _module(corpus)
    val = list(dm.val_dataloader())
    assert [b["wave"].shape[0] for b in val] == [3, 2]
    assert torch.cat([b["duration"] for b in val]).tolist() == [2.0] * 5
    test = list(dm.test_dataloader())
    durations = {Path(p).name: d for b in test for p, d in zip(b["path"], b["duration"].tolist())}
    assert durations.keys() == summary["labels"]["test"].keys()
    for b in test:
        assert b["wave"].shape[1] == 2 * SR  # shorter clips padded to clip_seconds, from their start
        for i, path in enumerate(b["path"]):
            assert b["lengths"][i] == sf.info(path).frames
            assert abs(b["duration"][i].item() - sf.info(path).duration) < 1e-3
            assert (b["wave"][i, b["lengths"][i] :] == 0).all()
            names = summary["classes"]
            truth = summary["labels"]["test"][Path(path).name]
            assert _events(b["events"][i]) == [(a, e, names.index(c)) for a, e, c in truth]
    assert dm.class_counts("test").sum() >= 5


def test_source_with_its_own_classes_is_masked(corpus):
    root, summary = corpus
    names = summary["classes"]
    strong = root / DESED_LAYOUT["strong"][0].replace("_16k", "")
    dm = _module(
        corpus,
        strong_folders=[str(strong), str(strong)],
        strong_tsvs=[DESED_LAYOUT["strong"][1]] * 2,  # relative to root
        strong_classes=[None, names],
        weak_classes=names[:1],
        batch_sizes=[4, 2, 0],
    )
    batch = next(iter(dm.train_dataloader()))
    assert batch["class_mask"][4:].tolist() == [[True, False, False]] * 2
    assert len(dm.dataset("train").datasets[0]) == 10


def test_configuration_errors(corpus, tmp_path):
    root, summary = corpus
    with pytest.raises(DatasetError, match="nope: DESED root folder not found"):
        DetectionDataModule(root=str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="no weak set"):
        DetectionDataModule(root=str(tmp_path), labels=summary["classes"], batch_sizes=[0, 1, 0])
    with pytest.raises(ValueError, match="batch_sizes"):
        _module(corpus, batch_sizes=[1, 1])
    with pytest.raises(ValueError, match="one per folder"):
        _module(corpus, strong_folders=["a", "b"])
    with pytest.raises(ValueError, match="not one of the labels"):
        _module(corpus, weak_classes=["Speech"])
    with pytest.raises(
        DatasetError, match=r"soundscapes\.tsv: line \d+: label '\w+' is not one of the 2 classes"
    ):
        _module(corpus, labels=summary["classes"][:2])
    with pytest.raises(DatasetError, match="fewer clips than one batch takes: 5 strong clip"):
        _module(corpus, batch_sizes=[6, 0, 0]).train_dataloader()


def test_bad_audio_file_is_reported_at_setup(corpus, tmp_path):
    root, summary = corpus
    folder = tmp_path / "audio"
    folder.mkdir()
    (folder / "x.wav").write_bytes(b"not audio")
    tsv = tmp_path / "x.tsv"
    tsv.write_text("filename\tonset\toffset\tevent_label\nx.wav\t0\t1\tCat\n")
    dm = DetectionDataModule(
        strong_folders=str(folder),
        strong_tsvs=str(tsv),
        labels=["Cat"],
        batch_sizes=[1, 0, 0],
        sample_rate=SR,
    )
    with pytest.raises(DatasetError, match="x.wav"):
        dm.setup("fit")
    assert dm.val_dataloader() == []


def test_root_default_takes_the_real_strong_set_when_there(corpus, tmp_path):
    import shutil

    root, summary = corpus
    shutil.copytree(root, tmp_path / "desed")
    strong, tsv = DESED_LAYOUT["strong"]
    real, real_tsv = DESED_LAYOUT["strong_real"]
    shutil.copytree(root / strong.replace("_16k", ""), tmp_path / "desed" / real.replace("_16k", ""))
    shutil.copy(root / tsv, tmp_path / "desed" / real_tsv)
    dm = _module((tmp_path / "desed", summary), batch_sizes=[10, 0, 0])
    assert [len(items) for items, _ in dm.sources["strong"]] == [5, 5]
    batch = next(iter(dm.train_dataloader()))
    assert sum("strong_label_real" in p for p in batch["path"]) == 5
