"""Confusion matrices (CSV and heat map) and per-class precision/recall/F1 tables."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from sed.errors import DatasetError
from sed.fileio import atomic_open
from sed.metrics.curves import save_figure


def write_confusion_csv(path, matrix, labels) -> Path:
    """Write counts (rows: true, columns: predicted) as ``true\\pred,<labels...>`` + one row per label."""
    matrix = np.asarray(matrix)
    if matrix.shape != (len(labels), len(labels)):
        raise ValueError(f"confusion matrix {matrix.shape} does not match {len(labels)} labels")
    with atomic_open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["true\\pred", *labels])
        for lab, row in zip(labels, matrix):
            w.writerow([lab, *(int(x) if float(x).is_integer() else float(x) for x in row)])
    return Path(path)


def read_confusion_csv(path) -> tuple[np.ndarray, list[str]]:
    """Read :func:`write_confusion_csv`'s format; a malformed file raises :class:`DatasetError`."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.reader(f) if r]
    except OSError as e:
        raise DatasetError(path, f"cannot read confusion matrix: {e.strerror or e}") from None
    if not rows or len(rows[0]) < 2:
        raise DatasetError(path, "empty confusion matrix (expected a 'true\\pred,<labels>' header)")
    labels = rows[0][1:]
    if [r[0] for r in rows[1:]] != labels or any(len(r) != len(labels) + 1 for r in rows[1:]):
        raise DatasetError(path, f"confusion matrix is not {len(labels)}x{len(labels)} with rows in header order")
    try:
        m = np.array([[float(x) for x in r[1:]] for r in rows[1:]])
    except ValueError:
        raise DatasetError(path, "confusion matrix has a non-numeric count") from None
    return (m.astype(np.int64) if np.all(m == np.round(m)) else m), labels


def plot_confusion_matrix(csv_path_or_matrix, labels=None, out_png="confusion.png", normalize: bool = True) -> Path:
    """Heat map of a confusion matrix (a CSV path or an array); ``normalize`` divides rows (recall)."""
    if isinstance(csv_path_or_matrix, str | Path):
        m, file_labels = read_confusion_csv(csv_path_or_matrix)
        labels = labels or file_labels
    else:
        m = np.asarray(csv_path_or_matrix)
    labels = list(labels) if labels is not None else [str(i) for i in range(len(m))]
    m = m.astype(float)
    if normalize:
        m = m / np.maximum(m.sum(axis=1, keepdims=True), 1e-12)
    c = len(labels)
    size = min(max(5.0, 0.35 * c + 3), 30)
    fig = Figure(figsize=(size + 1, size))
    ax = fig.subplots()
    im = ax.imshow(m, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(c), labels, rotation=90, fontsize=8 if c < 30 else 5)
    ax.set_yticks(range(c), labels, fontsize=8 if c < 30 else 5)
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix" + (" (row-normalised)" if normalize else ""))
    if c <= 20:
        for i, j in np.ndindex(m.shape):
            ax.text(j, i, f"{m[i, j]:.2f}" if normalize else f"{m[i, j]:g}", ha="center", va="center",
                    fontsize=7, color="white" if m[i, j] > 0.5 * max(m.max(), 1e-12) else "black")
    fig.tight_layout()
    return save_figure(fig, out_png)


def per_class_table(matrix, labels) -> list[dict]:
    """Precision, recall, F1 and support per class (rows: true, columns: predicted; 0 when undefined)."""
    m = np.asarray(matrix, dtype=float)
    tp, pred, true = np.diag(m), m.sum(axis=0), m.sum(axis=1)
    p = np.divide(tp, pred, out=np.zeros_like(tp), where=pred > 0)
    r = np.divide(tp, true, out=np.zeros_like(tp), where=true > 0)
    f1 = np.divide(2 * p * r, p + r, out=np.zeros_like(tp), where=p + r > 0)
    return [{"label": lab, "precision": float(p[i]), "recall": float(r[i]), "f1": float(f1[i]),
             "support": int(true[i])} for i, lab in enumerate(labels)]


def write_per_class_csv(path, rows: list[dict]) -> Path:
    """Write :func:`per_class_table` rows as CSV (label, precision, recall, f1, support)."""
    with atomic_open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["label", "precision", "recall", "f1", "support"])
        w.writeheader()
        for r in rows:
            w.writerow({k: f"{v:.6f}" if isinstance(v, float) else v for k, v in r.items()})
    return Path(path)
