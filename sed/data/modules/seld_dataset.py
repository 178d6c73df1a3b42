"""STARSS22/23 as a torch Dataset of SELD training sequences or whole evaluation files
(../shared/specs/seld.md 2, 3.1, 3.3).

Items are dicts ``{"audio": [4, T]`` (or ``"features": [C, frames, bins]`` read from a
:class:`~sed.data.modules.feature_cache.FeatureCache`), ``"target": [label_frames, 6, 4|5, C]`` (ADPIT),
``"file": str, "start": float seconds}``; "audio"/"target" are what
:class:`sed.augment.acs.ACSExpandedDataset` transforms. Label frames are 100 ms (2400
samples at 24 kHz), i.e. 5 feature frames at hop 480.

- ``mode="train"``: non-overlapping sequences of ``sequence_seconds`` (50 label frames for 5 s)
  from the start of each file; the last partial sequence is dropped (the baseline trims
  every file to a multiple of 50 label frames).
- ``mode="eval"``: one item per file, the whole file trimmed to whole label frames
  (``int(samples / 2400)`` of them, the baseline's count), so features have exactly 5
  frames per label frame. :func:`collate` pads a batch of different lengths.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from sed.audio.io import info, load_audio
from sed.data.corpora import starss
from sed.data.modules.feature_cache import FeatureCache
from sed.errors import AudioError, DatasetError

__all__ = ["StarssDataset", "collate"]

SPLITS = ("dev-train", "dev-test")


def _select(pairs: list[tuple[Path, Path]], split) -> list[tuple[Path, Path]]:
    """``"dev-train"`` / ``"dev-test"``: files in split folders of that prefix (``dev-train-sony``,
    ``dev-train-tau``, ...); an int or a list of ints: files of those folds (from the names)."""
    if isinstance(split, str):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS} or a list of folds, got {split!r}")
        return [p for p in pairs if p[0].parent.name.startswith(split)]
    folds = {split} if isinstance(split, int) else set(split)
    if not folds or not all(isinstance(f, int) for f in folds):
        raise ValueError(f"split must be one of {SPLITS} or a list of fold numbers, got {split!r}")
    return [p for p in pairs if starss.parse_fold_room(p[0])[0] in folds]


class StarssDataset(Dataset):
    """SELD items of a STARSS22/23 development corpus (see the module docstring).

    ``fmt`` is "foa" or "mic"; ``with_distance`` gives 5-entry targets (STARSS23 metadata
    needed); ``cache`` serves features instead of audio (its front end's sample rate must be
    ``sample_rate``). Problems with the corpus raise DatasetError/AudioError naming the file."""

    def __init__(
        self,
        root: str | os.PathLike,
        split: str | int | Sequence[int] = "dev-train",
        fmt: str = "foa",
        sequence_seconds: float = 5.0,
        mode: str = "train",
        with_distance: bool = False,
        num_classes: int = starss.NUM_CLASSES,
        cache: FeatureCache | None = None,
        sample_rate: int = starss.SAMPLE_RATE,
    ):
        if mode not in ("train", "eval"):
            raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
        self.mode, self.fmt, self.with_distance = mode, fmt, bool(with_distance)
        self.num_classes, self.cache, self.sample_rate = int(num_classes), cache, int(sample_rate)
        self.label_hop = round(self.sample_rate * starss.FRAME_SECONDS)
        if cache is not None:
            if cache.sample_rate not in (None, self.sample_rate):
                raise ValueError(
                    f"cache front end runs at {cache.sample_rate} Hz, dataset at {self.sample_rate} Hz"
                )
            hop = getattr(cache.frontend, "hop_length", None) or self.label_hop // 5
            if self.label_hop % hop:
                raise ValueError(f"label hop {self.label_hop} is not a multiple of the feature hop {hop}")
            self.feature_frames_per_label = self.label_hop // hop
        self.sequence_frames = round(sequence_seconds / starss.FRAME_SECONDS)
        if self.sequence_frames < 1 or not math.isclose(
            self.sequence_frames * starss.FRAME_SECONDS, sequence_seconds, abs_tol=1e-6
        ):
            raise ValueError(f"sequence_seconds must be a positive multiple of 0.1 s, got {sequence_seconds}")
        self.files: list[dict] = []
        for wav, csv in _select(starss.list_starss_pairs(root, fmt), split):
            a = info(wav)
            if a.channels != starss.NUM_CHANNELS:
                raise AudioError(wav, f"has {a.channels} channel(s), expected {starss.NUM_CHANNELS}")
            labels = starss.read_starss_metadata(csv)
            if len(labels) and labels.cls.max() >= self.num_classes:
                raise DatasetError(
                    csv, f"class index {int(labels.cls.max())} out of range for {self.num_classes} classes"
                )
            if self.with_distance and not labels.has_distance:
                raise DatasetError(
                    csv, "no distance column (STARSS23 6-column metadata needed for distance targets)"
                )
            samples = math.ceil(a.frames * self.sample_rate / a.sample_rate)  # after resampling
            fold, room, _ = starss.parse_fold_room(wav)
            self.files.append(
                {
                    "audio": wav,
                    "labels": labels,
                    "native_rate": a.sample_rate,
                    "fold": fold,
                    "room": room,
                    "label_frames": samples // self.label_hop,
                }
            )
        if mode == "train":
            self.index = [
                (i, k * self.sequence_frames)
                for i, f in enumerate(self.files)
                for k in range(f["label_frames"] // self.sequence_frames)
            ]
        else:
            self.index = [(i, 0) for i in range(len(self.files))]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        fi, start = self.index[i]
        f = self.files[fi]
        n = self.sequence_frames if self.mode == "train" else f["label_frames"]
        item = {}
        if self.cache is None:
            item["audio"] = self._audio(f, start * self.label_hop, (start + n) * self.label_hop)
        else:
            k = self.feature_frames_per_label
            feats = self.cache.get(f["audio"], start * k, (start + n) * k)
            if feats.shape[1] != n * k:
                raise DatasetError(
                    f["audio"],
                    f"cached features have {feats.shape[1]} frames from frame {start * k}, expected {n * k}",
                )
            item["features"] = feats
        item["target"] = starss.adpit_targets(f["labels"], n, self.num_classes, self.with_distance, start)
        item["file"] = str(f["audio"])
        item["start"] = start * starss.FRAME_SECONDS
        return item

    def _audio(self, f: dict, a: int, b: int) -> torch.Tensor:
        """Samples ``[a, b)`` at the dataset's rate: a seek-and-read when no resampling is needed."""
        path = f["audio"]
        if f["native_rate"] != self.sample_rate or self.mode == "eval":
            wave, _ = load_audio(path, self.sample_rate, num_channels=starss.NUM_CHANNELS)
            return wave[:, a:b].contiguous()
        try:
            with sf.SoundFile(str(path)) as h:
                h.seek(a)
                data = h.read(b - a, dtype="float32", always_2d=True)
        except Exception as e:  # libsndfile: corrupt or truncated
            raise AudioError(path, f"corrupt or truncated audio ({e})") from None
        if data.shape[0] != b - a:
            raise AudioError(path, f"truncated: read {data.shape[0]} of {b - a} frames at sample {a}")
        if not np.isfinite(data).all():
            raise AudioError(path, f"contains NaN or Inf samples between sample {a} and {b}")
        return torch.from_numpy(np.ascontiguousarray(data.T))


