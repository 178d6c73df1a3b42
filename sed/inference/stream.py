"""Streaming classification (what ``sedkit stream`` runs): one result per hop over audio that arrives
incrementally, with memory and cost per hop that do not grow with the length of the stream.

- Causal models (those with the incremental API ``init_stream`` / ``stream_step``, e.g. the TCN
  family of :mod:`sed.models.causal`) carry their state from hop to hop; the scores at a hop are
  the model's clip output over the last ``input_tdim`` frames (a clip length) completed so far,
  whose embeddings a fixed-size ring buffer holds. Each frame sees its whole causal past (the
  receptive field), not only the window.
- Any other model that a :class:`~sed.inference.classifier.Classifier` runs scores, at every hop,
  the last clip length of audio, kept in a fixed-size ring buffer of samples; before a full clip
  has arrived it scores what is there, exactly as clip mode scores a short file.

Hops end at ``hop, 2 hop, ...`` seconds of input; when the input ends between two, a last result
ends with it. No result comes before the first feature frame (25 ms) is complete.
:func:`offline_scores` computes the same hop-wise scores from a whole waveform in one batched pass.
:func:`open_input` reads a file block-wise, or raw float32 / 16-bit PCM from stdin or a pipe.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from sed.audio.io import iter_blocks
from sed.audio.pcm import iter_pcm
from sed.errors import AudioError
from sed.inference.device import autocast

__all__ = ["Hop", "Streamer", "is_causal", "offline_scores", "open_input", "stream"]


@dataclass
class Hop:
    time: float  # end of the hop, seconds of input
    scores: np.ndarray  # [C]
    cost: float = (
        0.0  # seconds the streamer computed for this hop (since the previous one), not waiting for input
    )


def is_causal(model: Any) -> bool:
    """Whether ``model`` has the incremental API (``init_stream``, ``stream_step``) of a causal model whose
    clip output is ``head`` of the mean frame embedding (a frame model's is not: it streams windowed)."""
    return (
        callable(getattr(model, "init_stream", None))
        and callable(getattr(model, "stream_step", None))
        and getattr(model, "frame_pooling", None) is None
    )


def _samples(clf, seconds: float, what: str) -> int:
    """``seconds`` at the model's rate as a whole number of samples, at least one (ValueError otherwise:
    zero, negative, NaN, or so long that the count is not finite)."""
    n = float(seconds) * clf.sample_rate
    if not np.isfinite(n) or round(n) < 1:
        raise ValueError(
            f"{what} must be at least one sample ({1 / clf.sample_rate:.3g} s) and a finite number "
            f"of samples, got {seconds} s"
        )
    return round(n)


def _hop_samples(clf, hop: float) -> int:
    return _samples(clf, hop, "hop")


def _window_samples(clf, window: float | None) -> int:
    if window is not None:
        return _samples(clf, window, "window")
    if not clf.clip_samples:
        raise ValueError("the model has no clip length; give the window in seconds")
    return int(clf.clip_samples)


class _CausalCore:
    """A causal model's stream state and a ring buffer of its last ``input_tdim`` frame embeddings."""

    def __init__(self, clf, multi_label: bool | None):
        self.clf, self.model, self.multi_label = clf, clf.model, multi_label
        self.state = self.model.init_stream(1, clf.device)
        self.ring = torch.zeros(int(self.model.input_tdim), int(self.model.embed_dim), device=clf.device)
        self.count = 0  # frames written so far

    def push(self, x: torch.Tensor) -> None:
        emb, self.state = self.model.stream_step(self.state, x.to(self.clf.device)[None])
        k, n = emb.shape[1], self.ring.shape[0]
        if k:
            idx = (self.count + torch.arange(max(0, k - n), k, device=self.ring.device)) % n
            self.ring.index_copy_(0, idx, emb[0, max(0, k - n) :].to(self.ring.dtype))
            self.count += k

    def scores(self) -> np.ndarray | None:
        if self.count == 0:
            return None
        valid = min(self.count, self.ring.shape[0])
        pooled = self.ring[:valid].mean(dim=0, keepdim=True)
        return self.clf._scores(self.model.head(pooled), self.multi_label)[0].float().cpu().numpy()

    def sizes(self) -> dict[str, int]:
        return {
            "ring": self.ring.numel(),
            "cache_bytes": sum(c.numel() * c.element_size() for c in self.state.caches),
        }


class _WindowCore:
    """A ring buffer of the last ``window`` samples, scored through the Classifier at each hop."""

    def __init__(self, clf, window: int, multi_label: bool | None):
        self.clf, self.multi_label = clf, multi_label
        self.ring = np.zeros(window, np.float32)
        self.count, self.pos = 0, 0  # samples written so far; where the next one goes

    def push(self, x: torch.Tensor) -> None:
        x, n = x.cpu().numpy(), self.ring.shape[0]
        if x.shape[0] >= n:
            self.ring[:], self.pos = x[-n:], 0
        else:
            first = min(x.shape[0], n - self.pos)
            self.ring[self.pos : self.pos + first] = x[:first]
            self.ring[: x.shape[0] - first] = x[first:]
            self.pos = (self.pos + x.shape[0]) % n
        self.count += x.shape[0]

    def window(self) -> np.ndarray:
        """The last ``window`` samples (fewer before a full window has arrived), oldest first."""
        if self.count < self.ring.shape[0]:
            return self.ring[: self.count].copy()
        return np.concatenate([self.ring[self.pos :], self.ring[: self.pos]])

    def scores(self) -> np.ndarray | None:
        if self.count == 0:
            return None
        r = self.clf.score([torch.from_numpy(self.window())], batch_size=1, multi_label=self.multi_label)[0]
        return None if r.error else r.scores  # an error: less than one feature frame so far

    def sizes(self) -> dict[str, int]:
        return {"ring": int(self.ring.size)}


class Streamer:
    """Feed sample chunks (mono float32 at the model's rate, any sizes); get a :class:`Hop` at every hop.

    >>> s = Streamer(Classifier.from_pretrained("m.pt"), hop=0.5)       # doctest: +SKIP
    >>> for chunk in open_input("-", s.sample_rate): hops = s.feed(chunk)  # doctest: +SKIP
    """

    def __init__(self, clf, hop: float = 0.5, multi_label: bool | None = None, window: float | None = None):
        self.clf, self.sample_rate = clf, int(clf.sample_rate)
        self.hop = _hop_samples(clf, hop)  # in samples
        self.causal = is_causal(clf.model) and window is None
        self.core = (
            _CausalCore(clf, multi_label)
            if self.causal
            else _WindowCore(clf, _window_samples(clf, window), multi_label)
        )
        self.total = 0  # samples fed
        self.since = 0  # samples since the last hop
        self.busy = 0.0  # seconds computed since the last hop

    def _emit(self) -> list[Hop]:
        t = time.perf_counter()
        with torch.inference_mode(), autocast(self.clf.device, self.clf.precision):
            s = self.core.scores()
        cost, self.busy = self.busy + time.perf_counter() - t, 0.0
        return [] if s is None else [Hop(self.total / self.sample_rate, s, cost)]

    def feed(self, samples) -> list[Hop]:
        """The hops that ``samples`` complete (often none or one)."""
        x = (
            torch.as_tensor(
                np.asarray(samples, dtype=np.float32) if not isinstance(samples, torch.Tensor) else samples
            )
            .float()
            .reshape(-1)
        )
        out, i = [], 0
        while i < x.shape[0]:
            take = min(x.shape[0] - i, self.hop - self.since)
            t = time.perf_counter()
            with torch.inference_mode():
                self.core.push(x[i : i + take])
            self.busy += time.perf_counter() - t
            i, self.total, self.since = i + take, self.total + take, self.since + take
            if self.since == self.hop:
                self.since = 0
                out += self._emit()
        return out

    def finish(self) -> list[Hop]:
        """The last, shorter hop when the input ended between two hops."""
        if not self.since:
            return []
        self.since = 0
        return self._emit()

    def run(self, chunks: Iterable) -> Iterator[Hop]:
        for chunk in chunks:
            yield from self.feed(chunk)
        yield from self.finish()

    def sizes(self) -> dict[str, int]:
        """Elements (and bytes of the causal state) held between hops: constant over a stream."""
        return self.core.sizes()


def stream(
    clf,
    chunks: Iterable,
    hop: float = 0.5,
    top_k: int = 5,
    multi_label: bool | None = None,
    window: float | None = None,
) -> Iterator[dict[str, Any]]:
    """``{"time": seconds, "top_k": [{"label", "score"}...]}`` per hop of ``chunks``."""
    for h in Streamer(clf, hop, multi_label, window).run(chunks):
        yield {"time": round(h.time, 6), "top_k": clf.top_k(h.scores, top_k)}


def _hop_ends(total: int, hop: int) -> list[int]:
    ends = list(range(hop, total + 1, hop))
    return ends + [total] if total % hop else ends


def offline_scores(
    clf,
    wave,
    hop: float = 0.5,
    multi_label: bool | None = None,
    window: float | None = None,
    batch_size: int = 16,
) -> list[Hop]:
    """The hop-wise scores of :class:`Streamer` from a whole mono waveform ``[T]`` (model rate), in one
    batched pass: the causal model's frame embeddings of the whole signal, averaged over the window
    ending at each hop; otherwise the window of samples ending at each hop, scored in batches."""
    wave = torch.as_tensor(
        np.asarray(wave, np.float32) if not isinstance(wave, torch.Tensor) else wave
    ).float()
    wave = wave.reshape(-1)
    step, sr = _hop_samples(clf, hop), clf.sample_rate
    ends = _hop_ends(wave.shape[0], step)
    model = clf.model
    if is_causal(model) and window is None:
        fe, n = model.frontend, int(model.input_tdim)
        with torch.inference_mode():
            emb = model.frame_embeddings(wave[None].to(clf.device))[0].double()
            csum = torch.cat([emb.new_zeros(1, emb.shape[1]), emb.cumsum(0)])
            nf = [fe.num_frames(e) for e in ends]
            keep = [i for i, f in enumerate(nf) if f > 0]
            hi = torch.tensor([nf[i] for i in keep], device=emb.device)
            lo = (hi - n).clamp_min(0)
            pooled = ((csum[hi] - csum[lo]) / (hi - lo)[:, None]).float()
            with autocast(clf.device, clf.precision):
                scores = clf._scores(model.head(pooled), multi_label).float().cpu().numpy() if keep else []
        return [Hop(ends[i] / sr, s) for i, s in zip(keep, scores)]
    win = _window_samples(clf, window)
    segs = [wave[max(0, e - win) : e] for e in ends]
    results = clf.score(segs, batch_size=batch_size, multi_label=multi_label)
    return [Hop(e / sr, r.scores) for e, r in zip(ends, results) if not r.error]


def open_input(
    src: str | os.PathLike | BinaryIO,
    sample_rate: int,
    fmt: str | None = None,
    rate: int | None = None,
    channels: int = 1,
    block_frames: int = 8000,
) -> Iterator[np.ndarray]:
    """Mono float32 blocks at ``sample_rate`` from ``src``: ``"-"`` (stdin) or a binary stream as raw
    PCM (``fmt`` ``f32``, the default, or ``s16``; ``rate`` Hz, default ``sample_rate``; ``channels``
    interleaved, averaged); a path is read block-wise by its header (resampled, down-mixed), or as
    raw PCM when ``fmt`` is given (a headerless file or a named pipe)."""
    raw = src == "-" or hasattr(src, "read") or fmt is not None
    if not raw:
        if rate is not None or channels != 1:
            raise ValueError("rate and channels apply to raw PCM input (stdin, or a path with a PCM format)")
        return (
            b[0].numpy() for b in iter_blocks(src, block_frames, sample_rate=sample_rate, channels="mono")
        )
    kwargs = {
        "rate": int(rate or sample_rate),
        "channels": int(channels),
        "fmt": fmt or "f32",
        "sample_rate": sample_rate,
        "block_frames": block_frames,
    }
    if src == "-":
        return iter_pcm(sys.stdin.buffer, name="<stdin>", **kwargs)
    if hasattr(src, "read"):
        return iter_pcm(src, name=str(getattr(src, "name", "<stream>")), **kwargs)
    return _raw_file(Path(src), kwargs)


def _raw_file(path: Path, kwargs: dict) -> Iterator[np.ndarray]:
    if not path.exists():
        raise AudioError(path, "file not found")
    if path.is_dir():
        raise AudioError(path, "is a directory, not an audio stream")
    with open(path, "rb") as f:
        yield from iter_pcm(f, name=str(path), **kwargs)
