"""The one data-module contract (sed.data.modules.base.SedDataModule) kept by the clip, ICBHI and STARSS
modules."""

import pytest
import torch

from sed.data.clips import collate_clips
from sed.data.modules.audio import AudioDataModule
from sed.data.modules.base import SedDataModule
from sed.data.modules.icbhi import IcbhiDataModule
from sed.data.modules.samplers import EpochRandomSampler, run_seed
from sed.data.modules.seld import StarssDataModule
from sed.data.modules.seld_dataset import collate as collate_seld
from sed.data.synth.corpora import make_esc50, make_icbhi, make_starss


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    esc = make_esc50(
        tmp_path_factory.mktemp("esc50"),
        seed=0,
        num_classes=3,
        clips_per_class=5,
        duration=1.0,
        sample_rate=16000,
    )
    icbhi = tmp_path_factory.mktemp("icbhi")
    make_icbhi(icbhi, seed=0, num_patients=6, recordings_per_patient=2, duration=10.0)
    starss = tmp_path_factory.mktemp("starss")
    make_starss(starss, seed=0, files_per_split=2, duration=4.0, num_classes=3)
    return {"esc50": esc["root"], "icbhi": str(icbhi), "starss": str(starss)}


def build(kind, roots, **kw):
    if kind == "audio":
        return AudioDataModule(source="esc50", root=roots["esc50"], clip_seconds=0.5, **kw)
    if kind == "icbhi":
        return IcbhiDataModule(roots["icbhi"], cycle_seconds=1.0, **kw)
    return StarssDataModule(roots["starss"], num_classes=3, sequence_seconds=2.0, **kw)


KINDS = ["audio", "icbhi", "starss"]


@pytest.mark.parametrize("kind", KINDS)
def test_every_module_keeps_the_contract(kind, roots):
    dm = build(kind, roots, batch_size=2)
    assert isinstance(dm, SedDataModule)
    assert dm.num_classes == len(dm.label_names) == {"audio": 3, "icbhi": 4, "starss": 3}[kind]
    assert dm.is_multi_label is False
    counts = dm.class_counts("train")
    assert counts.dtype == torch.long and counts.shape == (dm.num_classes,)
    train = dm.dataset("train")
    if kind == "starss":  # event frames (metadata rows) per class of the training files
        assert int(counts.sum()) == sum(len(f["labels"]) for f in train.files) > 0
    else:  # one label per clip / cycle
        assert int(counts.sum()) == len(train) > 0


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "bad", [{"batch_size": 0}, {"batch_size": 2, "eval_batch_size": 0}, {"batch_size": 2, "num_workers": -1}]
)
def test_loader_settings_are_checked_alike(kind, bad, roots):
    with pytest.raises(ValueError, match="batch_size and eval_batch_size must be >= 1 and num_workers >= 0"):
        build(kind, roots, **bad)


#: what differs between the modules' loaders: pinning, the training loader's last batch, persistent splits
DIFFERS = {
    "audio": (True, False, {"train", "val"}),
    "icbhi": (False, True, {"train", "val", "test", "predict"}),
    "starss": (False, False, {"train", "val", "test", "predict"}),
}


@pytest.mark.parametrize("kind", KINDS)
def test_loaders_are_built_alike(kind, roots):
    seed = {} if kind == "starss" else {"seed": 7}  # STARSS has no seed argument
    dm = build(kind, roots, batch_size=2, eval_batch_size=1, num_workers=1, **seed)
    pin, drop_last, persistent = DIFFERS[kind]
    loaders = {
        "train": dm.train_dataloader(),
        "val": dm.val_dataloader(),
        "test": dm.test_dataloader(),
        "predict": dm.predict_dataloader(),
    }
    for split, loader in loaders.items():
        assert loader.batch_size == (2 if split == "train" else 1), split
        assert loader.num_workers == 1 and loader.persistent_workers == (split in persistent), split
        assert loader.pin_memory == (pin and torch.cuda.is_available()), split
        assert loader.drop_last == (drop_last and split == "train"), split
        assert loader.collate_fn is (collate_seld if kind == "starss" else collate_clips), split
    sampler = loaders["train"].sampler
    assert isinstance(sampler, EpochRandomSampler)
    # the clip module seeds its shuffle with its seed; ICBHI's seed carves the validation patients only
    assert sampler.seed == run_seed(7 if kind == "audio" else 0)
    assert not isinstance(loaders["val"].sampler, EpochRandomSampler)
