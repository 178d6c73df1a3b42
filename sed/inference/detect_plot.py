"""A picture of one file's detection (``sedkit plot-events``): spectrogram, score curves, event boxes.

Three panels on one time axis (seconds): the spectrogram (frequency in Hz, level in dB; left out when no
audio is given), each class's frame scores as a step curve with its threshold as a dashed line of the same
colour (scores 0-1), and the events as boxes, one row per class named by its label: predicted events
filled, ground truth (when given) as hatched outlines. Drawn on matplotlib's Agg canvas, written
atomically.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

__all__ = ["plot_detection", "plot_events", "read_segment", "spectrogram_db"]

_MAX_COLUMNS = 4000  # spectrogram columns drawn, whatever the length


def spectrogram_db(wave: np.ndarray, sample_rate: int) -> tuple[np.ndarray, float]:
    """(magnitude in dB ``[freq bins, columns]`` over 0..sample_rate/2, seconds per column) of a mono
    wave: 1024-point STFT (Hann), hop grown for long waves so the picture stays at most 4000 columns."""
    n_fft = 1024 if sample_rate >= 16000 else 512
    hop = max(n_fft // 4, int(np.ceil(len(wave) / _MAX_COLUMNS)))
    x = torch.as_tensor(np.asarray(wave, dtype=np.float32))
    if x.numel() < n_fft:
        x = torch.nn.functional.pad(x, (0, n_fft - x.numel()))
    spec = torch.stft(x, n_fft, hop, window=torch.hann_window(n_fft), center=False, return_complex=True)
    return (20 * torch.log10(spec.abs() + 1e-6)).numpy(), hop / sample_rate


def plot_events(
    out_png: str | os.PathLike,
    times: np.ndarray,
    scores: np.ndarray,
    labels: Sequence[str],
    thresholds: np.ndarray | float = 0.5,
    events: Sequence[tuple[float, float, str]] = (),
    truth: Sequence[tuple[float, float, str]] | None = None,
    wave: np.ndarray | None = None,
    sample_rate: int = 16000,
    title: str = "",
    start: float = 0.0,
) -> Path:
    """Draw one file's detection (module docstring). ``times``: frame boundaries ``[F + 1]`` in s (of the
    file); ``scores [F, C]``; ``thresholds`` one or ``[C]``; ``wave`` starts at ``start`` s."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch, Rectangle

    from sed.metrics.curves import save_figure

    labels = list(labels)
    th = np.broadcast_to(np.asarray(thresholds, dtype=float), (len(labels),))
    cmap = colormaps["tab10" if len(labels) <= 10 else "tab20"]
    color = {lab: cmap(i % cmap.N) for i, lab in enumerate(labels)}
    rows = 3 if wave is not None else 2
    fig = Figure(figsize=(12, 2.2 * rows + 0.25 * len(labels)))
    axes = fig.subplots(
        rows, 1, sharex=True, height_ratios=[1.2] * (rows - 2) + [1, 0.35 + 0.12 * len(labels)]
    )
    end = float(times[-1]) if len(times) else start
    if wave is not None:
        db, step = spectrogram_db(wave, sample_rate)
        im = axes[0].imshow(
            db,
            origin="lower",
            aspect="auto",
            cmap="magma",
            extent=(start, start + db.shape[1] * step, 0, sample_rate / 2),
            vmin=float(db.max()) - 80,
        )
        axes[0].set(ylabel="frequency (Hz)")
        # in an inset beside the panel, so the panel keeps the time axis of the others
        fig.colorbar(im, cax=axes[0].inset_axes((1.01, 0.0, 0.015, 1.0)), label="level (dB)")
    curves, boxes = axes[-2], axes[-1]
    for c, lab in enumerate(labels):
        if len(scores):
            curves.stairs(scores[:, c], times, baseline=None, color=color[lab], label=lab, linewidth=1.2)
        curves.axhline(th[c], color=color[lab], linestyle="--", linewidth=0.8)
    curves.set(ylabel="score (0-1)", ylim=(-0.02, 1.02))
    curves.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, title="class (-- threshold)")
    for onset, offset, lab in truth or ():
        if lab in color:
            y = labels.index(lab)
            boxes.add_patch(
                Rectangle((onset, y - 0.45), offset - onset, 0.9, fill=False, hatch="///", edgecolor="0.35")
            )
    for onset, offset, lab in events:
        y = labels.index(lab)
        boxes.add_patch(Rectangle((onset, y - 0.3), offset - onset, 0.6, color=color[lab], alpha=0.85))
    boxes.set(
        yticks=range(len(labels)), yticklabels=labels, ylim=(-0.6, len(labels) - 0.4), xlabel="time (s)"
    )
    boxes.invert_yaxis()
    handles = [Patch(color="0.5", label="predicted")]
    if truth is not None:
        handles.append(Patch(fill=False, hatch="///", edgecolor="0.35", label="ground truth"))
    boxes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, title="events")
    for ax in axes:
        ax.set_xlim(start, max(end, start + 1e-3))
        ax.grid(alpha=0.3)
    axes[0].set_title(title)
    fig.tight_layout()
    return save_figure(fig, out_png)


