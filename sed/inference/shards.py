"""Shards as inference input (``sedkit classify --shards``, ``sedkit embed --shards``): the samples of
WebDataset shards written by ``sedkit shard``, shard by shard, as named waveforms for
:class:`~sed.inference.classifier.Classifier` (``<shard>/<key>``; whole clips at the model's rate).
Memory holds one shard's audio at a time. Distributed inference over shards is ``sedkit predict``
(:class:`~sed.tasks.callbacks.PredictionWriter`)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import torch

from sed.data.shards import ShardClips, read_index, shard_urls

__all__ = ["shard_sources"]


def shard_sources(spec: str | os.PathLike | Sequence[str], sample_rate: int) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Per shard, its samples as ``(name, mono waveform at sample_rate)``; a damaged member is
    reported on stderr and left out (see :mod:`sed.data.shards`)."""
    index = read_index(spec)
    for url in shard_urls(spec):
        ds = ShardClips([url], sample_rate=sample_rate, clip_seconds=None, index=index)
        yield [(item["path"], item["wave"][: item["length"]]) for item in ds]
