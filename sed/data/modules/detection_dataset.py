"""The pieces of :class:`~sed.data.modules.detection.DetectionDataModule`: clips with timestamped events
from one annotation source, their collate, and the batch sampler that composes a training batch of
fixed shares of several sources (as the DCASE baseline's ``ConcatDatasetBatchSampler``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Sampler

from sed.data.clips import ClipDataset, ClipItem, crop_span, pad_clip
from sed.data.events import pad_events

__all__ = ["DetectionClips", "SourceBatchSampler", "collate_detection", "SOURCE_IDS"]

#: the ``"source"`` code of each kind of annotation
SOURCE_IDS = {"strong": 0, "weak": 1, "unlabeled": 2}


class DetectionClips(ClipDataset):
    """Mono clips of one source, with their events.

    ``item.events`` are an item's ``(onset, offset, class)`` (strong sources; None otherwise: a JSONL
    manifest's strong labels, :func:`~sed.data.corpora.folder.manifest_items`, serve too) and
    ``item.label`` its clip labels (weak sources; strong ones derive them from the events they serve;
    unlabelled: None). Training (``train=True``) cuts a random ``clip_seconds`` crop from a longer clip
    and moves the events with it (cut at the crop's edges); evaluation serves each clip whole, from
    its start (so event times stay the file's), zero-padded to ``clip_seconds`` when shorter.
    ``durations[i]`` (evaluation) is the clip's duration in seconds as its table gives it.

    Items: ``{"wave", "length", "events": [(onset, offset, class)], "weak": [C], "source": int,
    "class_mask": [C] bool, "path"}``, and ``"duration"`` with ``durations``."""

    def __init__(
        self,
        items: Sequence[ClipItem],
        label_names: Sequence[str],
        *,
        source: str,
        class_mask: Sequence[bool] | None = None,
        durations: Sequence[float] | None = None,
        sample_rate: int = 16000,
        clip_seconds: float | None = 10.0,
        train: bool = False,
    ):
        super().__init__(
            items,
            label_names,
            multi_label=True,
            sample_rate=sample_rate,
            clip_seconds=clip_seconds if train else None,
            train=train,
        )
        if durations is not None and len(durations) != len(self.items):
            raise ValueError("durations need one entry per item")
        bad = [e for it in self.items for e in it.events or () if not 0 <= int(e[2]) < self.num_classes]
        if bad:
            raise ValueError(f"event class {bad[0][2]} is not a class index in 0..{self.num_classes - 1}")
        self.source = SOURCE_IDS[source]
        mask = [True] * self.num_classes if class_mask is None else list(class_mask)
        self.class_mask = torch.tensor(mask if source != "unlabeled" else [False] * self.num_classes)
        self.durations = None if durations is None else [float(d) for d in durations]
        self.pad_to = None if clip_seconds is None else round(clip_seconds * self.sample_rate)

    def __getitem__(self, i: int) -> dict:
        it = self.items[i]
        a, b = self._span(it)
        start, stop = crop_span(b - a, self.clip_samples, self.train)
        wave, length = pad_clip(self._read(it.path, a + start, a + stop), self.pad_to)
        t0, t1 = start / self.sample_rate, stop / self.sample_rate
        events = [
            (max(on, t0) - t0, min(off, t1) - t0, c) for on, off, c in it.events or () if off > t0 and on < t1
        ]
        if self.source == SOURCE_IDS["strong"]:
            weak = torch.zeros(self.num_classes)
            weak[[c for _, _, c in events]] = 1.0
        elif self.source == SOURCE_IDS["weak"]:
            weak = self._target(it.label)
        else:
            weak = torch.zeros(self.num_classes)
        item = {
            "wave": wave,
            "length": length,
            "events": events,
            "weak": weak,
            "source": self.source,
            "class_mask": self.class_mask,
            "path": it.path,
        }
        if self.durations is not None:
            item["duration"] = self.durations[i]
        return item


def collate_detection(batch: list[dict]) -> dict:
    """A detection batch (the format of ``docs/detection.md``): waves zero-padded at the end to the
    longest, events padded with -1 (:func:`~sed.data.events.pad_events`); ``"duration"`` when every
    item has one."""
    if not batch:
        raise ValueError("collate_detection needs at least one item")
    longest = max(b["wave"].shape[-1] for b in batch)
    out = {
        "wave": torch.stack([F.pad(b["wave"], (0, longest - b["wave"].shape[-1])) for b in batch]),
        "lengths": torch.tensor([b["length"] for b in batch], dtype=torch.long),
        "events": pad_events([b["events"] for b in batch]),
        "weak": torch.stack([b["weak"] for b in batch]).float(),
        "source": torch.tensor([b["source"] for b in batch], dtype=torch.long),
        "class_mask": torch.stack([b["class_mask"] for b in batch]).bool(),
        "path": [b["path"] for b in batch],
    }
    if all("duration" in b for b in batch):
        out["duration"] = torch.tensor([b["duration"] for b in batch], dtype=torch.float)
    return out


class SourceBatchSampler(Sampler[list[int]]):
    """Batches of a ``ConcatDataset`` of sources: ``batch_sizes[k]`` indices drawn by ``samplers[k]``
    from source ``k`` (offset by the lengths of the sources before it), concatenated in source order.

    As the DCASE baseline's ``ConcatDatasetBatchSampler``: each epoch starts a fresh pass of every
    sampler, and ends when the source that runs out first (the smallest ``len(sampler_k) //
    batch_sizes[k]``) has no full batch left; the other sources' remaining items wait for a later
    epoch's shuffle. ``set_epoch`` reaches every sampler (Lightning calls it through
    ``batch_sampler.sampler``), so a resumed run draws what the uninterrupted one did."""

    def __init__(self, samplers: Sequence[Sampler], batch_sizes: Sequence[int], lengths: Sequence[int]):
        if not len(samplers) == len(batch_sizes) == len(lengths) or any(b < 1 for b in batch_sizes):
            raise ValueError("one batch size >= 1 and one length per sampler")
        self.samplers, self.batch_sizes = list(samplers), [int(b) for b in batch_sizes]
        self.offsets = [sum(lengths[:k]) for k in range(len(lengths))]

    @property
    def sampler(self):  # where Lightning looks for ``set_epoch`` beside a batch sampler
        return self

    def set_epoch(self, epoch: int) -> None:
        for s in self.samplers:
            if hasattr(s, "set_epoch"):
                s.set_epoch(epoch)

    def __len__(self) -> int:
        return min(len(s) // b for s, b in zip(self.samplers, self.batch_sizes))

    def __iter__(self) -> Iterator[list[int]]:
        iterators = [iter(s) for s in self.samplers]
        for _ in range(len(self)):
            batch: list[int] = []
            for it, size, offset in zip(iterators, self.batch_sizes, self.offsets):
                batch += [offset + int(next(it)) for _ in range(size)]
            yield batch
