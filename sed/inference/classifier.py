"""Batched clip and sliding-window inference (what ``sedkit classify`` and ``embed`` run).

Audio of every file is resampled and down-mixed to what the checkpoint says, cut into
segments (the whole clip, or windows of ``window`` seconds every ``hop`` seconds read
block-wise so memory does not grow with file length), and segments of different files are
batched together through the model under ``torch.inference_mode``.

Crop policy (clip mode): an input longer than the model scores in one piece (``max_samples``: a
fixed-length family's clip, BEATs' 30 s, an exported graph's bound) is scored on its **centre**,
cut by :func:`sed.data.clips.crop_span` -- the one function the evaluation loaders of ``sedkit
test``/``predict`` (and shards) cut with, so a file scores the same through every verb. Its result
says so (``cropped``: the seconds scored) and :func:`crop_notes` sums that up in one line per job.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from sed.audio.io import iter_blocks, load_audio
from sed.checkpoint import describe
from sed.data.clips import crop_span
from sed.errors import AudioError, CheckpointError, SedError
from sed.export.quantize import quantize_torch
from sed.inference.device import autocast, check_precision
from sed.inference.runtime import OnnxModel, is_onnx
from sed.models.loading import load_model
from sed.models.zeroshot import DEFAULT_TEMPLATE, zero_shot_classifier

#: a file, a waveform, or a named waveform (name, waveform) such as a shard sample
Source = str | os.PathLike | torch.Tensor | tuple[str, torch.Tensor]


@dataclass
class Segment:
    item: int  # index of the input
    start: float  # seconds
    end: float
    wave: torch.Tensor  # [T] mono at the model's rate
    length: int  # valid samples (the rest is zero padding)


@dataclass
class FileResult:
    name: str
    scores: np.ndarray | None = None  # [C] clip scores (window mode: the aggregate)
    windows: list[tuple[float, float, np.ndarray]] = field(default_factory=list)
    error: str | None = None
    cropped: float | None = (
        None  # clip mode, an input longer than the model takes: the seconds of its centre scored
    )


class Predictor:
    """What every classifier (one model, :class:`~sed.inference.ensemble.EnsembleClassifier`) shares on top of
    its ``score()``, ``labels`` and ``multi_label``: labels of score rows and :meth:`predict`'s rows."""

    labels: list[str]
    multi_label: bool
    sample_rate: int

    def score(self, sources: Sequence[Source], **kwargs) -> list[FileResult]:
        raise NotImplementedError

    def _label(self, i: int) -> str:
        return self.labels[i] if i < len(self.labels) else str(i)

    def top_k(self, scores: np.ndarray, k: int) -> list[dict[str, Any]]:
        order = np.argsort(-scores, kind="stable")[: max(1, k)]
        return [{"label": self._label(int(i)), "score": float(scores[i])} for i in order]

    def predict(self, sources: Sequence[Source], top_k: int = 5, **kwargs) -> list[dict[str, Any]]:
        """``[{"file", "top_k": [{"label", "score"}...], ("windows": [...])}]``; failed inputs carry
        ``error``, inputs scored on their centre ``cropped`` (seconds). ``kwargs`` are :meth:`score`'s."""
        out = []
        for r in self.score(sources, **kwargs):
            row: dict[str, Any] = {"file": r.name}
            if r.cropped:
                row["cropped"] = r.cropped
            if r.error:
                row["error"] = r.error
            else:
                row["top_k"] = self.top_k(r.scores, top_k)
                if r.windows:
                    row["windows"] = [
                        {"start": s, "end": e, "top_k": self.top_k(sc, top_k)} for s, e, sc in r.windows
                    ]
            out.append(row)
        return out


