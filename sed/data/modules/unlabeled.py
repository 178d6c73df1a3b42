"""Unlabelled audio for semi-supervised training: a folder, a manifest, or shards whose labels stay hidden.

:func:`unlabeled_items` lists a folder's audio files (recursively) as unlabelled items, or reads a
CSV/JSONL manifest: rows whose labels are among the data's classes keep them (hidden from the loss
by the task, used only to measure pseudo-labels), rows without labels (or with other classes) are
unlabelled. :class:`HiddenLabels` streams shards the same way (their labels are kept only when they
are the data's own classes).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import IterableDataset

from sed.audio.io import find_audio_files
from sed.data.clips import ClipItem
from sed.data.corpora.folder import manifest_items
from sed.data.shards.reader import ShardClips
from sed.errors import AudioError, DatasetError

__all__ = ["HiddenLabels", "unlabeled_items"]

MANIFEST_SUFFIXES = (".csv", ".tsv", ".jsonl")


def unlabeled_items(
    source: str | os.PathLike | Sequence[str],
    label_names: Sequence[str],
    root: str | os.PathLike | None = None,
) -> list[ClipItem]:
    """Items of the unlabelled set (see the module docstring); a DatasetError when it holds none."""
    sources = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    items: list[ClipItem] = []
    for src in sources:
        path = Path(src)
        if path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
            rows, names, _ = manifest_items(path, base=root)
            index = {n: k for k, n in enumerate(label_names)}
            for it in rows:
                labels = [names[k] for k in ([it.label] if isinstance(it.label, int) else it.label or [])]
                known = [index[n] for n in labels if n in index]
                label = (
                    None
                    if not known or len(known) != len(labels)
                    else (known[0] if isinstance(it.label, int) else known)
                )
                items.append(replace(it, label=label, fold=None))
            continue
        if not path.exists() and not any(c in str(src) for c in "*?["):
            raise DatasetError(path, "unlabeled: no such file or folder")
        try:
            files = find_audio_files([path])
        except AudioError as e:
            raise DatasetError(path, f"unlabeled: {e.reason}") from None
        items += [ClipItem(str(f), None) for f in files]
    if not items:
        raise DatasetError(sources[0], "unlabeled: no audio files")
    return items


class HiddenLabels(IterableDataset):
    """Shards streamed as unlabelled clips: their labels become -1 unless ``keep`` (the data's own
    classes)."""

    def __init__(self, shards: ShardClips, keep: bool, num_classes: int, multi_label: bool):
        self.shards, self.keep, self.num_classes, self.multi_label = shards, keep, num_classes, multi_label

    def set_epoch(self, epoch: int) -> None:
        self.shards.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.shards)

    def __iter__(self) -> Iterator[dict]:
        for sample in self.shards:
            if not self.keep:
                sample = {
                    **sample,
                    "label": torch.full((self.num_classes,), -1.0) if self.multi_label else -1,
                }
            yield sample
