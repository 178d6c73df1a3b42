"""DetectionDataModule: sound event detection data (DCASE Task 4, DESED layout) for Lightning.

Sources. Strong (``strong_folders`` + ``strong_tsvs``, one or several pairs: the synthetic
soundscapes, the real strongly labelled AudioSet clips, MAESTRO's real clips; under ``root`` by default
the first two, those that are there), weak (``weak_folder`` +
``weak_tsv``) and unlabelled (``unlabeled_folder``) training sets; validation and test sets with
strong TSVs and durations TSVs. With ``root`` every path left out is the DESED layout under it
(:data:`sed.data.corpora.desed.DESED_LAYOUT`, the DCASE 2024 baseline's folder names; a ``_16k``
folder is taken when it is there, else the 44.1 kHz original's name). Relative paths are taken from
``root``. The tables are read in ``__init__`` (bad rows: one DatasetError naming the table and line),
so the label names are known to LightningCLI's links; audio headers are checked in :meth:`setup`.

Labels. ``labels`` (default the ten DESED classes) are the classes of the model. A source that
annotates only some of them (MAESTRO) names them in ``strong_classes`` (one entry per strong source,
None: all) or ``weak_classes``; its ``class_mask`` is True on those, and the task leaves the other
classes out of that source's loss. Unlabelled clips have an all-False mask.

Training batches (the format of ``docs/detection.md``): ``batch_sizes`` = (strong, weak, unlabelled)
clips per batch (the baseline's 12, 12, 24; 0 drops a source), concatenated in that order, each
source drawn by its own epoch-seeded shuffle (:class:`~sed.data.modules.samplers.EpochRandomSampler`).
An epoch is defined as the baseline's ``ConcatDatasetBatchSampler`` defines it: it ends when the source
that runs out first has no full batch left (:class:`~sed.data.modules.detection_dataset.SourceBatchSampler`);
no source is cycled within an epoch. Training crops ``clip_seconds`` at random and moves the events
with the crop. Validation/test batches hold whole clips (zero-padded to ``clip_seconds``) with their
events and ``"duration"`` (from the durations TSV, else the file's length). Single device: the batch
sampler is not sharded across DDP ranks.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.utils.data import ConcatDataset, DataLoader

from sed.audio.io import info
from sed.data.clips import ClipItem, validate_files
from sed.data.corpora.desed import (
    DESED_CLASSES,
    DESED_LAYOUT,
    read_durations_tsv,
    read_strong_tsv,
    read_weak_tsv,
    unlabeled_files,
)
from sed.data.modules.base import SedDataModule
from sed.data.modules.detection_dataset import DetectionClips, SourceBatchSampler, collate_detection
from sed.data.modules.samplers import EpochRandomSampler, run_seed
from sed.errors import DatasetError

__all__ = ["DetectionDataModule"]


def _listed(value) -> list:
    return [] if value is None else [value] if isinstance(value, (str, os.PathLike)) else list(value)


class DetectionDataModule(SedDataModule):
    """Strong | weak | unlabelled training batches and strong val/test batches (see the module docstring)."""

    collate = staticmethod(collate_detection)
    pin_memory = True
    persistent_splits = ("train", "val")

    def __init__(
        self,
        root: str | None = None,
        strong_folders: str | list[str] | None = None,
        strong_tsvs: str | list[str] | None = None,
        strong_classes: list[list[str] | None] | None = None,
        weak_folder: str | None = None,
        weak_tsv: str | None = None,
        weak_classes: list[str] | None = None,
        unlabeled_folder: str | None = None,
        val_folder: str | None = None,
        val_tsv: str | None = None,
        val_durations: str | None = None,
        test_folder: str | None = None,
        test_tsv: str | None = None,
        test_durations: str | None = None,
        labels: list[str] | None = None,
        batch_sizes: list[int] = (12, 12, 24),
        eval_batch_size: int = 24,
        clip_seconds: float = 10.0,
        sample_rate: int = 16000,
        num_workers: int = 0,
        seed: int = 0,
        validate: bool = True,
    ):
        sizes = [int(b) for b in batch_sizes]
        if len(sizes) != 3 or min(sizes) < 0 or sum(sizes) < 1:
            raise ValueError(
                f"batch_sizes must be 3 numbers >= 0 (strong, weak, unlabelled), got {batch_sizes}"
            )
        if sample_rate <= 0 or clip_seconds <= 0:
            raise ValueError("sample_rate and clip_seconds must be positive")
        super().__init__(
            batch_size=sum(sizes),
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            sampling_seed=seed,
        )
        self.save_hyperparameters(ignore=["labels"])
        self.batch_sizes, self.clip_seconds, self.sample_rate = sizes, float(clip_seconds), int(sample_rate)
        self.root, self.validate = None if root is None else Path(os.path.expanduser(root)), bool(validate)
        if self.root is not None and not self.root.is_dir():
            raise DatasetError(self.root, "DESED root folder not found")
        self.set_labels(DESED_CLASSES if labels is None else labels, multi_label=True)
        if len(set(self.label_names)) != self.num_classes or not self.label_names:
            raise ValueError("labels must be a non-empty list of distinct names")
        folders, tsvs = self._strong_paths(strong_folders, strong_tsvs)
        if len(folders) != len(tsvs):
            raise ValueError(
                f"{len(folders)} strong folder(s) but {len(tsvs)} strong TSV(s): give one per folder"
            )
        classes = [None] * len(folders) if strong_classes is None else list(strong_classes)
        if len(classes) != len(folders):
            raise ValueError("strong_classes needs one entry (a class list or null) per strong source")
        self.sources: dict[str, list[tuple[list[ClipItem], list[bool]]]] = {"strong": [], "weak": []}
        for folder, tsv, names in zip(folders, tsvs, classes):
            self.sources["strong"].append((self._strong(folder, tsv), self._mask(names)))
        folder, tsv = self._path(weak_folder, "weak", 0), self._path(weak_tsv, "weak", 1)
        if folder is not None and tsv is not None:
            table = read_weak_tsv(tsv, self.label_names, folder)
            index = {n: k for k, n in enumerate(self.label_names)}
            items = [ClipItem(str(folder / n), [index[x] for x in v]) for n, v in table.items()]
            self.sources["weak"].append((items, self._mask(weak_classes)))
        folder = self._path(unlabeled_folder, "unlabeled", 0)
        unlabeled = (
            [] if folder is None else [ClipItem(str(folder / f), None) for f in unlabeled_files(folder)]
        )
        self.sources["unlabeled"] = [(unlabeled, [False] * self.num_classes)]
        for name, size in zip(("strong", "weak", "unlabeled"), sizes):
            if size and not sum(len(s[0]) for s in self.sources[name]):
                raise ValueError(
                    f"batch size {size} for {name} clips, but no {name} set is given (set it to 0)"
                )
        self.eval_sets: dict[str, tuple | None] = {}
        for split, folder, tsv, durations in (
            ("val", val_folder, val_tsv, val_durations),
            ("test", test_folder, test_tsv, test_durations),
        ):
            folder, tsv = self._path(folder, split, 0), self._path(tsv, split, 1)
            durations = self._path(durations, f"{split}_durations", 1)
            self.eval_sets[split] = (
                None
                if folder is None or tsv is None
                else (
                    self._strong(folder, tsv),
                    None if durations is None else read_durations_tsv(durations),
                    durations,
                )
            )
        self.datasets: dict[str, object] = {}

    # ------------------------------------------------------------------ metadata (no audio)
    def _path(self, value, key: str, part: int) -> Path | None:
        if value is None:
            rel = None if self.root is None else DESED_LAYOUT[key][part]
            if rel is None:
                return None
            for candidate in (self.root / rel, self.root / rel.replace("_16k", "")):
                if candidate.exists():
                    return candidate
            return None  # a set of the layout that is not there
        p = Path(os.path.expanduser(str(value)))
        return p if p.is_absolute() or self.root is None else self.root / p

    def _strong_paths(self, folders, tsvs) -> tuple[list[Path], list[Path]]:
        """The strong sources given, or those of the layout under ``root`` that are there (the
        synthetic soundscapes and the real strongly labelled clips)."""
        if folders is not None or tsvs is not None:
            return [self._path(v, "strong", 0) for v in _listed(folders)], [
                self._path(v, "strong", 1) for v in _listed(tsvs)
            ]
        pairs = [(self._path(None, k, 0), self._path(None, k, 1)) for k in ("strong", "strong_real")]
        pairs = [(f, t) for f, t in pairs if f is not None and t is not None]
        return [f for f, _ in pairs], [t for _, t in pairs]

    def _mask(self, names: list[str] | None) -> list[bool]:
        if names is None:
            return [True] * self.num_classes
        unknown = [n for n in names if n not in self.label_names]
        if unknown:
            raise ValueError(f"class {unknown[0]!r} of a source is not one of the labels")
        return [n in names for n in self.label_names]

    def _strong(self, folder: Path, tsv: Path) -> list[ClipItem]:
        index = {n: k for k, n in enumerate(self.label_names)}
        return [
            ClipItem(
                str(folder / name),
                sorted({index[e[2]] for e in rows}),
                events=tuple((a, b, index[c]) for a, b, c in rows),
            )
            for name, rows in read_strong_tsv(tsv, self.label_names, folder).items()
        ]

    # ------------------------------------------------------------------ datasets
    def _eval_dataset(self, split: str) -> DetectionClips | None:
        if self.eval_sets[split] is None:
            return None
        items, table, table_path = self.eval_sets[split]
        if table is None:
            durations = [info(it.path).duration for it in items]
        else:
            missing = [Path(it.path).name for it in items if Path(it.path).name not in table]
            if missing:
                raise DatasetError(
                    None, f"{split}: no duration for {missing[0]} ({len(missing)} file(s) lack one)"
                )
            durations = [table[Path(it.path).name] for it in items]
        return DetectionClips(
            items,
            self.label_names,
            source="strong",
            durations=durations,
            sample_rate=self.sample_rate,
            clip_seconds=self.clip_seconds,
        )

    def _train_dataset(self) -> ConcatDataset:
        parts = []
        for name, size in zip(("strong", "weak", "unlabeled"), self.batch_sizes):
            if not size:
                continue
            sets = [
                DetectionClips(
                    items,
                    self.label_names,
                    source=name,
                    class_mask=mask,
                    sample_rate=self.sample_rate,
                    clip_seconds=self.clip_seconds,
                    train=True,
                )
                for items, mask in self.sources[name]
                if items
            ]
            parts.append(sets[0] if len(sets) == 1 else ConcatDataset(sets))
        return ConcatDataset(parts)

    def dataset(self, split: str):
        """``train`` (a ConcatDataset of the sources drawn, in batch order), ``val`` or ``test``
        (:class:`DetectionClips`; None when the split is not given)."""
        if split not in self.datasets:
            ds = self._train_dataset() if split == "train" else self._eval_dataset(split)
            if ds is not None and self.validate:
                validate_files(_items(ds))
            self.datasets[split] = ds
        return self.datasets[split]

    def class_counts(self, split: str = "train") -> torch.Tensor:
        """Clips per class ``[C]`` of the strong and weak training sets (or a val/test split)."""
        counts = torch.zeros(self.num_classes, dtype=torch.long)
        if split == "train":
            items = [it for name in ("strong", "weak") for s in self.sources[name] for it in s[0]]
        else:
            ds = self.dataset(split)
            items = [] if ds is None else ds.items
        for it in items:
            counts[list(it.label or [])] += 1
        return counts

    # ------------------------------------------------------------------ loaders
    def train_dataloader(self) -> DataLoader:
        data = self.dataset("train")
        sizes = [b for b in self.batch_sizes if b]
        samplers = [
            EpochRandomSampler(part, run_seed(self.sampling_seed + k)) for k, part in enumerate(data.datasets)
        ]
        short = [
            f"{len(part)} {name} clip(s)"
            for name, part, size in zip(("strong", "weak", "unlabeled"), data.datasets, sizes)
            if len(part) < size
        ]
        if short:
            raise DatasetError(
                None, f"fewer clips than one batch takes: {', '.join(short)} (batch_sizes {sizes})"
            )
        return DataLoader(
            data,
            batch_sampler=SourceBatchSampler(samplers, sizes, [len(p) for p in data.datasets]),
            num_workers=self.num_workers,
            collate_fn=self.collate,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
        )

    def split_loader(self, split: str):
        if split == "train":
            return self.train_dataloader()
        ds = self.dataset(split)
        return (
            []
            if ds is None
            else self.make_loader(ds, self.eval_batch_size, persistent=split in self.persistent_splits)
        )


def _items(ds) -> list[ClipItem]:
    return [it for part in ds.datasets for it in _items(part)] if isinstance(ds, ConcatDataset) else ds.items
