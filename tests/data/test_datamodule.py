"""AudioDataModule: metadata before setup, fold and stratified splits, balanced sampler, loaders."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import RandomSampler, WeightedRandomSampler

from sed.audio import io as audio_io
from sed.data.modules.audio import AudioDataModule, balanced_weights
from sed.data.synth.corpora import make_esc50
from sed.errors import DatasetError

SR = 16000


@pytest.fixture(scope="module")
def esc(tmp_path_factory):
    return make_esc50(
        tmp_path_factory.mktemp("esc50"),
        seed=0,
        num_classes=3,
        clips_per_class=5,
        duration=1.0,
        sample_rate=SR,
    )


def _folder(root: Path, counts: dict[str, int], seconds: float = 0.5) -> Path:
    rng = np.random.default_rng(0)
    for name, n in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            sf.write(str(root / name / f"{i}.wav"), rng.uniform(-0.5, 0.5, round(seconds * SR)), SR)
    return root


def _paths(items) -> list[str]:
    return [it.path for it in items]


def test_properties_before_setup_touch_no_audio(esc, monkeypatch):
    def no_audio(*args, **kwargs):
        raise AssertionError("audio read before setup")

    monkeypatch.setattr(audio_io, "info", no_audio)
    dm = AudioDataModule(source="esc50", root=esc["root"])
    assert dm.num_classes == 3 and dm.label_names == esc["classes"] and dm.is_multi_label is False
    assert dm.datasets == {} and dm.class_counts().tolist() == [4, 4, 4]
    assert dm.hparams.source == "esc50"


def test_fold_splits_disjoint_and_complete(esc):
    dm = AudioDataModule(source="esc50", root=esc["root"])
    assert {it.fold for it in dm.splits["val"]} == {5} and dm.splits["test"] is dm.splits["val"]
    assert {it.fold for it in dm.splits["train"]} == {1, 2, 3, 4}
    dm = AudioDataModule(source="esc50", root=esc["root"], val_folds=[4], test_folds=[5])
    folds = {k: {it.fold for it in v} for k, v in dm.splits.items()}
    assert folds == {"train": {1, 2, 3}, "val": {4}, "test": {5}}
    every = _paths(dm.splits["train"]) + _paths(dm.splits["val"]) + _paths(dm.splits["test"])
    assert len(every) == len(set(every)) == 15
    dm = AudioDataModule(source="esc50", root=esc["root"], test_folds=[2])  # val defaults to the test fold
    assert {it.fold for it in dm.splits["val"]} == {2} and len(dm.splits["train"]) == 12
    dm = AudioDataModule(source="esc50", root=esc["root"], train_folds=[1, 2])
    assert {it.fold for it in dm.splits["val"]} == {3, 4, 5}
    with pytest.raises(ValueError, match="overlap"):
        AudioDataModule(source="esc50", root=esc["root"], train_folds=[1, 5], val_folds=[5])
    with pytest.raises(ValueError, match=r"test_folds \[7\] not in the data's folds"):
        AudioDataModule(source="esc50", root=esc["root"], test_folds=[7])


def test_val_fraction_split_stratified_and_seeded(tmp_path):
    root = _folder(tmp_path / "f", {"a": 10, "b": 5, "c": 5}, seconds=0.1)
    dm = AudioDataModule(root=str(root), val_fraction=0.2, seed=3)
    val = _paths(dm.splits["val"])
    assert Counter(Path(p).parent.name for p in val) == {"a": 2, "b": 1, "c": 1}
    assert sorted(val + _paths(dm.splits["train"])) == sorted(_paths(dm.items))
    assert dm.splits["test"] is dm.splits["val"]
    assert _paths(AudioDataModule(root=str(root), seed=3).splits["val"]) == val
    assert any(_paths(AudioDataModule(root=str(root), seed=s).splits["val"]) != val for s in (4, 5, 6))
    with pytest.raises(ValueError, match="carry no folds"):
        AudioDataModule(root=str(root), val_folds=[1])


def test_balanced_sampler_weights(tmp_path):
    root = _folder(tmp_path / "f", {"a": 6, "b": 2}, seconds=0.1)
    dm = AudioDataModule(root=str(root), balanced=True, val_fraction=0.25, clip_seconds=0.1, batch_size=2)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, WeightedRandomSampler) and loader.sampler.num_samples == len(
        dm.splits["train"]
    )
    train = dm.datasets["train"].items
    counts = Counter(it.label for it in train)
    assert counts == {0: 4, 1: 1}  # 2 of a and 1 of b went to val
    assert loader.sampler.weights.tolist() == pytest.approx([1.0 / counts[it.label] for it in train])
    drawn = Counter(int(i) for _ in range(50) for i in loader.sampler)
    b_index = next(i for i, it in enumerate(train) if it.label == 1)
    assert 0.35 < drawn[b_index] / sum(drawn.values()) < 0.65  # half the draws, though 1 of 5 items
    # DDP: Lightning wraps the sampler; each rank's copy draws the same sequence, the ranks share it out
    from lightning_fabric.utilities.distributed import DistributedSamplerWrapper

    rank_draws = []
    for rank in (0, 1):
        sampler = AudioDataModule(root=str(root), balanced=True, val_fraction=0.25).train_dataloader().sampler
        reference = list(
            WeightedRandomSampler(
                sampler.weights, len(sampler), generator=torch.Generator().manual_seed(sampler.seed)
            )
        )
        rank_draws.append(
            list(DistributedSamplerWrapper(sampler, num_replicas=2, rank=rank, shuffle=True, seed=0))
        )
    assert Counter(rank_draws[0] + rank_draws[1][: len(reference) - len(rank_draws[0])]) == Counter(reference)
    from sed.data.clips import ClipItem

    multi = [ClipItem("x", [0, 1]), ClipItem("y", [0]), ClipItem("z", [])]
    assert balanced_weights(multi, 2).tolist() == pytest.approx([1 / 2 + 1 / 1, 1 / 2, 1 / 2])
    assert isinstance(AudioDataModule(root=str(root)).train_dataloader().sampler, RandomSampler)


def test_dataloader_batches_and_test_falls_back_to_val(esc):
    dm = AudioDataModule(source="esc50", root=esc["root"], clip_seconds=0.5, batch_size=4, eval_batch_size=2)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["wave"].shape == (4, SR // 2) and batch["wave"].dtype == torch.float32
    assert batch["lengths"].tolist() == [SR // 2] * 4 and batch["label"].dtype == torch.long
    assert len(batch["path"]) == 4 and batch["label"].shape == (4,)
    val = list(dm.val_dataloader())
    assert [b["wave"].shape[0] for b in val] == [2, 1]  # drop_last False
    assert torch.equal(val[0]["wave"], next(iter(dm.val_dataloader()))["wave"])  # eval: no shuffling
    assert dm.test_dataloader().dataset is dm.datasets["val"]
    assert dm.predict_dataloader().dataset is dm.datasets["val"]
    assert sum(len(b["path"]) for b in dm.train_dataloader()) == 12
    dm2 = AudioDataModule(source="esc50", root=esc["root"], clip_seconds=None, test_folds=[1], val_folds=[2])
    test = next(iter(dm2.test_dataloader()))  # sets itself up when used outside a Trainer
    assert test["wave"].shape == (3, SR) and all(Path(p).name.startswith("1-") for p in test["path"])


def test_setup_validates_all_files_once(tmp_path, monkeypatch):
    root = _folder(tmp_path / "f", {"a": 4, "b": 4}, seconds=0.1)
    dm = AudioDataModule(root=str(root))
    (root / "a" / "1.wav").unlink()
    (root / "b" / "2.wav").write_bytes(b"RIFF junk")
    (root / "b" / "3.wav").write_bytes(b"")
    with pytest.raises(DatasetError) as err:
        dm.setup("fit")
    msg = str(err.value)
    assert msg.startswith("3 of 8 audio file(s) cannot be used") and len(msg.splitlines()) == 4
    for name in ("a/1.wav", "b/2.wav", "b/3.wav"):
        assert str(root / name) in msg
    ok = _folder(tmp_path / "ok", {"a": 3, "b": 3}, seconds=0.1)
    calls = Counter()
    real = audio_io.info

    def counting(path):
        calls[str(path)] += 1
        return real(path)

    monkeypatch.setattr("sed.data.clips.info", counting)
    dm = AudioDataModule(root=str(ok), clip_seconds=0.1)
    dm.setup("fit")
    dm.setup("validate")
    dm.setup("test")
    assert len(calls) == 6 and set(calls.values()) == {1}
    assert AudioDataModule(root=str(root), validate=False).setup("fit") is None


def test_manifest_multi_label_and_predict_paths(tmp_path):
    _folder(tmp_path / "f", {"x": 4}, seconds=0.25)
    rows = ["path,label,start,end"] + [
        f"f/x/{i}.wav,{lab},{s},{e}"
        for i, (lab, s, e) in enumerate(
            [("dog;cat", "", ""), ("cat", 0.0, 0.1), ("bird", "", ""), ("dog", 0.1, 0.2)]
        )
    ]
    rows += [f"f/x/{i}.wav,{lab},," for i, lab in enumerate(["cat", "dog;bird", "bird", "cat;dog"])]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    dm = AudioDataModule(
        source="manifest",
        manifest=str(tmp_path / "m.csv"),
        clip_seconds=0.25,
        batch_size=8,
        val_fraction=0.25,
        predict_paths=[str(tmp_path / "f" / "x" / "0.wav"), str(tmp_path / "f" / "x" / "*.wav")],
    )
    assert dm.is_multi_label and dm.label_names == ["bird", "cat", "dog"]
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["label"].dtype == torch.float32 and batch["label"].shape[1] == 3
    assert batch["wave"].shape[1] == SR // 4 and (batch["lengths"] <= SR // 4).all()
    assert min(batch["lengths"].tolist()) == round(0.1 * SR)
    dm.setup("predict")
    pred = next(iter(dm.predict_dataloader()))
    assert len(pred["path"]) == 4 and (pred["label"] == -1).all()  # de-duplicated, unlabelled
    with pytest.raises(DatasetError, match="do not have exactly one label"):
        AudioDataModule(source="manifest", manifest=str(tmp_path / "m.csv"), multi_label=False)


def test_lightning_cli_style_instantiation(esc):
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(AudioDataModule, "data")
    cfg = parser.parse_object(
        {
            "data": {
                "source": "esc50",
                "root": esc["root"],
                "clip_seconds": 0.5,
                "val_folds": [1],
                "balanced": True,
            }
        }
    )
    dm = parser.instantiate_classes(cfg).data
    assert isinstance(dm, AudioDataModule) and dm.num_classes == 3 and dm.hparams.val_folds == [1]
    with pytest.raises(ValueError, match="source must be one of"):
        AudioDataModule(source="nope", root=esc["root"])


@pytest.mark.parametrize("balanced", [False, True])
def test_training_draws_depend_on_run_seed_and_epoch_alone(tmp_path, monkeypatch, balanced):
    """Epoch e's order is a function of (run seed, data seed, e): what a resumed run relies on."""
    root = _folder(tmp_path / "f", {"a": 6, "b": 6}, seconds=0.1)

    def draws(run_seed, epoch, data_seed=0):
        monkeypatch.setenv("PL_GLOBAL_SEED", str(run_seed))
        dm = AudioDataModule(root=str(root), balanced=balanced, val_fraction=0.25, seed=data_seed)
        dm.setup("fit")
        sampler = dm.train_dataloader().sampler
        sampler.set_epoch(epoch)
        torch.manual_seed(epoch + 100)  # the global generator plays no part
        return list(sampler)

    assert draws(0, 3) == draws(0, 3)
    assert len({tuple(draws(0, e)) for e in range(4)}) == 4
    assert draws(1, 3) != draws(0, 3) and draws(0, 3, data_seed=1) != draws(0, 3)
    assert balanced or sorted(draws(0, 2)) == list(range(len(draws(0, 2))))  # a permutation