class Classifier(Predictor):
    """A loaded model plus everything needed to score audio files or waveforms.

    >>> clf = Classifier.from_pretrained("run/checkpoints/best.ckpt")   # doctest: +SKIP
    >>> clf.predict(["a.wav", "b.wav"], top_k=3)                         # doctest: +SKIP
    """

    def __init__(
        self, model: torch.nn.Module, meta: dict[str, Any], device: str = "auto", precision: str = "fp32"
    ):
        onnx = isinstance(model, OnnxModel)
        if onnx and precision != "fp32":
            raise ValueError(
                f"{model.path} is an ONNX file: its precision is fixed at export "
                "(sedkit export --precision int8 writes an int8 file)"
            )
        self.device = check_precision("cpu" if onnx else device, precision)
        self.precision = precision
        self.model = (quantize_torch(model) if precision == "int8" else model).to(self.device).eval()
        self.meta = meta
        self.sample_rate = int(meta.get("sample_rate") or getattr(model, "sample_rate", 16000))
        self.clip_samples = meta.get("clip_samples") or getattr(model, "clip_samples", None)
        #: the longest input scored in one piece (None: any length): the model's own limit (a fixed-length
        #: family's clip, BEATs' 30 s, an exported graph's bound), else the description's
        self.max_samples = getattr(model, "max_samples", meta.get("max_samples", self.clip_samples))
        self.labels: list[str] = list(meta.get("labels") or getattr(model, "labels", None) or [])
        self.multi_label = bool(meta.get("multi_label", False))
        frontend = getattr(model, "frontend", None)
        #: the shortest input that makes one feature frame (25 ms with the Kaldi front end)
        self.min_samples = int(getattr(frontend, "win", None) or round(0.025 * self.sample_rate))

    @classmethod
    def from_pretrained(
        cls,
        source: str | os.PathLike,
        device: str = "auto",
        precision: str = "fp32",
        labels: Sequence[str] | None = None,
        template: str = DEFAULT_TEMPLATE,
        need_classes: bool = True,
        **overrides,
    ):
        """Any checkpoint :func:`~sed.models.loading.load_model` reads, or an exported ``.onnx`` file
        (run by ONNX Runtime). ``labels``: zero-shot classes named by text, of a CLAP checkpoint (each
        prompted with ``template``; :func:`sed.models.zeroshot.zero_shot_classifier`). A model without
        classes (CLAP's audio tower) is a CheckpointError unless ``need_classes=False`` (to embed with)."""
        if labels is not None:
            if is_onnx(source):
                raise CheckpointError(
                    source, "is an exported graph with fixed classes; labels name the classes of a CLAP model"
                )
            model = zero_shot_classifier(source, labels, template, **overrides)
            named = getattr(source, "desc", None) or str(source)  # a source read already: its name
            return cls(model, describe(model, source=named), device=device, precision=precision)
        if is_onnx(source):
            model = OnnxModel(source)
            return cls(model, model.meta, device=device, precision=precision)
        model, meta = load_model(source, kind="clip", **overrides)
        if need_classes and getattr(model, "num_classes", None) == 0:
            raise CheckpointError(
                source, "has no classes: name them by text (labels=[...], sedkit classify --labels ...)"
            )
        return cls(model, meta, device=device, precision=precision)

    # ------------------------------------------------------------------ segments
    def _clip_segment(self, idx: int, src: Source, cropped: dict[int, float]) -> Iterator[Segment]:
        wave, name = self._load(src)
        n = wave.shape[-1]
        if n < self.min_samples:
            raise AudioError(
                name,
                f"{n} samples at {self.sample_rate} Hz: shorter than one feature frame "
                f"({self.min_samples} samples)",
            )
        start, stop = crop_span(n, self.max_samples, train=False)  # the crop policy (module docstring)
        if stop - start < n:
            cropped[idx] = (stop - start) / self.sample_rate
        yield Segment(idx, start / self.sample_rate, stop / self.sample_rate, wave[start:stop], stop - start)

    def _window_segments(self, idx: int, src: Source, window: float, hop: float) -> Iterator[Segment]:
        win, step = int(round(window * self.sample_rate)), int(round(hop * self.sample_rate))
        if win <= 0 or step <= 0:
            raise ValueError("--window and --hop must be positive")
        blocks = (
            iter([self._load(src)[0][None]])
            if isinstance(src, tuple | torch.Tensor)
            else (
                b.mean(0, keepdim=True)
                for b in iter_blocks(src, max(step, 4096), sample_rate=self.sample_rate)
            )
        )
        buf, buf_start, start, total = torch.zeros(1, 0), 0, 0, 0
        for block in blocks:
            buf = torch.cat([buf, block], dim=1)
            total += block.shape[1]
            while start + win <= total:
                seg = buf[0, start - buf_start : start - buf_start + win]
                yield Segment(
                    idx, start / self.sample_rate, (start + win) / self.sample_rate, seg.clone(), win
                )
                start += step
                buf, buf_start = buf[:, start - buf_start :], start
        if total == 0:
            return
        if start == 0 or start + win - step < total:  # the tail (or a file shorter than one window)
            seg = buf[0, start - buf_start : total - buf_start]
            if start == 0 and seg.numel() < self.min_samples:
                raise AudioError(
                    _name(src),
                    f"{seg.numel()} samples at {self.sample_rate} Hz: shorter than one "
                    f"feature frame ({self.min_samples} samples)",
                )
            if seg.numel() >= self.min_samples:  # a tail too short for one frame holds nothing to score
                yield Segment(
                    idx, start / self.sample_rate, total / self.sample_rate, seg.clone(), seg.numel()
                )

    def _load(self, src: Source) -> tuple[torch.Tensor, str]:
        if isinstance(src, tuple | torch.Tensor):
            w = (src[1] if isinstance(src, tuple) else src).float()
            return (w.mean(0) if w.dim() == 2 else w), _name(src)
        wave, _ = load_audio(src, sample_rate=self.sample_rate, channels="mono")
        return wave[0], str(src)

    # ------------------------------------------------------------------ batching
    def _infer(self, fn: Callable, wave: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        """``fn(wave, lengths)`` on the device under inference mode and the precision's autocast, as float32
        on the CPU."""
        if lengths is None:
            lengths = torch.full((wave.shape[0],), wave.shape[-1])
        with torch.inference_mode(), autocast(self.device, self.precision):
            out = fn(wave.to(self.device), lengths.to(self.device))
        return out.float().cpu()

    def classify_batch(
        self, wave: torch.Tensor, lengths: torch.Tensor | None = None, multi_label: bool | None = None
    ) -> torch.Tensor:
        """Scores ``[B, C]`` (float32, CPU) of a batch of mono waveforms ``[B, T]`` at :attr:`sample_rate`, of
        which ``lengths[b]`` samples are valid (default: all): softmax, or sigmoid when multi-label."""
        return self._infer(lambda w, n: self._scores(self.model(w, lengths=n), multi_label), wave, lengths)

    def _run(
        self, segments: Iterable[Segment], batch_size: int, fn: Callable
    ) -> Iterator[tuple[Segment, np.ndarray]]:
        pending: list[Segment] = []

        def flush():
            longest = max(s.wave.shape[-1] for s in pending)
            batch = torch.zeros(len(pending), longest)
            for i, s in enumerate(pending):
                batch[i, : s.wave.shape[-1]] = s.wave
            out = fn(batch, torch.tensor([s.length for s in pending])).numpy()
            done = list(zip(pending, out))
            pending.clear()
            return done

        for seg in segments:
            pending.append(seg)
            if len(pending) >= batch_size:
                yield from flush()
        if pending:
            yield from flush()

    def _segments(
        self, sources: Sequence[Source], window, hop, results: list[FileResult], cropped
    ) -> Iterator[Segment]:
        for idx, src in enumerate(sources):
            try:
                if window:
                    yield from self._window_segments(idx, src, window, hop or window)
                else:
                    yield from self._clip_segment(idx, src, cropped)
            except SedError as e:
                results[idx].error = str(e)

    def _scores(self, logits: torch.Tensor, multi_label: bool | None) -> torch.Tensor:
        ml = self.multi_label if multi_label is None else multi_label
        logits = logits.float()  # bf16/fp16 logits: scores in float32, not rounded to 8 bits
        return torch.sigmoid(logits) if ml else torch.softmax(logits, dim=-1)

    def score(
        self,
        sources: Sequence[Source],
        window: float | None = None,
        hop: float | None = None,
        aggregate: str = "mean",
        batch_size: int = 8,
        multi_label: bool | None = None,
        progress: Callable[[Iterable], Iterable] | None = None,
    ) -> list[FileResult]:
        """Scores per input (and per window in window mode). Failed inputs carry ``error``."""
        if aggregate not in ("mean", "max"):
            raise ValueError("aggregate must be 'mean' or 'max'")
        results = [FileResult(_name(s)) for s in sources]
        cropped: dict[int, float] = {}
        segs = self._segments(sources, window, hop, results, cropped)

        stream = self._run(
            segs, batch_size, lambda batch, lengths: self.classify_batch(batch, lengths, multi_label)
        )
        if progress is not None:
            stream = progress(stream)
        for seg, sc in stream:
            res = results[seg.item]
            if window:
                res.windows.append((seg.start, seg.end, sc))
            else:
                res.scores = sc
        for i, r in enumerate(results):
            r.cropped = cropped.get(i)
            if r.error:
                r.windows, r.scores = [], None
            elif window and r.windows:
                stack = np.stack([w[2] for w in r.windows])
                r.scores = stack.mean(0) if aggregate == "mean" else stack.max(0)
        return results

    def embed_segments(
        self,
        sources: Sequence[Source],
        results: list[FileResult],
        batch_size: int = 8,
        window: float | None = None,
        hop: float | None = None,
        cropped: dict[int, float] | None = None,
    ) -> Iterator[tuple[Segment, np.ndarray]]:
        """``(segment, embedding [D])`` of every segment of the inputs as it is computed, in input order: each
        input's clip (its centre when longer than the model takes: ``cropped[i]`` gets the seconds), or with
        ``window`` (seconds; ``hop`` defaults to it) each of its windows, read block-wise. An input that fails
        gets its error in ``results[i].error`` (``results``: one :class:`FileResult` per input) before any
        segment of a later input comes."""

        def fn(batch, lengths):
            return self._infer(lambda w, n: self.model.embed(w, lengths=n), batch, lengths)

        segments = self._segments(sources, window, hop, results, {} if cropped is None else cropped)
        return self._run(segments, batch_size, fn)

    def embed(
        self,
        sources: Sequence[Source],
        batch_size: int = 8,
        window: float | None = None,
        hop: float | None = None,
        progress: Callable[[Iterable], Iterable] | None = None,
    ) -> tuple[np.ndarray, list[FileResult]]:
        """Pooled embeddings ``[N_ok, D]`` of the inputs that loaded, and a result per input.

        With ``window`` (seconds; ``hop`` defaults to it) an input's embedding is the mean of the
        embeddings of its windows (read block-wise, as in window mode), each weighted by its valid
        samples, so a short tail counts for what it holds; an input no longer than one window gives
        exactly its clip-mode embedding."""
        results = [FileResult(_name(s)) for s in sources]
        cropped: dict[int, float] = {}
        sums: dict[int, np.ndarray] = {}
        weights: dict[int, float] = {}
        stream = self.embed_segments(sources, results, batch_size, window, hop, cropped)
        if progress is not None:
            stream = progress(stream)
        for seg, e in stream:
            w = float(seg.length) if window else 1.0
            sums[seg.item] = sums.get(seg.item, 0.0) + w * e.astype(np.float64)
            weights[seg.item] = weights.get(seg.item, 0.0) + w
        ok = [i for i in range(len(sources)) if i in sums and not results[i].error]
        for i, r in enumerate(results):
            r.cropped = cropped.get(i)
        width = next(iter(sums.values())).shape[-1] if sums else 0
        rows = [(sums[i] / weights[i]).astype(np.float32) for i in ok]
        return (np.stack(rows) if rows else np.zeros((0, width), np.float32)), results


def crop_notes(cropped: Iterable[float | None], hint: str = "") -> list[str]:
    """The summary of a job's crops (``FileResult.cropped`` or a row's ``cropped`` per input): one line per
    crop length, "N files longer than the model's clip were scored on their centre S s" (+ `` (hint)``)."""
    counts = Counter(c for c in cropped if c)
    tail = f" ({hint})" if hint else ""
    return [
        f"{n} file{'s' if n > 1 else ''} longer than the model's clip {'were' if n > 1 else 'was'} scored on "
        f"{'their' if n > 1 else 'its'} centre {seconds:.2f} s{tail}"
        for seconds, n in sorted(counts.items())
    ]


def _name(src: Source) -> str:
    if isinstance(src, tuple):
        return str(src[0])
    return "<waveform>" if isinstance(src, torch.Tensor) else str(src)
