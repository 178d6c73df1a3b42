"""Confusion matrices (CSV and heat map) and per-class precision/recall/F1 tables."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from sed.errors import DatasetError
from sed.fileio import atomic_open
from sed.metrics.curves import save_figure


def meta_path(path) -> Path:
    """Where :func:`write_confusion_csv` records what a matrix counts: ``confusion_test.csv`` ->
    ``confusion_test.json``."""
    return Path(path).with_suffix(".json")


def write_confusion_csv(path, matrix, labels, meta: dict | None = None) -> Path:
    """Write counts (rows: true, columns: predicted) as ``true\\pred,<labels...>`` + one row per label;
    ``meta`` (``split``, ``checkpoint``, ``epoch``: what the matrix counts) goes to :func:`meta_path`."""
    matrix = np.asarray(matrix)
    if matrix.shape != (len(labels), len(labels)):
        raise ValueError(f"confusion matrix {matrix.shape} does not match {len(labels)} labels")
    with atomic_open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["true\\pred", *labels])
        for lab, row in zip(labels, matrix):
            w.writerow([lab, *(int(x) if float(x).is_integer() else float(x) for x in row)])
    if meta is not None:
        with atomic_open(meta_path(path), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=1)
    return Path(path)


def read_confusion_meta(path) -> dict:
    """The ``meta`` :func:`write_confusion_csv` recorded beside ``path`` ({} when none or unreadable)."""
    try:
        meta = json.loads(meta_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


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
        raise DatasetError(
            path, f"confusion matrix is not {len(labels)}x{len(labels)} with rows in header order"
        )
    try:
        m = np.array([[float(x) for x in r[1:]] for r in rows[1:]])
    except ValueError:
        raise DatasetError(path, "confusion matrix has a non-numeric count") from None
    return (m.astype(np.int64) if np.all(m == np.round(m)) else m), labels


#: What the cells of a (row-normalised or raw) confusion matrix hold, the title's second line.
CELLS = {True: "row share of the true class (count)", False: "counts"}


def confusion_title(split: str | None = None, checkpoint=None, epoch=None, normalize: bool = True) -> str:
    """``test split: checkpoint best.ckpt (epoch 4)`` over what the cells hold."""
    where = f"{split} split" if split else "confusion matrix"
    model = f"checkpoint {Path(checkpoint).name}" if checkpoint else "checkpoint not recorded"
    if epoch is not None:
        model = f"{model} (epoch {epoch})" if checkpoint else f"weights of epoch {epoch}"
    return f"{where}: {model}\n{CELLS[normalize]}"


def confusion_figure(matrix, labels, normalize: bool = True, title: str = "") -> Figure:
    """Heat map of counts (rows: true, columns: predicted); ``normalize`` colours by row share and writes
    share and count in each cell (up to 30 classes; beyond, the cells are too small for text)."""
    counts = np.asarray(matrix, dtype=float)
    m = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1e-12) if normalize else counts
    c = len(labels)
    size = min(max(5.0, 0.45 * c + 3), 30)
    fig = Figure(figsize=(size + 1, size))
    ax = fig.subplots()
    im = ax.imshow(m, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(
        im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class" if normalize else "count"
    )
    ax.set_xticks(range(c), labels, rotation=90, fontsize=8 if c < 30 else 5)
    ax.set_yticks(range(c), labels, fontsize=8 if c < 30 else 5)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    if c <= 30:
        for i, j in np.ndindex(m.shape):
            n = f"{counts[i, j]:g}"
            ax.text(
                j,
                i,
                f"{m[i, j]:.2f}\n({n})" if normalize else n,
                ha="center",
                va="center",
                fontsize=7 if c <= 15 else 5,
                color="white" if m[i, j] > 0.5 * max(m.max(), 1e-12) else "black",
            )
    fig.tight_layout()
    return fig


def plot_confusion_matrix(
    csv_path_or_matrix,
    labels=None,
    out_png="confusion.png",
    normalize: bool = True,
    split: str | None = None,
    checkpoint=None,
    epoch=None,
) -> Path:
    """Heat map of a confusion matrix (a CSV path or an array) titled with the ``split`` and the
    ``checkpoint`` (and ``epoch``) it counts; ``normalize`` divides rows (recall), counts stay in the
    cells."""
    if isinstance(csv_path_or_matrix, str | Path):
        m, file_labels = read_confusion_csv(csv_path_or_matrix)
        labels = labels or file_labels
    else:
        m = np.asarray(csv_path_or_matrix)
    labels = list(labels) if labels is not None else [str(i) for i in range(len(m))]
    title = confusion_title(split, checkpoint, epoch, normalize)
    return save_figure(confusion_figure(m, labels, normalize, title), out_png)


def per_class_table(matrix, labels) -> list[dict]:
    """Precision, recall, F1 and support per class (rows: true, columns: predicted; 0 when undefined)."""
    m = np.asarray(matrix, dtype=float)
    tp, pred, true = np.diag(m), m.sum(axis=0), m.sum(axis=1)
    p = np.divide(tp, pred, out=np.zeros_like(tp), where=pred > 0)
    r = np.divide(tp, true, out=np.zeros_like(tp), where=true > 0)
    f1 = np.divide(2 * p * r, p + r, out=np.zeros_like(tp), where=p + r > 0)
    return [
        {
            "label": lab,
            "precision": float(p[i]),
            "recall": float(r[i]),
            "f1": float(f1[i]),
            "support": int(true[i]),
        }
        for i, lab in enumerate(labels)
    ]


def write_per_class_csv(path, rows: list[dict]) -> Path:
    """Write :func:`per_class_table` rows as CSV (label, precision, recall, f1, support)."""
    with atomic_open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["label", "precision", "recall", "f1", "support"])
        w.writeheader()
        for r in rows:
            w.writerow({k: f"{v:.6f}" if isinstance(v, float) else v for k, v in r.items()})
    return Path(path)
