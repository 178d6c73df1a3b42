"""Labelled audio clips as a torch Dataset: the shared core of the clip-classification corpora.

A corpus reader (folder, manifest, ESC-50, ...) turns its metadata into :class:`ClipItem` s;
:class:`ClipDataset` turns those into mono waveforms of a fixed length:

- ``clip_seconds=None`` serves each clip (file or ``start``-``end`` segment) whole;
- otherwise ``train=True`` takes a random crop of ``clip_seconds`` from a longer clip and
  ``train=False`` the centre crop; a shorter clip is zero-padded at the end. ``"length"``
  counts the valid samples before padding.

Items are ``{"wave": float32 [T], "length": int, "label": int | float multi-hot [C], "path": str}``;
:func:`collate_clips` pads a batch to its longest wave. Without ``cache_audio`` only the
samples needed are read (a seek-and-read of the crop, resampled with enough context that it
equals the same slice of the whole resampled file); with it each file is decoded and resampled
once and kept in memory (for small corpora).
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from sed.audio.io import AudioInfo, info, load_audio, resample
from sed.errors import AudioError, DatasetError, printable

__all__ = [
    "ClipDataset",
    "ClipItem",
    "collate_clips",
    "crop_span",
    "fit_clip",
    "item_labels",
    "pad_clip",
    "split_items",
    "validate_files",
]


@dataclass(frozen=True)
class ClipItem:
    """One labelled clip: a whole file, or the segment ``[start, end)`` seconds of it.

    ``label`` is a class index, a list of indices (multi-label; may be empty) or None (unlabelled,
    for prediction); ``fold`` is the corpus's official fold, if it has folds; ``events`` the clip's
    strong labels ``(onset, offset, class index)``, seconds from the clip's start (None: not known)."""

    path: str
    label: int | list[int] | None
    start: float | None = None
    end: float | None = None
    fold: int | None = None
    events: tuple[tuple[float, float, int], ...] | None = None


def item_labels(item: ClipItem) -> list[int]:
    """The class indices of an item as a list (empty when unlabelled)."""
    if item.label is None:
        return []
    return [item.label] if isinstance(item.label, int) else list(item.label)


class ClipDataset(Dataset):
    """Mono waveform items over ``items`` (see the module docstring).

    ``multi_label=None`` is inferred: True when any item carries a list of labels."""

    def __init__(
        self,
        items: Sequence[ClipItem],
        label_names: Sequence[str],
        *,
        multi_label: bool | None = None,
        sample_rate: int = 16000,
        clip_seconds: float | None = None,
        train: bool = False,
        cache_audio: bool = False,
    ):
        if clip_seconds is not None and clip_seconds <= 0:
            raise ValueError(f"clip_seconds must be positive or None, got {clip_seconds}")
        self.label_names = list(label_names)
        if multi_label is None:
            multi_label = any(isinstance(it.label, (list, tuple)) for it in items)
        self.multi_label, self.sample_rate = bool(multi_label), int(sample_rate)
        self.clip_seconds, self.train, self.cache_audio = clip_seconds, bool(train), bool(cache_audio)
        self.clip_samples = None if clip_seconds is None else round(clip_seconds * self.sample_rate)
        self.items = [self._check_label(it) for it in items]
        self._audio: dict[str, torch.Tensor] = {}
        self._info: dict[str, AudioInfo] = {}

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def _check_label(self, it: ClipItem) -> ClipItem:
        labels = item_labels(it)
        bad = [k for k in labels if not isinstance(k, (int, np.integer)) or not 0 <= k < self.num_classes]
        if bad:
            raise DatasetError(it.path, f"label {bad[0]!r} is not a class index in 0..{self.num_classes - 1}")
        if it.label is None:
            return it
        if self.multi_label:
            return replace(it, label=[int(k) for k in labels])
        if len(labels) != 1:
            raise DatasetError(it.path, f"has {len(labels)} labels in a single-label dataset")
        return replace(it, label=int(labels[0]))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        it = self.items[i]
        a, b = self._span(it)
        start, stop = crop_span(b - a, self.clip_samples, self.train)
        wave, length = pad_clip(self._read(it.path, a + start, a + stop), self.clip_samples)
        return {"wave": wave, "length": length, "label": self._target(it.label), "path": it.path}

    def _target(self, label):
        if not self.multi_label:
            return -1 if label is None else label
        if label is None:
            return torch.full((self.num_classes,), -1.0)
        target = torch.zeros(self.num_classes)
        target[label] = 1.0
        return target

    # ------------------------------------------------------------------ reading

    def _meta(self, path: str) -> AudioInfo:
        if path not in self._info:
            self._info[path] = info(path)
        return self._info[path]

    def _span(self, it: ClipItem) -> tuple[int, int]:
        """The clip as samples ``[a, b)`` of the file at the dataset's sample rate."""
        if self.cache_audio:
            total = self._load(it.path).shape[0]
        else:
            m = self._meta(it.path)
            total = math.ceil(m.frames * self.sample_rate / m.sample_rate)
        a = 0 if it.start is None else min(round(it.start * self.sample_rate), total)
        b = total if it.end is None else min(round(it.end * self.sample_rate), total)
        if b <= a:
            raise DatasetError(
                it.path,
                f"segment {it.start}-{it.end} s holds no audio (the file lasts "
                f"{total / self.sample_rate:.3f} s)",
            )
        return a, b

    def _load(self, path: str) -> torch.Tensor:
        if path not in self._audio:
            self._audio[path] = load_audio(path, self.sample_rate, channels="mono")[0][0]
        return self._audio[path]

    def preload(self) -> None:
        """Fill the in-memory cache now (before DataLoader workers start, so that they share it)."""
        if self.cache_audio:
            for path in dict.fromkeys(it.path for it in self.items):
                self._load(path)

    def _read(self, path: str, a: int, b: int) -> torch.Tensor:
        if self.cache_audio:
            return self._load(path)[a:b]
        m = self._meta(path)
        if a == 0 and b >= math.ceil(m.frames * self.sample_rate / m.sample_rate):
            return load_audio(path, self.sample_rate, channels="mono")[0][0]
        return _read_span(path, m, a, b, self.sample_rate)