def read_segment(
    path: str | os.PathLike, sample_rate: int, start: float = 0.0, duration: float | None = None
):
    """Mono samples ``[n]`` of ``path`` at ``sample_rate`` from ``start`` s for ``duration`` s (None: to the
    end), read block-wise: nothing past the segment's end is read."""
    from sed.audio.io import iter_blocks

    first = round(start * sample_rate)
    last = None if duration is None else first + round(duration * sample_rate)
    parts, pos = [], 0
    for block in iter_blocks(path, 1 << 16, sample_rate=sample_rate, channels="mono"):
        n = block.shape[1]
        a, b = max(first - pos, 0), n if last is None else min(last - pos, n)
        if b > a:
            parts.append(block[0, a:b].numpy())
        pos += n
        if last is not None and pos >= last:
            break
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def plot_detection(
    out_png: str | os.PathLike,
    audio: str | os.PathLike | None = None,
    detector=None,
    scores: str | os.PathLike | None = None,
    truth: str | os.PathLike | None = None,
    thresholds=0.5,
    median=0.0,
    start: float = 0.0,
    duration: float | None = None,
) -> Path:
    """The picture of one file: scored by ``detector`` (a :class:`~sed.inference.detect.Detector`) on
    ``audio`` from ``start`` for ``duration`` s, or read from a ``scores`` file (sed_scores_eval's format;
    ``audio``, when given, adds the spectrogram); ``truth``: a DCASE TSV (``filename onset offset
    event_label``) whose events of this file are drawn. ``thresholds``/``median``: as in
    :meth:`~sed.inference.detect.Detector.detect`."""
    from sed.errors import DatasetError
    from sed.inference.detect_output import read_scores
    from sed.metrics.postprocess import class_values, filter_frames, frames_to_events, median_filter

    wave, rate = None, 16000
    if detector is not None:
        rate = detector.sample_rate
        wave = read_segment(audio, rate, start, duration)
        (det,) = detector.detect([(str(audio), torch.from_numpy(wave))], thresholds, median)
        if det.error:
            raise DatasetError(audio, det.error)
        labels, probs, hop = detector.labels, det.probs, detector.hop
        times = start + detector.offset + np.arange(len(probs) + 1) * hop
        events = [(a + start, b + start, lab) for a, b, lab in det.events]
        name = Path(audio).name
    else:
        times, probs, labels = read_scores(scores)
        hop = float(times[1] - times[0]) if len(times) > 1 else 1.0
        if len(times) > 1 and not np.allclose(np.diff(times), hop, atol=1e-4):
            raise DatasetError(scores, "frames of unequal length: events need a regular frame grid")
        probs = median_filter(probs, filter_frames(median, hop, labels))
        events = frames_to_events(
            probs, hop, labels, thresholds, offset=float(times[0]) if len(times) else 0.0
        )
        start = float(times[0]) if len(times) else 0.0
        if audio is not None:
            rate = 16000
            wave = read_segment(audio, rate, start, float(times[-1] - times[0]) if len(times) else None)
        name = Path(audio if audio is not None else scores).name
    gt = None
    if truth is not None:
        from sed.metrics.detection_io import file_id

        gt = _truth_of(truth, file_id(Path(audio if audio is not None else scores).name))
    return plot_events(
        out_png,
        times,
        probs,
        labels,
        class_values(thresholds, labels, "threshold"),
        events,
        gt,
        wave,
        rate,
        f"{name}: {_count(len(events), 'event')}"
        + (f", {len(gt)} in the ground truth" if gt is not None else ""),
        start,
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _truth_of(path: str | os.PathLike, file_id: str) -> list[tuple[float, float, str]]:
    """The events of ``file_id`` in a DCASE ground-truth TSV (sed.metrics.detection_io.read_events)."""
    from sed.metrics.detection_io import read_events

    return list(read_events(path).get(file_id, []))
