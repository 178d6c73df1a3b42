"""Sound event detection of files of any length: frame probabilities block-wise, then events.

:class:`Detector` holds a frame model (:func:`sed.models.frames.is_frame_model`). A file is read in blocks
(:func:`sed.audio.io.iter_blocks`: resampled to the model's rate and mixed to mono as ``classify`` does),
cut into blocks of ``block`` seconds (default: the model's clip, else 10 s) that start every
``block - overlap`` seconds (starts on the model's frame grid, so block frames land on file frames),
and each block's frame probabilities are stitched into those of the file:

- ``stitch="mean"`` (default, the DCASE baseline's overlap-add for MAESTRO's long files): where blocks
  overlap, a frame is the average of the blocks that cover it;
- ``stitch="centre"``: each frame comes from the one block in which it lies farthest from a cut (a
  block's first ``overlap / 2`` frames are left to the block before it).

Only the block being read and the file's frame probabilities ``[F, C]`` are held, so memory does not grow
with the file's length beyond ``F * C`` numbers (1 h at 20 ms frames and 10 classes: 7 MB).

When block-wise equals the whole file at once: a frame whose receptive field ends before a cut (its
input lies ``r`` frames either side of it and within the block) gets the same value from the block as from
the whole file. With ``stitch="centre"`` every frame does when ``r <= overlap / 2`` (so the events are
equal, up to float round-off at a threshold); with ``stitch="mean"`` a frame within ``r`` of a cut is
averaged with a value its block saw cut off, so the two agree only for models whose frames see nothing
outside themselves (``r = 0``), and differ otherwise by that edge effect (the baseline accepts it).

Post-processing (median filters, thresholds, events) is :mod:`sed.metrics.postprocess`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from sed.audio.io import iter_blocks
from sed.errors import AudioError, CheckpointError, SedError
from sed.inference.device import resolve_device
from sed.metrics.postprocess import filter_frames, frames_to_events, median_filter
from sed.models.frames import is_frame_model
from sed.models.loading import load_model

__all__ = ["Detection", "Detector", "STITCHES", "Timeline"]

STITCHES = ("mean", "centre")
_DEFAULT_BLOCK = 10.0  # seconds, for a model of any length
_READ = 1 << 16  # samples read at a time when the block is longer


@dataclass
class Detection:
    """One input's result: its frame probabilities ``[F, C]`` (median-filtered when a filter was asked
    for: what the events come from), its events ``(onset, offset, label)`` and duration (s), or
    ``error``."""

    name: str
    probs: np.ndarray | None = None
    events: list[tuple[float, float, str]] = field(default_factory=list)
    duration: float = 0.0
    error: str | None = None


class Timeline:
    """What every detector shares: a score timeline of an input (:meth:`frame_probs`: ``[F, C]``, frame ``i``
    spanning ``offset + [i, i + 1) * hop`` seconds) and the one post-processing that turns it into events
    (:meth:`detect`). Subclasses set ``labels``, ``hop``, ``sample_rate`` (and ``offset``) and implement
    :meth:`frame_probs`: :class:`Detector` (a frame model's frames), :class:`~sed.inference.detect_windows.
    WindowDetector` (a clip model's windows)."""

    labels: list[str]
    hop: float
    sample_rate: int
    #: seconds from the start of the input to the start of frame 0
    offset: float = 0.0

    def frame_probs(self, src) -> tuple[np.ndarray, float]:
        """(the timeline ``[F, C]`` of an input, its duration in s)."""
        raise NotImplementedError

    def _events(self, probs: np.ndarray, duration: float, thresholds, min_duration, merge_gap) -> list:
        """Events of a (filtered) timeline: :func:`sed.metrics.postprocess.frames_to_events`."""
        return frames_to_events(
            probs, self.hop, self.labels, thresholds, min_duration, merge_gap, self.offset
        )

    def detect(
        self,
        sources: Sequence,
        thresholds: float | Mapping[str, float] = 0.5,
        median: float | Mapping[str, float] = 0.0,
        min_duration: float = 0.0,
        merge_gap: float = 0.0,
        progress: Callable[[Iterable], Iterable] | None = None,
    ) -> Iterator[Detection]:
        """A :class:`Detection` per input, in order; an input that fails carries ``error`` and the rest go
        on. ``median``: median filter length in seconds (one, or ``{label: seconds}``; 0: none)."""
        lengths = filter_frames(median, self.hop, self.labels)
        items = progress(sources) if progress is not None else sources
        for src in items:
            try:
                probs, duration = self.frame_probs(src)
            except SedError as e:
                yield Detection(_name(src), error=str(e))
                continue
            probs = median_filter(probs, lengths)
            events = self._events(probs, duration, thresholds, min_duration, merge_gap)
            yield Detection(_name(src), probs, events, duration)


class Detector(Timeline):
    """A frame model and everything that turns audio into timestamped events.

    >>> det = Detector.from_pretrained("crnn.safetensors")                 # doctest: +SKIP
    >>> [d.events for d in det.detect(["kitchen.wav"], thresholds=0.5, median=0.45)]  # doctest: +SKIP
    """

    def __init__(
        self,
        model: torch.nn.Module,
        meta: Mapping[str, Any] | None = None,
        device: str = "auto",
        block: float | None = None,
        overlap: float | None = None,
        stitch: str = "mean",
        batch_size: int = 4,
    ):
        if not is_frame_model(model):
            raise ValueError(f"{type(model).__name__} gives no frame outputs (it is not a frame model)")
        if stitch not in STITCHES:
            raise ValueError(f"stitch must be one of {', '.join(STITCHES)}, got {stitch!r}")
        meta = dict(meta or {})
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.sample_rate = int(model.sample_rate)
        self.hop = float(model.frame_hop)
        self.labels: list[str] = list(meta.get("labels") or getattr(model, "labels", None) or [])
        self.labels += [str(i) for i in range(len(self.labels), int(model.num_classes))]
        self.hop_samples = round(self.hop * self.sample_rate)
        if self.hop_samples <= 0 or abs(self.hop_samples - self.hop * self.sample_rate) > 1e-6:
            raise ValueError(
                f"frame hop {self.hop} s is not a whole number of samples at {self.sample_rate} Hz"
            )
        longest = getattr(model, "max_samples", meta.get("max_samples"))
        clip = getattr(model, "clip_samples", None) or meta.get("clip_samples") or longest
        want = round(block * self.sample_rate) if block else clip or round(_DEFAULT_BLOCK * self.sample_rate)
        if longest and want > longest:
            raise ValueError(f"block {want / self.sample_rate:g} s is longer than the model takes")
        self.block = max(1, want // self.hop_samples) * self.hop_samples
        ov = self.block / 2 if overlap is None else round(overlap * self.sample_rate)
        self.overlap = int(ov // self.hop_samples) * self.hop_samples
        if not 0 <= self.overlap < self.block:
            raise ValueError("the overlap must be shorter than the block")
        self.stitch, self.batch_size = stitch, max(1, int(batch_size))
        frontend = getattr(model, "frontend", None)
        self.min_samples = int(getattr(frontend, "win", None) or self.hop_samples)

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike, **kwargs) -> Detector:
        """The detector of a checkpoint :func:`~sed.models.loading.load_model` reads; a model without frame
        outputs is one :class:`CheckpointError`. ``kwargs``: :class:`Detector`'s."""
        model, meta = load_model(source)
        if not is_frame_model(model):
            name = meta.get("model_name") or type(model).__name__
            raise CheckpointError(
                source,
                f"{name} gives clip scores only, not frame scores: give a window (sedkit detect --window "
                "SECONDS: a timeline of its window scores) or a frame model (a family built with "
                "frame_pooling, as a detection config does)",
            )
        return cls(model, meta, **kwargs)

    # ------------------------------------------------------------------ frames
    def _pieces(self, src) -> Iterator[torch.Tensor]:
        """Mono pieces ``[n]`` of an input at the model's rate, in order."""
        if isinstance(src, tuple | torch.Tensor):
            w = (src[1] if isinstance(src, tuple) else src).float()
            w = w.mean(0) if w.dim() == 2 else w
            yield from w.split(_READ)
            return
        read = max(_READ, self.block - self.overlap)
        for b in iter_blocks(src, read, sample_rate=self.sample_rate, channels="mono"):
            yield b[0]

    def _blocks(self, src) -> Iterator[tuple[int, torch.Tensor]]:
        """``(start sample, block [n])``: every block of an input (module docstring)."""
        step = self.block - self.overlap
        buf, buf_start, start, total = torch.zeros(0), 0, 0, 0
        for piece in self._pieces(src):
            buf = torch.cat([buf, piece])
            total += piece.numel()
            while start + self.block <= total:
                yield start, buf[start - buf_start : start - buf_start + self.block].clone()
                start += step
                buf, buf_start = buf[start - buf_start :], start
        if start == 0 and total < self.min_samples:
            raise AudioError(
                _name(src), f"{total} samples at {self.sample_rate} Hz: shorter than one output frame"
            )
        # the tail: samples no block has covered yet (with no overlap, a tail too short for one frame of the
        # front end is not scored: its frames stay 0)
        if start == 0 or start + self.overlap < total and total - start >= self.min_samples:
            yield start, buf[start - buf_start : total - buf_start].clone()

    def _forward(self, blocks: list[tuple[int, torch.Tensor]]) -> list[np.ndarray]:
        longest = max(b.numel() for _, b in blocks)
        wave = torch.zeros(len(blocks), longest)
        for i, (_, b) in enumerate(blocks):
            wave[i, : b.numel()] = b
        lengths = torch.tensor([b.numel() for _, b in blocks])
        with torch.inference_mode():
            frames, _ = self.model.forward_frames(wave.to(self.device), lengths.to(self.device))
        frames = frames.float().cpu().numpy()
        return [frames[i, : self._frames_of(b.numel())] for i, (_, b) in enumerate(blocks)]

    def _frames_of(self, samples: int) -> int:
        """Output frames that hold ``samples`` samples of audio: the model's count, or for a fixed-length
        family (``fixed_frames``: its input is padded to the clip, its count does not depend on the input)
        the frames that reach into the audio, ``ceil(samples / hop)``."""
        if getattr(self.model, "fixed_frames", False):
            return -(-samples // self.hop_samples)
        return self.model.num_frames(samples)

    def frame_probs(self, src, whole: bool = False) -> tuple[np.ndarray, float]:
        """(frame probabilities ``[F, C]`` of an input, its duration in s), block-wise (``whole``: the
        whole input in one forward pass, whatever its length: the reference block-wise scoring is
        checked against)."""
        if whole:
            wave = torch.cat(list(self._pieces(src)))
            probs = self._forward([(0, wave)])[0]
            return probs.astype(np.float32), wave.numel() / self.sample_rate
        acc = _Frames(self.model.num_classes)
        keep = self.overlap // 2 // self.hop_samples  # frames of a block's head left to the block before
        pending: list[tuple[int, torch.Tensor]] = []
        total = 0

        def flush():
            for (start, _), probs in zip(pending, self._forward(pending)):
                f0 = start // self.hop_samples
                if self.stitch == "mean":
                    acc.add(f0, probs)
                else:
                    skip = keep if start else 0
                    acc.put(f0 + skip, probs[skip:])
            pending.clear()

        for start, block in self._blocks(src):
            total = start + block.numel()
            if block.numel() < self.block and pending:  # a short tail runs alone, unpadded: as in the whole
                flush()
            pending.append((start, block))
            if len(pending) >= self.batch_size or block.numel() < self.block:
                flush()
        if pending:
            flush()
        return acc.result(self._frames_of(total)), total / self.sample_rate


class _Frames:
    """Frame probabilities stitched from blocks, in arrays that grow (amortised) as blocks come."""

    def __init__(self, num_classes: int):
        self.sum = np.zeros((0, num_classes))
        self.count = np.zeros(0)

    def _fit(self, end: int) -> None:
        if end > len(self.count):
            size = max(end, 2 * len(self.count))
            self.sum = np.concatenate([self.sum, np.zeros((size - len(self.count), self.sum.shape[1]))])
            self.count = np.concatenate([self.count, np.zeros(size - len(self.count))])

    def add(self, f0: int, probs: np.ndarray) -> None:
        self._fit(f0 + len(probs))
        self.sum[f0 : f0 + len(probs)] += probs
        self.count[f0 : f0 + len(probs)] += 1

    def put(self, f0: int, probs: np.ndarray) -> None:
        self._fit(f0 + len(probs))
        self.sum[f0 : f0 + len(probs)] = probs
        self.count[f0 : f0 + len(probs)] = 1

    def result(self, frames: int) -> np.ndarray:
        self._fit(frames)
        n = self.count[:frames]
        return (self.sum[:frames] / np.maximum(n, 1)[:, None]).astype(np.float32)


def _name(src) -> str:
    if isinstance(src, tuple):
        return str(src[0])
    return "<waveform>" if isinstance(src, torch.Tensor) else str(src)