def _read_span(path: str, m: AudioInfo, a: int, b: int, sr: int) -> torch.Tensor:
    """Samples ``[a, b)`` at ``sr`` of the mono down-mix, reading only what the resampler needs."""
    g = math.gcd(m.sample_rate, sr)
    o, n = m.sample_rate // g, sr // g  # o input samples give n output samples
    ctx = 0
    if o != n:  # torchaudio's kernel half-width (lowpass_filter_width=6, rolloff=0.99), whole periods
        ctx = o * math.ceil((math.ceil(6 * o / (min(o, n) * 0.99)) + o) / o)
    first = max(0, (a // n) * o - ctx)  # a multiple of o: output sample first / o * n is exact
    stop = min(m.frames, math.ceil(b / n) * o + ctx)
    try:
        with sf.SoundFile(path) as f:
            f.seek(first)
            data = f.read(stop - first, dtype="float32", always_2d=True)
    except Exception as e:  # libsndfile: corrupt or truncated
        raise AudioError(path, f"corrupt or truncated audio ({str(e).strip() or type(e).__name__})") from None
    if data.shape[0] < stop - first:
        raise AudioError(path, f"truncated: read {data.shape[0]} of {stop - first} frames at frame {first}")
    if not np.isfinite(data).all():
        raise AudioError(path, f"contains NaN or Inf samples between frame {first} and {stop}")
    wave = resample(torch.from_numpy(np.ascontiguousarray(data.T)).mean(dim=0), m.sample_rate, sr)
    skip = a - first // o * n
    return wave[skip : skip + b - a]


def crop_span(total: int, n: int | None, train: bool) -> tuple[int, int]:
    """``[start, stop)`` of a clip of ``total`` samples: all of it, or ``n`` of them when it is longer
    (a random start for training, the centre for evaluation).

    The centre is sed's one crop policy for a clip longer than the model's: the val/test/predict
    loaders here, the shards' (:mod:`sed.data.shards.reader`) and ``sedkit classify``/``embed``
    (:mod:`sed.inference.classifier`) all cut with this function, so a file gets one score whatever
    the verb, the score its checkpoint was selected and reported on. Why the centre: training sees
    random crops from everywhere in a clip, and the centre keeps the part farthest from a recording's
    lead-in and run-out. The reference loaders cut the head (AST ``fbank[:target_length]``,
    EfficientAT ``pad_or_truncate``), but their corpora fit the clip (ESC-50's 5 s in 5.12 s,
    AudioSet's 10 s in 10.24 s), so no published number depends on where a longer clip is cut."""
    if n is None or total <= n:
        return 0, total
    offset = int(torch.randint(0, total - n + 1, ())) if train else (total - n) // 2
    return offset, offset + n


def pad_clip(wave: torch.Tensor, n: int | None) -> tuple[torch.Tensor, int]:
    """(``wave`` zero-padded at the end to ``n`` samples, its valid length)."""
    length = wave.shape[0]
    if n is not None and length < n:
        wave = F.pad(wave, (0, n - length))
    return wave.contiguous(), length


def fit_clip(wave: torch.Tensor, n: int | None, train: bool) -> tuple[torch.Tensor, int]:
    """A decoded clip cropped (:func:`crop_span`) and padded (:func:`pad_clip`) to ``n`` samples."""
    start, stop = crop_span(wave.shape[0], n, train)
    return pad_clip(wave[start:stop], n)


def collate_clips(batch: list[dict]) -> dict:
    """``{"wave": [B, T], "lengths": [B] long, "label": [B] long | [B, C] float, "path": list}``,
    waves zero-padded at the end to the longest; ``"pad"`` ``[B]`` bool when items flag padding."""
    if not batch:
        raise ValueError("collate_clips needs at least one item")
    longest = max(b["wave"].shape[-1] for b in batch)
    wave = torch.stack([F.pad(b["wave"], (0, longest - b["wave"].shape[-1])) for b in batch])
    labels = [b["label"] for b in batch]
    label = (
        torch.stack(labels) if isinstance(labels[0], torch.Tensor) else torch.tensor(labels, dtype=torch.long)
    )
    out = {
        "wave": wave,
        "lengths": torch.tensor([b["length"] for b in batch], dtype=torch.long),
        "label": label,
        "path": [b["path"] for b in batch],
    }
    if any("pad" in b for b in batch):  # evaluation padding of streamed shards (sed.data.shards.reader)
        out["pad"] = torch.tensor([bool(b.get("pad")) for b in batch])
    if any("error" in b for b in batch):  # failures of streamed shards (flagged pad): their shard and reason
        out["shard"] = [b.get("shard") for b in batch]
        out["error"] = [b.get("error") for b in batch]
    return out


def validate_files(items: Sequence[ClipItem], workers: int = 8) -> None:
    """Check every file's header (exists, readable, non-empty) and every segment against the
    file's duration; raise ONE DatasetError listing all problems, ``path: reason`` per line."""
    paths = list(dict.fromkeys(it.path for it in items))

    def check(path: str) -> tuple[str, AudioInfo | str]:
        try:
            return path, info(path)
        except AudioError as e:
            return path, e.reason

    if len(paths) > 64 and workers > 1:  # header reads are I/O bound: threads help on network disks
        with ThreadPoolExecutor(workers) as pool:
            results = dict(pool.map(check, paths))
    else:
        results = dict(map(check, paths))
    problems = [(p, r) for p, r in results.items() if isinstance(r, str)]
    for it in items:
        meta = results[it.path]
        if isinstance(meta, AudioInfo) and it.start is not None and it.start >= meta.duration:
            problems.append(
                (
                    it.path,
                    f"segment starts at {it.start} s, after the end of the file ({meta.duration:.3f} s)",
                )
            )
    if problems:
        bad = len({p for p, _ in problems})
        lines = "\n".join(f"{printable(str(p))}: {r}" for p, r in problems)
        raise DatasetError(None, f"{bad} of {len(paths)} audio file(s) cannot be used:\n{lines}")


def split_items(
    items: Sequence[ClipItem], val_fraction: float, seed: int = 0
) -> tuple[list[ClipItem], list[ClipItem]]:
    """Deterministic stratified (train, val) split, both in the input order.

    Segments of one file stay on one side. Files are stratified by their rarest label
    (single-label: their label); in each stratum of >= 2 files, ``round(n * val_fraction)``
    files (at least 1, at most n - 1) go to val."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    files: dict[str, list[int]] = {}
    for it in items:
        files.setdefault(it.path, []).extend(item_labels(it))
    counts = Counter(k for labels in files.values() for k in set(labels))
    strata: dict[int, list[str]] = defaultdict(list)
    for path, labels in files.items():
        strata[min(set(labels), key=lambda k: (counts[k], k)) if labels else -1].append(path)
    rng = random.Random(seed)
    val: set[str] = set()
    for key in sorted(strata):
        group = sorted(strata[key])
        rng.shuffle(group)
        if len(group) >= 2:
            val.update(group[: min(len(group) - 1, max(1, round(len(group) * val_fraction)))])
    return [it for it in items if it.path not in val], [it for it in items if it.path in val]
