"""IcbhiDataModule: ICBHI 2017 respiratory cycles for Lightning (spec ``ast-patchmix-icbhi.md`` §2.1).

Splits come from :class:`~sed.data.corpora.icbhi.IcbhiDataset`
(:func:`~sed.data.corpora.icbhi.split_recordings`): ``test`` is the official 60/40 test split (or patient fold
``k``); ``val`` is carved by patient
from the training recordings (``val_fraction``, ``seed``) unless ``select_on_test=True``, which
reproduces the published protocol (train on every training recording, select on the test split).

``num_classes``, ``label_names`` and ``is_multi_label`` are known from the arguments alone, so
LightningCLI's data -> model links work without reading audio; cycles are read in :meth:`setup`.
Batches are ``{"wave": [B, T], "lengths": [B], "label": [B], "path": [...]}``
(:func:`~sed.data.clips.collate_clips`); the training loader shuffles and drops the last
incomplete batch as the reference does (``drop_last=True``).
"""

from __future__ import annotations

import torch

from sed.data.corpora.icbhi import LABEL_NAMES, SAMPLE_RATE, IcbhiDataset, _fold_arg
from sed.data.modules.base import SedDataModule

__all__ = ["IcbhiDataModule"]


class IcbhiDataModule(SedDataModule):
    """ICBHI cycles fixed to ``cycle_seconds`` (8 s: 798 AST frames) at 16 kHz.

    Args:
        root: the flat ICBHI folder (recordings, annotations, ``official_split.txt``).
        fold: ``"official"`` or a patient fold 0..4 held out as test.
        classes: 4 (normal/crackle/wheeze/both) or 2 (normal/abnormal).
        pad: ``repeat`` (reference) or ``zero``.
        val_fraction, seed: validation patients carved from the training split.
        select_on_test: validate on the test split (the published best-on-test protocol).
        batch_size, eval_batch_size (default: batch_size), num_workers: loaders.
        cycle_seconds: cycle length (8 s in the reference; smaller for quick runs).
    """

    drop_last_train = True  # as the reference

    def __init__(
        self,
        root: str,
        fold: str | int = "official",
        classes: int = 4,
        pad: str = "repeat",
        val_fraction: float = 0.2,
        seed: int = 0,
        select_on_test: bool = False,
        batch_size: int = 8,
        num_workers: int = 0,
        eval_batch_size: int | None = None,
        cycle_seconds: float = 8.0,
    ):
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers)
        self.save_hyperparameters()
        if classes not in (2, 4):
            raise ValueError(f"classes must be 4 or 2, got {classes}")
        if pad not in ("repeat", "zero"):
            raise ValueError(f"pad must be 'repeat' or 'zero', got {pad!r}")
        if cycle_seconds <= 0:
            raise ValueError(f"cycle_seconds must be positive, got {cycle_seconds}")
        if not select_on_test and not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1) without select_on_test, got {val_fraction}")
        self.fold = _fold_arg(fold)
        self.set_labels(LABEL_NAMES if classes == 4 else ["normal", "abnormal"])
        self._datasets: dict[str, IcbhiDataset] = {}

    def dataset(self, split: str) -> IcbhiDataset:
        """The ``train``/``val``/``test`` :class:`IcbhiDataset`, read on first use."""
        if split not in self._datasets:
            h = self.hparams
            self._datasets[split] = IcbhiDataset(
                h.root,
                split=split,
                fold=self.fold,
                classes=h.classes,
                pad=h.pad,
                val_fraction=h.val_fraction,
                seed=h.seed,
                select_on_test=h.select_on_test,
                cycle_seconds=h.cycle_seconds,
                sample_rate=SAMPLE_RATE,
            )
        return self._datasets[split]

    def class_counts(self, split: str = "train") -> torch.Tensor:
        """Cycles per class ``[C]`` (long) of a split (for ``class_weights="inverse_frequency"``)."""
        return torch.tensor(self.dataset(split).class_counts(), dtype=torch.long)
