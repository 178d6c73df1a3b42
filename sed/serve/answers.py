"""The JSON answers of ``POST /predict`` (the service contract, docs/serving.md) from a scored upload.

Without ``window``, ``detect`` or ``spectrogram`` the answer is the Hugging Face inference format, the
``top_k`` best ``[{"label", "score"}, ...]``; with any of them an object: ``labels`` (the whole input; the
mean over windows in window mode, as ``sedkit classify``), ``duration``, and ``windows`` / ``events`` /
``spectrogram`` as asked.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

__all__ = ["DB_RANGE", "MAX_COLUMNS", "MAX_ROWS", "answer", "reduce_spectrogram", "spectrogram"]

#: the picture's bounds: frequency rows, time columns, and the dB range below its loudest cell
MAX_ROWS, MAX_COLUMNS, DB_RANGE = 128, 1000, 80.0


def answer(clf, result, params: dict[str, Any], duration: float, extra: dict[str, Any]) -> dict[str, Any]:
    """``{"body": the JSON answer}`` of one upload's :class:`~sed.inference.classifier.FileResult`."""
    k = int(params.get("top_k", 5))
    labels = clf.top_k(result.scores, k)
    if not (params.get("window") or params.get("detect") or params.get("spectrogram")):
        return {"body": labels}
    body: dict[str, Any] = {"labels": labels, "duration": round(float(duration), 6)}
    if params.get("window"):
        body["windows"] = [
            {"start": round(float(s), 6), "end": round(float(e), 6), "labels": clf.top_k(sc, k)}
            for s, e, sc in result.windows
        ]
    body.update(extra)
    return {"body": body}


def _mean_groups(x: np.ndarray, axis: int, most: int) -> np.ndarray:
    """``x`` with runs of ``ceil(n / most)`` entries along ``axis`` averaged (the last run may be shorter)."""
    n = x.shape[axis]
    step = -(-n // most)
    if step <= 1:
        return x
    starts = np.arange(0, n, step)
    sums = np.add.reduceat(x, starts, axis=axis)
    counts = np.diff(np.append(starts, n)).astype(x.dtype)
    shape = [1, 1]
    shape[axis] = len(starts)
    return sums / counts.reshape(shape)


def reduce_spectrogram(db: np.ndarray, seconds_per_column: float, sample_rate: int) -> dict[str, Any]:
    """A dB spectrogram ``[bins, columns]`` (low frequency first) as at most :data:`MAX_ROWS` x
    :data:`MAX_COLUMNS` uint8 cells (power averaged over merged cells), 0 -> the loudest cell minus
    :data:`DB_RANGE` dB (or less), 255 -> the loudest."""
    power = np.power(10.0, np.asarray(db, np.float64) / 10.0)
    cols = db.shape[1]
    power = _mean_groups(_mean_groups(power, 0, MAX_ROWS), 1, MAX_COLUMNS)
    level = 10.0 * np.log10(np.maximum(power, 1e-30))
    hi = float(level.max())
    lo = hi - DB_RANGE
    cells = np.rint(np.clip((level - lo) / DB_RANGE, 0.0, 1.0) * 255).astype(np.uint8)
    return {
        "rows": cells.tolist(),
        "seconds_per_column": float(seconds_per_column) * -(-cols // MAX_COLUMNS),
        "max_hz": sample_rate / 2,
        "db_range": [round(lo, 3), round(hi, 3)],
    }


def spectrogram(path: str | os.PathLike, sample_rate: int) -> dict[str, Any]:
    """The answer's ``spectrogram`` of an audio file, as ``classify`` reads it (model rate, mono)."""
    from sed.audio.io import load_audio
    from sed.inference.detect_plot import spectrogram_db

    wave, _ = load_audio(path, sample_rate=sample_rate, channels="mono")
    db, step = spectrogram_db(wave[0].numpy(), sample_rate)
    return reduce_spectrogram(db, step, sample_rate)
