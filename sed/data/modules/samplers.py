"""Training samplers whose epoch ``e`` depends on the run's seed and ``e`` alone.

A resumed run then shuffles (or draws balanced batches) exactly as the uninterrupted run did:
Lightning calls ``set_epoch`` before each epoch, and the training loader gets a generator of its
own, so that building its iterator draws nothing from the global generators (which
:class:`~sed.tasks.callbacks.EpochSeed` reseeds at each epoch's start for crops and augmentation).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import RandomSampler, WeightedRandomSampler

__all__ = ["EpochRandomSampler", "EpochWeightedSampler", "run_seed", "training_sampling"]


def run_seed(data_seed: int = 0) -> int:
    """The run's seed (``seed_everything``'s ``PL_GLOBAL_SEED``, the same on every rank; 0 without one)
    mixed with a data module's own ``seed``."""
    run = int(os.environ.get("PL_GLOBAL_SEED", 0))
    return int(np.random.SeedSequence([run % 2**32, data_seed % 2**32]).generate_state(1)[0])


class _EpochSeeded:
    """Sampler mixin: the draws of epoch ``e`` come from its own generator seeded with ``seed + e``;
    where nothing calls :meth:`set_epoch` (inside a DDP wrapper) each pass takes the next epoch."""

    def _seed(self, seed: int) -> None:
        self.seed, self.epoch, self.generator = seed, 0, torch.Generator()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        self.generator.manual_seed(self.seed + self.epoch)
        self.epoch += 1
        return super().__iter__()


class EpochRandomSampler(_EpochSeeded, RandomSampler):
    """A shuffle (without replacement) seeded per epoch; DDP replaces it with its DistributedSampler."""

    def __init__(self, data_source, seed: int):
        super().__init__(data_source)
        self._seed(seed)


class EpochWeightedSampler(_EpochSeeded, WeightedRandomSampler):
    """Weighted draws with replacement (AST's balanced sampler) seeded per epoch."""

    def __init__(self, weights: torch.Tensor, num_samples: int, seed: int):
        super().__init__(weights, num_samples)
        self._seed(seed)


def training_sampling(dataset, data_seed: int = 0, weights: torch.Tensor | None = None) -> dict:
    """``DataLoader`` kwargs of a training loader: an epoch-seeded shuffle (or weighted draws of
    ``len(dataset)`` items) and a generator of its own."""
    seed = run_seed(data_seed)
    sampler = (
        EpochRandomSampler(dataset, seed)
        if weights is None
        else EpochWeightedSampler(weights, len(dataset), seed)
    )
    return {"sampler": sampler, "generator": torch.Generator().manual_seed(seed)}
