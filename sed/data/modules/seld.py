"""StarssDataModule: STARSS22/23 SELD data for Lightning (../shared/specs/seld.md 3.3).

Training serves non-overlapping ``sequence_seconds`` sequences of the ``train_split`` files
(shuffled); validation and test serve whole files (``mode="eval"``, one item per file, padded
by :func:`~sed.data.modules.seld_dataset.collate`), so the task can score each file with the DCASE
metrics. Items carry "audio" ``[4, T]`` at 24 kHz, or, with ``cache_dir``, "features"
``[C, frames, bins]`` computed once by the format's default front end
(:func:`sed.audio.features.build_frontend`, the same one ``sedkit prepare starss --cache DIR``
fills) and kept under ``cache_dir``. The task checks that its model's front end has the same
key (:func:`~sed.data.modules.feature_cache.frontend_key`), so cached features are always what the
model would compute itself.

``num_classes``, ``label_names`` and ``is_multi_label`` (False) are known after ``__init__`` for
LightningCLI's argument links; no audio is touched before :meth:`setup`.

Standardiser. The baseline fits its scaler on the development features (spec 2.8, 11.4); here
the task fits the model's :class:`~sed.audio.spatial.FeatureStandardizer` once, at the start of
fit, over :meth:`StarssDataModule.standardizer_features` (the whole training files' features,
from the cache when there is one, else computed by the model's front end).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import torch

from sed.data.corpora import starss
from sed.data.modules.base import SedDataModule
from sed.data.modules.seld_dataset import StarssDataset
from sed.data.modules.seld_dataset import collate as collate_seld

__all__ = ["StarssDataModule", "seld_label_names"]


def seld_label_names(num_classes: int) -> list[str]:
    """The STARSS23 class names for 13 classes, else ``class_0 .. class_{C-1}``."""
    if num_classes == starss.NUM_CLASSES:
        return list(starss.CLASS_NAMES)
    return [f"class_{k}" for k in range(num_classes)]


class StarssDataModule(SedDataModule):
    """SELD batches of a STARSS corpus (see the module docstring).

    Args:
        root: corpus root holding ``foa_dev/`` (or ``mic_dev/``) and ``metadata_dev/``.
        fmt: "foa" or "mic".
        train_split, val_split, test_split: "dev-train", "dev-test" or a list of fold numbers.
        sequence_seconds: training sequence length (a multiple of 0.1 s; 5 s as the baseline).
        batch_size, num_workers: training loader; evaluation batches hold ``eval_batch_size`` files.
        with_distance: 5-entry ADPIT targets with distance (DCASE2024; STARSS23 metadata).
        num_classes: classes of the metadata (13 for STARSS23); label_names: optional names.
        cache_dir: feature cache folder (items carry "features" instead of "audio").
        fit_standardizer: let the task fit the model's standardiser at the start of fit.
    """

    collate = staticmethod(collate_seld)

    def __init__(
        self,
        root: str,
        fmt: str = "foa",
        train_split: str | list[int] = "dev-train",
        val_split: str | list[int] = "dev-test",
        test_split: str | list[int] = "dev-test",
        sequence_seconds: float = 5.0,
        batch_size: int = 32,
        eval_batch_size: int = 1,
        num_workers: int = 0,
        with_distance: bool = False,
        num_classes: int = starss.NUM_CLASSES,
        label_names: list[str] | None = None,
        cache_dir: str | None = None,
        fit_standardizer: bool = True,
    ):
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers)
        if fmt not in starss.FORMATS:
            raise ValueError(f"fmt must be one of {starss.FORMATS}, got {fmt!r}")
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if label_names is not None and len(label_names) != int(num_classes):
            raise ValueError(f"{len(label_names)} label_names for {num_classes} classes")
        self.root, self.fmt = os.fspath(root), fmt
        self.splits = {"train": train_split, "val": val_split, "test": test_split}
        self.sequence_seconds, self.with_distance = float(sequence_seconds), bool(with_distance)
        self.set_labels(label_names if label_names else seld_label_names(int(num_classes)))
        self.cache_dir, self.fit_standardizer = cache_dir, bool(fit_standardizer)
        self._cache = None
        self.datasets: dict[str, StarssDataset] = {}

    # ------------------------------------------------------------------ data
    @property
    def cache(self):
        """The :class:`~sed.data.modules.feature_cache.FeatureCache` of ``cache_dir`` (None without one)."""
        if self.cache_dir and self._cache is None:
            from sed.audio.features import build_frontend
            from sed.data.modules.feature_cache import FeatureCache

            self._cache = FeatureCache(self.cache_dir, build_frontend(self.fmt))
        return self._cache

    def dataset(self, stage: str) -> StarssDataset:
        """The ``train``/``val``/``test`` :class:`StarssDataset`, read on first use."""
        if stage not in self.datasets:
            self.datasets[stage] = StarssDataset(
                self.root,
                self.splits[stage],
                fmt=self.fmt,
                sequence_seconds=self.sequence_seconds,
                mode="train" if stage == "train" else "eval",
                with_distance=self.with_distance,
                num_classes=self.num_classes,
                cache=self.cache,
            )
        return self.datasets[stage]

    def class_counts(self, split: str = "train") -> torch.Tensor:
        """Event frames (metadata rows) per class ``[C]`` (long) of a split's files."""
        counts = torch.zeros(self.num_classes, dtype=torch.long)
        for f in self.dataset(split).files:
            counts += torch.from_numpy(f["labels"].class_counts(self.num_classes))
        return counts

    # ------------------------------------------------------------------ standardiser
    def standardizer_files(self) -> list:
        """The audio files the standardiser is fitted on (the training split's)."""
        return [f["audio"] for f in self.dataset("train").files]

    def standardizer_features(
        self, frontend: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> Iterator[torch.Tensor]:
        """Unstandardised features ``[C, frames, bins]`` of each whole training file: from the cache when
        there is one, else ``frontend(audio [4, T])`` (the model's ``features``) on the audio at 24 kHz."""
        from sed.audio.io import load_audio

        for path in self.standardizer_files():
            if self.cache is not None:
                yield self.cache.get(path)
                continue
            if frontend is None:
                raise ValueError("standardizer_features needs the model's front end when there is no cache")
            wave, _ = load_audio(path, starss.SAMPLE_RATE, num_channels=starss.NUM_CHANNELS)
            with torch.no_grad():
                feats = frontend(wave.unsqueeze(0))
            yield feats[0].detach().float().cpu()
