"""AudioDataModule: clip-classification data for Lightning, configured by plain arguments (YAML).

``source`` picks the reader: ``folder`` (:func:`~sed.data.corpora.folder.folder_items` of ``root``),
``manifest`` (:func:`~sed.data.corpora.folder.manifest_items` of ``manifest``; ``root``, when given,
is the base of relative paths), ``esc50`` (:func:`~sed.data.corpora.esc50.esc50_items` of ``root``) or
``shards`` (WebDataset shards of ``sedkit shard``: ``shards`` is a folder, a brace pattern or a
list, local or URLs; streamed by :class:`~sed.data.shards.reader.ShardClips`, with its guarantees on
what each rank and worker reads; split by the samples' folds, or ``val_shards``/``test_shards``;
the epoch length comes from ``index.json``; ``shuffle_buffer`` samples are shuffled per worker).
The metadata is read in ``__init__`` so that ``num_classes``, ``label_names`` and
``is_multi_label`` are there for LightningCLI's argument links; audio is only touched in
:meth:`~AudioDataModule.setup`, which checks every file header once and raises one
DatasetError listing all bad files.

Splits. Items with folds (ESC-50, manifests with a ``fold`` column) are split by fold:
``test`` = ``test_folds`` (none: the val split serves as test); ``val`` = ``val_folds``, else
``test_folds``, else the folds not in ``train_folds``, else the last fold; ``train`` =
``train_folds``, else every fold not in val or test. Items without folds are split by
:func:`~sed.data.clips.split_items` (stratified, ``val_fraction``, ``seed``); test = val.
``predict`` serves ``predict_paths`` (files, folders, globs; unlabelled) or the test split.

Training crops ``clip_seconds`` at random; val/test/predict take the centre crop.

``balanced=True`` draws training items with a WeightedRandomSampler (with replacement,
``len(train)`` draws per epoch) whose per-item weight is the sum over its labels of
1 / (label count in train), AST's balanced sampler; items without labels get the smallest
weight of the labelled ones. Epoch ``e``'s draws (or shuffle) are seeded by the run's seed,
``seed`` and ``e`` (:mod:`sed.data.modules.samplers`), so a resumed run draws what the uninterrupted one
did. Under DDP Lightning wraps the balanced sampler in its DistributedSamplerWrapper: every rank
draws the same weighted sequence each epoch and takes its own 1/world_size share of it (an epoch
is still ``len(train)`` draws in all). Plain shuffling gets Lightning's DistributedSampler.

Unlabelled audio (semi-supervised training, :mod:`sed.tasks.semi`). ``unlabeled`` is a folder (its
audio files, recursively), a CSV/JSONL manifest (labels it carries stay hidden from the loss) or
WebDataset shards; ``labeled_fraction`` keeps that share of each class's training files labelled
(stratified, seeded by ``seed``) and moves the rest to the unlabelled set, their labels hidden from
the loss but kept so the task can log how often its pseudo-labels are right. The training loader
then yields ``{"labeled": batch, "unlabeled": batch}`` (Lightning's ``CombinedLoader``,
``max_size_cycle``: an epoch is one pass over the larger set, the smaller one cycles); an
unlabelled batch's ``label`` is -1 (multi-label: all -1) where it is unknown.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from sed.audio.io import find_audio_files
from sed.data.clips import ClipDataset, ClipItem, item_labels, split_items, validate_files
from sed.data.corpora.esc50 import esc50_items
from sed.data.corpora.folder import folder_items, manifest_items
from sed.data.modules.base import SedDataModule
from sed.data.modules.samplers import run_seed
from sed.data.modules.unlabeled import HiddenLabels, unlabeled_items
from sed.data.shards.reader import ShardClips, read_index, shard_class_counts
from sed.errors import DatasetError

__all__ = ["AudioDataModule", "balanced_weights"]

SOURCES = ("folder", "manifest", "esc50", "shards")


def balanced_weights(items: list[ClipItem], num_classes: int) -> torch.Tensor:
    """Per-item sampling weight: the sum over its labels of 1 / count of that label in ``items``."""
    counts = Counter(k for it in items for k in item_labels(it))
    w = torch.tensor([sum(1.0 / counts[k] for k in item_labels(it)) for it in items], dtype=torch.double)
    if (w == 0).any() and (w > 0).any():
        w[w == 0] = w[w > 0].min()
    return w


class AudioDataModule(SedDataModule):
    """Waveform batches ``{"wave": [B, T], "lengths": [B], "label": [B] | [B, C], "path": [...]}``
    of a clip corpus (see the module docstring for sources, splits and the balanced sampler)."""

    pin_memory = True
    predict_split = "predict"
    persistent_splits = ("train", "val")  # test and predict run once

    def __init__(
        self,
        source: str = "folder",
        root: str | None = None,
        manifest: str | None = None,
        labels: list[str] | None = None,
        multi_label: bool | None = None,
        sample_rate: int = 16000,
        clip_seconds: float | None = 5.0,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        train_folds: list[int] | None = None,
        val_folds: list[int] | None = None,
        test_folds: list[int] | None = None,
        val_fraction: float = 0.2,
        balanced: bool = False,
        cache_audio: bool = False,
        seed: int = 0,
        validate: bool = True,
        predict_paths: list[str] | None = None,
        shards: str | list[str] | None = None,
        val_shards: str | list[str] | None = None,
        test_shards: str | list[str] | None = None,
        shuffle_buffer: int = 1000,
        unlabeled: str | list[str] | None = None,
        labeled_fraction: float | None = None,
        unlabeled_batch_size: int | None = None,
    ):
        super().__init__(
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            sampling_seed=seed,
        )
        # labels/multi_label are linked into the task, which logs the resolved values; kept apart
        # here so that Lightning's merge of task and data hyperparameters does not conflict
        self.save_hyperparameters(ignore=["labels", "multi_label"])
        self._given_labels = labels
        if source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
        if sample_rate <= 0 or (clip_seconds is not None and clip_seconds <= 0):
            raise ValueError("sample_rate and clip_seconds must be positive")
        if labeled_fraction is not None and not 0.0 < labeled_fraction < 1.0:
            raise ValueError(f"labeled_fraction must be in (0, 1), got {labeled_fraction}")
        if labeled_fraction is not None and source == "shards":
            raise ValueError(
                "labeled_fraction splits clip corpora; with shards give the unlabelled shards as unlabeled"
            )
        if unlabeled_batch_size is not None and unlabeled_batch_size < 1:
            raise ValueError("unlabeled_batch_size must be >= 1")
        if source == "shards" and balanced:
            raise ValueError("balanced sampling needs random access to the items; not with source: shards")
        self.index = read_index(shards) if source == "shards" and shards else None
        self.items, names, data_multi = self._read()
        if multi_label is False and data_multi:
            several = [it.path for it in self.items if len(item_labels(it)) != 1]
            if several:
                raise DatasetError(
                    manifest or root,
                    f"{len(several)} item(s) do not have exactly one label "
                    f"(e.g. {several[0]}), but multi_label is False",
                )
        self.set_labels(names, data_multi if multi_label is None else bool(multi_label))
        self.splits: dict[str, list[ClipItem]] = self._split()
        self.unlabeled_items: list[ClipItem] = []
        if labeled_fraction is not None:
            rest, kept = split_items(self.splits["train"], labeled_fraction, seed)
            self.splits["train"], self.unlabeled_items = kept, rest
        if unlabeled is not None and not self._unlabeled_shards:
            self.unlabeled_items += unlabeled_items(unlabeled, self.label_names, root)
        self.datasets: dict[str, ClipDataset] = {}

    # ------------------------------------------------------------------ metadata (no audio)

    @property
    def has_unlabeled(self) -> bool:
        return bool(self.unlabeled_items) or self._unlabeled_shards

    @property
    def _unlabeled_shards(self) -> bool:
        u = self.hparams.unlabeled
        return u is not None and (
            isinstance(u, (list, tuple))
            or str(u).endswith(".tar")
            or "{" in str(u)
            or ("://" in str(u))
            or (Path(u).is_dir() and (Path(u) / "index.json").is_file())
        )

    def _read(self) -> tuple[list[ClipItem], list[str], bool]:
        hp = self.hparams
        if hp.source == "shards":
            if self.index is None:
                raise ValueError(
                    "source 'shards' needs the shards argument (a folder, brace pattern or list)"
                )
            names = list(self.index["labels"])
            if self._given_labels is not None and list(self._given_labels) != names:
                raise DatasetError(
                    hp.shards, f"labels {list(self._given_labels)} differ from the shards' {names}"
                )
            return [], names, bool(self.index.get("multi_label"))
        if hp.source == "manifest":
            if not hp.manifest:
                raise ValueError("source 'manifest' needs the manifest argument (a .csv/.tsv/.jsonl file)")
            return manifest_items(hp.manifest, self._given_labels, base=hp.root)
        if not hp.root:
            raise ValueError(f"source {hp.source!r} needs the root argument (the corpus folder)")
        if hp.source == "folder":
            return (*folder_items(hp.root, self._given_labels), False)
        items, names = esc50_items(hp.root)
        if self._given_labels is not None and list(self._given_labels) != names:
            raise DatasetError(
                hp.root, f"labels {list(self._given_labels)} differ from the ESC-50 categories {names}"
            )
        return items, names, False

    def _split(self) -> dict[str, list[ClipItem]]:
        hp = self.hparams
        given = {"train_folds": hp.train_folds, "val_folds": hp.val_folds, "test_folds": hp.test_folds}
        if hp.source == "shards":
            return self._shard_split(given)
        if all(it.fold is None for it in self.items):
            named = [k for k, v in given.items() if v]
            if named:
                raise ValueError(f"{', '.join(named)} given, but the items carry no folds (use val_fraction)")
            train, val = split_items(self.items, hp.val_fraction, hp.seed)
            return {"train": train, "val": val, "test": val}
        folds = sorted({it.fold for it in self.items})
        for name, chosen in given.items():
            unknown = sorted(set(chosen or ()) - set(folds))
            if unknown:
                raise ValueError(f"{name} {unknown} not in the data's folds {folds}")
        test = set(hp.test_folds or ())
        if hp.val_folds:
            val = set(hp.val_folds)
        elif test:
            val = set(test)
        elif hp.train_folds:
            val = set(folds) - set(hp.train_folds)
        else:
            val = {folds[-1]}
        train = set(hp.train_folds or set(folds) - val - test)
        if train & (val | test):
            raise ValueError(f"train folds {sorted(train)} overlap val/test folds {sorted(val | test)}")
        if not train or not val:
            raise ValueError(
                f"empty split: train folds {sorted(train)}, val folds {sorted(val)} (data folds {folds})"
            )
        out = {
            name: [it for it in self.items if it.fold in chosen]
            for name, chosen in (("train", train), ("val", val), ("test", test))
        }
        if not test:
            out["test"] = out["val"]
        return out

    def _shard_split(self, given: dict) -> dict:
        """Shards: ``{split: (shard spec, folds or None)}``. ``val_shards``/``test_shards`` name other
        shards; otherwise the folds of the samples split them as for the other sources."""
        hp = self.hparams
        if hp.val_shards:
            return {
                "train": (hp.shards, hp.train_folds),
                "val": (hp.val_shards, hp.val_folds),
                "test": (hp.test_shards or hp.val_shards, hp.test_folds),
            }
        folds = sorted(int(k) for k in self.index.get("fold_counts", {}) if k not in ("None", "null"))
        if not folds:
            raise ValueError("these shards carry no folds: give val_shards (and test_shards) for evaluation")
        test = list(hp.test_folds or [])
        val = list(hp.val_folds or test or [folds[-1]])
        train = list(hp.train_folds or [f for f in folds if f not in set(val) | set(test)])
        if set(train) & (set(val) | set(test)) or not train:
            raise ValueError(
                f"train folds {train} overlap val/test folds {sorted(set(val) | set(test))} or are empty"
            )
        return {"train": (hp.shards, train), "val": (hp.shards, val), "test": (hp.shards, test or val)}

    def class_counts(self, split: str = "train") -> torch.Tensor:
        """Items per class ``[C]`` (long) in a split, each label of a multi-label item counted."""
        if self.hparams.source == "shards":
            return shard_class_counts(
                read_index(self.splits[split][0]), self.label_names, self.splits[split][1]
            )
        counts = Counter(k for it in self.splits[split] for k in item_labels(it))
        return torch.tensor([counts[k] for k in range(self.num_classes)], dtype=torch.long)

    # ------------------------------------------------------------------ datasets

    def _dataset(self, items: list[ClipItem], train: bool) -> ClipDataset:
        hp = self.hparams
        return ClipDataset(
            items,
            self.label_names,
            multi_label=self.is_multi_label,
            sample_rate=hp.sample_rate,
            clip_seconds=hp.clip_seconds,
            train=train,
            cache_audio=hp.cache_audio,
        )

    def _shard_dataset(self, split: str, train: bool) -> ShardClips:
        hp = self.hparams
        spec, folds = self.splits[split]
        return ShardClips(
            spec,
            self.label_names,
            self.is_multi_label,
            sample_rate=hp.sample_rate,
            clip_seconds=hp.clip_seconds,
            train=train,
            folds=folds,
            shuffle_buffer=hp.shuffle_buffer,
            seed=run_seed(hp.seed),
            num_workers=hp.num_workers,
        )

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets (once); check every corpus file before the first one is read."""
        if self.hparams.source == "shards" and not (stage == "predict" and self.hparams.predict_paths):
            if "train" not in self.datasets:
                self.datasets.update(
                    train=self._shard_dataset("train", True),
                    val=self._shard_dataset("val", False),
                    test=self._shard_dataset("test", False),
                )
                self.datasets.setdefault("predict", self.datasets["test"])
            return
        if stage == "predict" and self.hparams.predict_paths:
            if "predict" not in self.datasets:
                files = [str(p) for p in find_audio_files(self.hparams.predict_paths)]
                items = [ClipItem(p, None) for p in files]
                if self.hparams.validate:
                    validate_files(items)
                self.datasets["predict"] = self._dataset(items, train=False)
            return
        if "train" not in self.datasets:
            if self.hparams.validate:
                validate_files(self.items)
            val = self._dataset(self.splits["val"], train=False)
            test = (
                val
                if self.splits["test"] is self.splits["val"]
                else self._dataset(self.splits["test"], False)
            )
            self.datasets.update(train=self._dataset(self.splits["train"], train=True), val=val, test=test)
            if self.unlabeled_items:
                if self.hparams.validate:
                    validate_files(self.unlabeled_items)
                self.datasets["unlabeled"] = self._dataset(self.unlabeled_items, train=True)
        if not self.hparams.predict_paths:
            self.datasets.setdefault("predict", self.datasets["test"])

    def dataset(self, split: str) -> ClipDataset | ShardClips:
        """The dataset of ``split`` (``train``/``val``/``test``/``predict``/``unlabeled``), built on first
        use."""
        if split not in self.datasets:
            self.setup("predict" if split == "predict" else None)
        return self.datasets[split]

    # ------------------------------------------------------------------ loaders

    def make_loader(self, dataset, batch_size: int, **kwargs) -> DataLoader:
        if isinstance(
            dataset, (ShardClips, HiddenLabels)
        ):  # workers fork each epoch, so that they see the epoch
            trainer = getattr(self, "trainer", None)
            dataset.set_epoch(trainer.current_epoch if trainer is not None else 0)
            kwargs.update(shuffle=False, persistent=False)  # the shards shuffle themselves
        elif self.num_workers > 0:
            dataset.preload()  # fill the cache (cache_audio) once here; forked workers inherit it
        return super().make_loader(dataset, batch_size, **kwargs)

    def train_dataloader(self):
        ds = self.dataset("train")
        weights = balanced_weights(ds.items, self.num_classes) if self.hparams.balanced else None
        labeled = self.make_loader(ds, self.batch_size, shuffle=True, weights=weights)
        if not self.has_unlabeled:
            return labeled
        from pytorch_lightning.utilities import CombinedLoader

        return CombinedLoader(
            {"labeled": labeled, "unlabeled": self._unlabeled_loader()}, mode="max_size_cycle"
        )

    def _unlabeled_loader(self) -> DataLoader:
        hp = self.hparams
        size = hp.unlabeled_batch_size or self.batch_size
        if self._unlabeled_shards:
            shards = ShardClips(
                hp.unlabeled,
                None,
                None,
                sample_rate=hp.sample_rate,
                clip_seconds=hp.clip_seconds,
                train=True,
                shuffle_buffer=hp.shuffle_buffer,
                seed=run_seed(hp.seed) + 1,
                num_workers=hp.num_workers,
            )
            same = (
                list(shards.index["labels"]) == self.label_names
                and bool(shards.index.get("multi_label")) == self.is_multi_label
            )
            return self.make_loader(
                HiddenLabels(
                    shards, keep=same, num_classes=self.num_classes, multi_label=self.is_multi_label
                ),
                size,
            )
        return self.make_loader(self.dataset("unlabeled"), size, shuffle=True, seed=hp.seed + 1)
