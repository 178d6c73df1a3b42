"""SedDataModule: the contract every sedkit data module keeps, and the loaders they build alike.

The contract (what LightningCLI links into the model, and what the tasks ask for):

- ``num_classes``, ``label_names``, ``is_multi_label``: known after ``__init__`` without reading
  audio (a subclass sets them with :meth:`SedDataModule.set_labels`), so the data -> model links work;
- ``class_counts(split)``: items per class ``[C]`` (long) of a split (``class_weights="inverse_frequency"``);
- ``dataset(split)``: the ``train``/``val``/``test`` (and ``predict``) dataset, built on first use.

The loaders. ``batch_size`` serves training, ``eval_batch_size`` (default ``batch_size``) the other
splits; ``num_workers`` worker processes, kept between epochs for the splits in ``persistent_splits``;
batches collated by :attr:`SedDataModule.collate`; training draws an epoch-seeded shuffle (or
weighted draws) from :func:`~sed.data.modules.samplers.training_sampling`, so a resumed run draws what
the uninterrupted one did. What differs between modules is a class attribute (``pin_memory``,
``drop_last_train``, ``predict_split``, ``persistent_splits``, ``collate``), or an override.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from sed.data.clips import collate_clips
from sed.data.modules.samplers import training_sampling

__all__ = ["STAGE_SPLITS", "SedDataModule"]

#: the splits each Lightning stage reads (``None``: all)
STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("predict",)}


class SedDataModule(pl.LightningDataModule):
    """A Lightning data module with sedkit's contract (see the module docstring).

    Args:
        batch_size: training batch size (>= 1).
        eval_batch_size: batch size of val/test/predict (>= 1; None: ``batch_size``).
        num_workers: loader worker processes (>= 0).
        sampling_seed: the data module's seed of the training sampler (mixed with the run's seed).
    """

    #: batches collated by this function
    collate: Callable[[list], dict] = staticmethod(collate_clips)
    #: pin batches in page-locked memory when a GPU is there
    pin_memory: bool = False
    #: the training loader drops its last incomplete batch
    drop_last_train: bool = False
    #: the dataset the predict loader serves
    predict_split: str = "test"
    #: the splits whose worker processes live on between epochs (when ``num_workers > 0``)
    persistent_splits: tuple[str, ...] = ("train", "val", "test", "predict")

    def __init__(
        self,
        *,
        batch_size: int,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        sampling_seed: int = 0,
    ):
        super().__init__()
        if batch_size < 1 or (eval_batch_size is not None and eval_batch_size < 1) or num_workers < 0:
            raise ValueError("batch_size and eval_batch_size must be >= 1 and num_workers >= 0")
        self.batch_size, self.eval_batch_size = int(batch_size), int(eval_batch_size or batch_size)
        self.num_workers, self.sampling_seed = int(num_workers), int(sampling_seed)
        self._label_names: list[str] = []
        self._multi_label = False

    # ------------------------------------------------------------------ linked into the task
    def set_labels(self, label_names: Sequence[str], multi_label: bool = False) -> None:
        """The classes this module serves (called by the subclass's ``__init__``)."""
        self._label_names, self._multi_label = [str(n) for n in label_names], bool(multi_label)

    @property
    def num_classes(self) -> int:
        return len(self._label_names)

    @property
    def label_names(self) -> list[str]:
        return list(self._label_names)

    @property
    def is_multi_label(self) -> bool:
        return self._multi_label

    def class_counts(self, split: str = "train") -> torch.Tensor:
        """Items per class ``[C]`` (long) in a split, each label of a multi-label item counted."""
        raise NotImplementedError(f"{type(self).__name__} does not count its classes")

    # ------------------------------------------------------------------ datasets
    def dataset(self, split: str) -> Dataset:
        """The dataset of ``split`` (``train``/``val``/``test``/``predict``), built on first use."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets the stage reads (all without a stage)."""
        splits = STAGE_SPLITS.get(stage, ("train", "val", "test"))
        for split in splits:
            self.dataset(self.predict_split if split == "predict" else split)

    # ------------------------------------------------------------------ loaders
    def make_loader(
        self,
        dataset,
        batch_size: int,
        *,
        shuffle: bool = False,
        weights: torch.Tensor | None = None,
        seed: int | None = None,
        persistent: bool = True,
        drop_last: bool = False,
    ) -> DataLoader:
        """A loader with this module's workers, collate and memory pinning; ``shuffle`` draws an epoch-seeded
        shuffle (``weights``: weighted draws) seeded by ``seed`` (default ``sampling_seed``)."""
        sampling = (
            training_sampling(dataset, self.sampling_seed if seed is None else seed, weights)
            if shuffle
            else {}
        )
        return DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=self.num_workers,
            collate_fn=self.collate,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=persistent and self.num_workers > 0,
            drop_last=drop_last,
            **sampling,
        )

    def split_loader(self, split: str) -> DataLoader:
        """The loader of a split: training shuffles (seeded per epoch); the others keep the order."""
        train = split == "train"
        return self.make_loader(
            self.dataset(split),
            self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            persistent=split in self.persistent_splits,
            drop_last=train and self.drop_last_train,
        )

    def train_dataloader(self) -> DataLoader:
        return self.split_loader("train")

    def val_dataloader(self) -> DataLoader:
        return self.split_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.split_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self.split_loader(self.predict_split)
