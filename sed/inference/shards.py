"""Shards as inference input (``sedkit classify --shards``, ``sedkit embed --shards``): the samples of
WebDataset shards written by ``sedkit shard``, shard by shard, as named waveforms for
:class:`~sed.inference.classifier.Classifier` (``<shard>/<key>``; whole clips at the model's rate).
Memory holds one shard's audio at a time. A member that fails is reported on stderr (one line) and
counted in :attr:`ShardSources.failed`. Distributed inference over shards is ``sedkit predict``
(:class:`~sed.tasks.callbacks.PredictionWriter`)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import torch

from sed.data.shards.reader import ShardClips, read_index, shard_urls

__all__ = ["ShardSources", "shard_sources"]


class ShardSources:
    """Iterating gives, per shard, its samples as ``(name, mono waveform at sample_rate)``; ``failed``
    counts the members (or damaged tars) reported so far."""

    def __init__(self, spec: str | os.PathLike | Sequence[str], sample_rate: int):
        index = read_index(spec)
        self.shards = [
            ShardClips([url], sample_rate=sample_rate, clip_seconds=None, index=index)
            for url in shard_urls(spec)
        ]
        self.failed = 0

    def __iter__(self) -> Iterator[list[tuple[str, torch.Tensor]]]:
        for ds in self.shards:
            sources = []
            for item in ds:
                if "error" in item:
                    self.failed += 1
                else:
                    sources.append((item["path"], item["wave"][: item["length"]]))
            yield sources


def shard_sources(spec: str | os.PathLike | Sequence[str], sample_rate: int) -> ShardSources:
    """The samples of the shards of ``spec`` (see :class:`ShardSources`)."""
    return ShardSources(spec, sample_rate)
