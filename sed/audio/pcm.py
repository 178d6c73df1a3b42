"""Raw PCM byte streams (stdin, a pipe, a headerless file) read incrementally as mono float32 blocks.

``iter_pcm(stream, rate, channels, fmt)`` decodes little-endian interleaved ``f32`` (float32) or
``s16`` (16-bit PCM, scaled by 1/32768) frames as they arrive, averages the channels and, when
``sample_rate`` differs from ``rate``, resamples them with a streaming soxr resampler (whose
chunked output equals its one-shot result). Memory does not grow with the length of the stream.

Bad input is one :class:`AudioError` naming the input: a stream that ends inside a sample or a frame
(an odd number of bytes for ``s16``), NaN or infinite samples, float samples far beyond [-1, 1].
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np
import soxr

from sed.audio.io import MAX_AMPLITUDE
from sed.errors import AudioError

__all__ = ["PCM_FORMATS", "decode_pcm", "iter_pcm"]

#: ``--format`` -> (numpy dtype, bytes per sample, scale to [-1, 1])
PCM_FORMATS = {"f32": ("<f4", 4, 1.0), "s16": ("<i2", 2, 1.0 / 32768)}


def decode_pcm(
    data: bytes, channels: int, fmt: str, name: str = "<stdin>", offset: int = 0, rate: int | None = None
) -> np.ndarray:
    """Whole interleaved frames of ``data`` -> mono float32 ``[frames]``. ``offset`` (frames before
    ``data``) and ``rate`` place a bad sample in time in the error."""
    dtype, width, scale = PCM_FORMATS[fmt]
    if len(data) % (width * channels):
        raise AudioError(name, _partial(len(data), width, channels, fmt))
    x = np.frombuffer(data, dtype=dtype).astype(np.float32).reshape(-1, channels)
    if scale != 1.0:
        x *= scale
    elif x.size:
        bad = ~np.isfinite(x).all(axis=1) | (np.abs(x) > MAX_AMPLITUDE).any(axis=1)
        if bad.any():
            i = int(np.argmax(bad))
            where = f"{(offset + i) / rate:.3f} s" if rate else f"frame {offset + i}"
            row = x[i]
            kind = (
                "NaN" if np.isnan(row).any() else "Inf" if np.isinf(row).any() else f"{np.abs(row).max():.3g}"
            )
            what = (
                f"contains {kind} samples"
                if kind in ("NaN", "Inf")
                else f"sample of magnitude {kind} (float samples up to {MAX_AMPLITUDE:g} are accepted)"
            )
            raise AudioError(name, f"{what} (first at {where})")
    return x.mean(axis=1) if channels > 1 else x[:, 0].copy()


def _partial(nbytes: int, width: int, channels: int, fmt: str) -> str:
    if nbytes % width:
        return f"ends inside a sample: {nbytes} bytes is not a whole number of {width}-byte {fmt} samples" + (
            " (an odd number of bytes for 16-bit PCM)" if width == 2 else ""
        )
    return f"ends inside a frame: {nbytes // width} samples is not a multiple of {channels} channels"


def iter_pcm(
    stream: BinaryIO,
    rate: int,
    channels: int = 1,
    fmt: str = "f32",
    sample_rate: int | None = None,
    block_frames: int = 4096,
    name: str = "<stdin>",
) -> Iterator[np.ndarray]:
    """Mono float32 blocks at ``sample_rate`` (default ``rate``) from raw interleaved PCM bytes.

    Reads with ``read1`` where the stream has it (a block comes back as soon as bytes arrive, so a
    live source is not held up) and at most ``block_frames`` frames at a time."""
    if fmt not in PCM_FORMATS:
        raise ValueError(f"unknown PCM format {fmt!r}; use {' or '.join(PCM_FORMATS)}")
    if not 0 < rate <= 10_000_000 or channels < 1 or block_frames < 1:
        raise ValueError(f"rate ({rate} Hz), channels ({channels}) and block_frames must be positive")
    width = PCM_FORMATS[fmt][1] * channels
    target = sample_rate or rate
    resampler = (
        None if target == rate else soxr.ResampleStream(rate, target, 1, dtype="float32", quality="HQ")
    )
    read = getattr(stream, "read1", stream.read)
    pending, frames, emitted = b"", 0, 0
    while True:
        try:
            data = read(block_frames * width)
        except OSError as e:
            raise AudioError(name, f"cannot read ({e.strerror or e})") from None
        if not data:
            break
        pending += data
        whole = len(pending) - len(pending) % width
        if not whole:
            continue
        x = decode_pcm(pending[:whole], channels, fmt, name, frames, rate)
        pending, frames = pending[whole:], frames + x.shape[0]
        if resampler is not None:
            x = resampler.resample_chunk(x, last=False)[: max(0, math.ceil(frames * target / rate) - emitted)]
        emitted += x.shape[0]
        if x.size:
            yield x
    if pending:
        raise AudioError(name, _partial(frames * width + len(pending), PCM_FORMATS[fmt][1], channels, fmt))
    if (
        resampler is not None
    ):  # the flushed tail, cut or padded to the one-shot length ceil(frames * target / rate)
        need = math.ceil(frames * target / rate) - emitted
        tail = resampler.resample_chunk(np.zeros(0, np.float32), last=True)[: max(need, 0)]
        tail = np.concatenate([tail, np.zeros(max(need - tail.shape[0], 0), np.float32)])
        if tail.size:
            yield tail