def collate(batch: list[dict], pad_value: float = 0.0) -> dict:
    """Stack items, padding "audio" (samples), "features" (frames) and "target" (label frames,
    with zeros) at the end to the longest item. Adds "label_frames" ``[B]``: each item's
    unpadded number of label frames. "file" stays a list, "start" becomes a float64 tensor."""
    if not batch:
        raise ValueError("collate needs at least one item")
    out: dict = {}
    for key in ("audio", "features"):
        if key in batch[0]:
            dim = -1 if key == "audio" else 1
            longest = max(b[key].shape[dim] for b in batch)
            out[key] = torch.stack([_pad(b[key], dim, longest, pad_value) for b in batch])
    longest = max(b["target"].shape[0] for b in batch)
    out["target"] = torch.stack([_pad(b["target"], 0, longest, 0.0) for b in batch])
    out["label_frames"] = torch.tensor([b["target"].shape[0] for b in batch])
    out["file"] = [b["file"] for b in batch]
    out["start"] = torch.tensor([float(b["start"]) for b in batch], dtype=torch.float64)
    for key in batch[0].keys() - out.keys():  # anything else a wrapper added
        vals = [b[key] for b in batch]
        out[key] = torch.stack(vals) if isinstance(vals[0], torch.Tensor) else vals
    return out


def _pad(x: torch.Tensor, dim: int, size: int, value: float) -> torch.Tensor:
    dim = dim % x.dim()
    missing = size - x.shape[dim]
    if missing == 0:
        return x
    pad = [0, 0] * (x.dim() - 1 - dim) + [0, missing]
    return F.pad(x, pad, value=value)
