"""Frame probabilities -> events: per-class median filters, thresholds, onsets and offsets.

The steps and their conventions are the DCASE 2024 Task 4 baseline's:

- :func:`median_filter`: each class's column ``[F]`` is filtered on its own by
  :func:`scipy.ndimage.median_filter` with its length in frames, boundary mode ``reflect`` (scipy's
  default, which the baseline's class-wise filter keeps: the column is extended by its mirror image
  ``d c b a | a b c d | d c b a``). A length of 1 leaves the column as it is.
- :func:`filter_frames`: a length in *seconds* becomes ``round(seconds / hop)`` frames, made odd (one
  more frame when even) so the window is centred on its frame; at least 1.
- :func:`frames_to_events`: a class is active on a frame whose probability is **above** its threshold
  (``p > t``, the baseline's ``c_scores > c_th``); a run of active frames ``[a, b)`` is the event
  ``(a * hop, b * hop)`` (frame ``i`` covers ``[i * hop, (i + 1) * hop)``). Events of one class whose
  gap is at most ``merge_gap`` seconds are merged first, then events shorter than ``min_duration``
  seconds are dropped (dcase_util's order: gaps, then lengths).

Per-class values (thresholds, filter lengths) come as one number for all classes or a mapping
``{label: value}``; :func:`read_class_values` reads them from a ``label value`` text file.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage

from sed.errors import DatasetError, short

__all__ = [
    "class_values",
    "filter_frames",
    "frames_to_events",
    "median_filter",
    "read_class_values",
]

_TOL = 1e-9
_MAX_BYTES = 1 << 20  # a per-class file is a few lines; a bigger one is not one


def class_values(
    value: float | Mapping[str, float], labels: Sequence[str], what: str = "value"
) -> np.ndarray:
    """``[C]`` float64 per-class values from one number or ``{label: value}`` naming every label
    (a ValueError names the labels missing or unknown)."""
    if not isinstance(value, Mapping):
        return np.full(len(labels), float(value))
    unknown = [k for k in value if k not in labels]
    missing = [k for k in labels if k not in value]
    if unknown or missing:
        parts = ([f"unknown label(s) {', '.join(map(short, unknown[:5]))}"] if unknown else []) + (
            [f"no {what} for {', '.join(missing[:5])}"] if missing else []
        )
        raise ValueError(f"per-class {what}s: {'; '.join(parts)}")
    return np.array([float(value[k]) for k in labels])


def read_class_values(path: str | os.PathLike, what: str = "value", low: float = 0.0, high: float = math.inf):
    """``{label: value}`` from a text file of ``label value`` lines (tab or spaces; the label may hold
    spaces, the value is the last field; blank lines and ``#`` comments skipped; a header line
    ``event_label threshold`` is allowed). A bad line is one :class:`DatasetError` naming the file and the
    line; values must lie in ``[low, high]``."""
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_BYTES + 1)
    except OSError as e:
        raise DatasetError(path, f"cannot read it ({e.strerror or type(e).__name__})") from None
    if len(data) > _MAX_BYTES:
        raise DatasetError(path, f"over {_MAX_BYTES} bytes: not a per-class {what} file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DatasetError(path, "not UTF-8 text") from None
    out: dict[str, float] = {}
    first = True
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        header, first = first, False
        fields = line.replace("\t", " ").rsplit(None, 1)
        if len(fields) != 2:
            raise DatasetError(path, f"line {n}: expected 'label {what}', got {short(line)}")
        label, text_value = fields[0].strip(), fields[1]
        try:
            value = float(text_value)
        except ValueError:
            if header:
                continue
            raise DatasetError(path, f"line {n}: {short(text_value)} is not a number") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise DatasetError(path, f"line {n}: {what} {text_value} is out of range [{low:g}, {high:g}]")
        if label in out:
            raise DatasetError(path, f"line {n}: {short(label)} is given twice")
        out[label] = value
    if not out:
        raise DatasetError(path, f"no 'label {what}' lines")
    return out


def filter_frames(seconds: float | Mapping[str, float], hop: float, labels: Sequence[str]) -> np.ndarray:
    """Median filter lengths in seconds (one, or per class) -> ``[C]`` odd frame counts at ``hop``."""
    sec = class_values(seconds, labels, "median filter length")
    if (sec < 0).any() or not np.isfinite(sec).all():
        raise ValueError("median filter lengths must be finite seconds >= 0")
    frames = np.maximum(1, np.round(sec / hop)).astype(int)
    return frames + (frames % 2 == 0)


def median_filter(probs: np.ndarray, lengths: int | Sequence[int]) -> np.ndarray:
    """``probs [F, C]`` with column ``c`` median-filtered over ``lengths[c]`` frames (module docstring)."""
    probs = np.asarray(probs)
    sizes = np.broadcast_to(np.asarray(lengths, dtype=int), (probs.shape[1],))
    out = probs.copy()
    for c, size in enumerate(sizes):
        if size > 1:
            out[:, c] = ndimage.median_filter(probs[:, c], size=int(size), mode="reflect")
    return out


def _runs(active: np.ndarray) -> list[tuple[int, int]]:
    """``[(a, b)]``: the runs of True in a 1-d bool array, as half-open frame ranges."""
    edges = np.diff(np.concatenate([[0], active.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def frames_to_events(
    probs: np.ndarray,
    hop: float,
    labels: Sequence[str],
    thresholds: float | Mapping[str, float] = 0.5,
    min_duration: float = 0.0,
    merge_gap: float = 0.0,
    offset: float = 0.0,
) -> list[tuple[float, float, str]]:
    """Events ``(onset, offset, label)`` in seconds (plus ``offset``) of frame probabilities ``[F, C]``,
    sorted by onset then label (module docstring)."""
    probs = np.asarray(probs)
    if probs.ndim != 2 or probs.shape[1] != len(labels):
        raise ValueError(f"probabilities [frames, {len(labels)}] expected, got {list(probs.shape)}")
    th = class_values(thresholds, labels, "threshold")
    events = []
    for c, label in enumerate(labels):
        runs: list[list[int]] = []
        for a, b in _runs(probs[:, c] > th[c]):
            if runs and (a - runs[-1][1]) * hop <= merge_gap + _TOL:
                runs[-1][1] = b
            else:
                runs.append([a, b])
        events += [
            (offset + a * hop, offset + b * hop, label)
            for a, b in runs
            if (b - a) * hop + _TOL >= min_duration
        ]
    return sorted(events, key=lambda e: (e[0], e[2], e[1]))
