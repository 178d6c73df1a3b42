"""The report of a training run folder: learning curves with their diagnosis, confusion matrices and
per-class tables (``sedkit plot``, and every run at the end of ``fit``/``test``).

:func:`plot_kfold` adds the pictures of a ``sedkit kfold`` root: the confusion matrix pooled over the
held-out folds and the main metric per fold with its mean and standard deviation.

A run folder holds Lightning's ``metrics.csv`` (CSVLogger, possibly in ``version_N/``),
``confusion_<stage>.csv`` and ``labels.json``; :func:`plot_run` turns whatever is present into PNGs,
``per_class_<stage>.csv`` and ``diagnosis.json``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from sed.errors import DatasetError
from sed.fileio import atomic_open
from sed.metrics.confusion import (
    CELLS,
    confusion_figure,
    per_class_table,
    plot_confusion_matrix,
    read_confusion_csv,
    read_confusion_meta,
    write_confusion_csv,
    write_per_class_csv,
)
from sed.metrics.curves import (
    PANELS,
    diagnose,
    find_metrics_csv,
    plot_learning_curves,
    read_history,
    save_figure,
    unit_of,
)

#: The metric a k-fold summary shows: the first of these a run logged, else its first non-loss metric.
MAIN_METRICS = ("test_acc", "test_score", "test_map", "test_SELD", "test_F", "test_f1")


def plot_run(run_dir) -> dict:
    """Write ``learning_curves.png``, ``diagnosis.json``, ``confusion_<stage>.png`` and
    ``per_class_<stage>.csv`` into ``run_dir`` from whatever the run holds.

    Returns ``{"files": {name: path}, "diagnosis": Diagnosis | None, "notes": [skipped pieces]}``.
    A folder without ``metrics.csv`` raises :class:`DatasetError`.  The chance-level loss
    ``ln(num_labels)`` (from ``labels.json``) is used for single-label runs (no ``val_map`` logged).
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise DatasetError(run, "run folder not found")
    metrics_csv = find_metrics_csv(run)
    if metrics_csv is None:
        raise DatasetError(run, "no metrics.csv (Lightning CSVLogger) in this run folder")
    history = read_history(metrics_csv)
    search = [metrics_csv.parent, run] if metrics_csv.parent != run else [run]

    def find(name: str) -> Path | None:
        return next((d / name for d in search if (d / name).is_file()), None)

    files: dict[str, str] = {}
    notes: list[str] = []
    try:  # labels.json gives the chance-level loss
        labels = json.loads(lj.read_text(encoding="utf-8")) if (lj := find("labels.json")) else []
    except (OSError, ValueError):
        labels = None
    if not isinstance(labels, list):
        notes.append(f"{lj}: not a JSON list of labels; ignored")
        labels = []
    diagnosis = None
    tr, va = dict(history.get("train_loss", [])), dict(history.get("val_loss", []))
    common = sorted(set(tr) & set(va))
    if common:
        chance = math.log(len(labels)) if len(labels) > 1 and "val_map" not in history else None
        diagnosis = diagnose(
            [tr[e] for e in common], [va[e] for e in common], epochs=common, chance_loss=chance
        )
        with atomic_open(run / "diagnosis.json", "w", encoding="utf-8") as f:
            json.dump(diagnosis.to_dict(), f, indent=2)
        files["diagnosis"] = str(run / "diagnosis.json")
    else:
        notes.append("no epochs with both train_loss and val_loss: no diagnosis")
    if history:
        files["learning_curves"] = str(plot_learning_curves(history, run / "learning_curves.png", diagnosis))
    else:
        notes.append(f"{metrics_csv}: no metric values: no learning curves")
    for stage in ("val", "test"):
        path = find(f"confusion_{stage}.csv")
        read = _read_confusion(path, f"confusion_{stage}.csv", f"{stage} confusion matrix skipped", notes)
        if read is None:
            continue
        m, labs = read
        if len(labels) == len(labs) and labs == [str(i) for i in range(len(labs))]:
            labs = [str(x) for x in labels]  # a matrix written without names: labels.json's
        meta = read_confusion_meta(path)
        files[f"confusion_{stage}"] = str(
            plot_confusion_matrix(
                m,
                labs,
                run / f"confusion_{stage}.png",
                split=stage,
                checkpoint=meta.get("checkpoint"),
                epoch=meta.get("epoch"),
            )
        )
        out = write_per_class_csv(run / f"per_class_{stage}.csv", per_class_table(m, labs))
        files[f"per_class_{stage}"] = str(out)
    return {"files": files, "diagnosis": diagnosis, "notes": notes}


def _read_confusion(path: Path | None, name: str, skipped: str, notes: list[str]):
    """``(matrix, labels)`` of a confusion CSV, or None with a note saying why and what was ``skipped``."""
    if path is None:
        notes.append(f"no {name}: {skipped}")
        return None
    try:
        return read_confusion_csv(path)
    except DatasetError as e:
        notes.append(f"{e}: {skipped}")
        return None


# ------------------------------------------------------------------------------------------ k-fold
def main_metric(keys: Sequence[str]) -> str | None:
    """:data:`MAIN_METRICS`' first in ``keys``, else the first key that is no loss (None when none)."""
    return next((k for k in MAIN_METRICS if k in keys), None) or next(
        (k for k in keys if not k.endswith("loss") and "/" not in k), None
    )


def kfold_summary_figure(rows: list[dict], metric: str) -> Figure:
    """Bars of ``metric`` per fold with its mean (line) and +-1 standard deviation (band; n - 1)."""
    folds = [r for r in rows if r.get(metric) is not None]
    values = np.array([float(r[metric]) for r in folds])
    mean, std = float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0
    labels = dict(PANELS)
    fig = Figure(figsize=(max(5.0, 0.7 * len(folds) + 3), 4.2))
    ax = fig.subplots()
    ax.bar(range(len(folds)), values, color="tab:blue", alpha=0.8, label="per fold")
    ax.axhline(mean, color="black", lw=1.5, label=f"mean {mean:.3g}")
    ax.axhspan(mean - std, mean + std, color="grey", alpha=0.25, label=f"± 1 std {std:.3g}")
    ax.set_xticks(range(len(folds)), [f"fold {r['fold']}" for r in folds])
    ax.set(
        ylabel=f"{metric}: {labels[unit_of(metric, values) or 'value']}",
        xlabel="held-out fold",
        title=f"{metric}: mean {mean:.3g} ± {std:.3g} over {len(folds)} folds",
    )
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def _fold_confusion(fold_dir: Path) -> Path | None:
    found = [p for p in fold_dir.rglob("confusion_test.csv") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime, default=None)


def plot_kfold(root, rows: list[dict], summary: dict, checkpoint: str | None = None) -> dict:
    """Write into the k-fold ``root`` ``kfold_summary.png`` (the main metric per held-out fold, mean
    +- std) and ``confusion_pooled.csv/.png`` (the sum of every fold's test confusion matrix, found
    under ``root/fold<k>/``; ``checkpoint`` says which one each fold tested, e.g. ``best``).

    Returns ``{"files": {name: path}, "notes": [skipped pieces]}``; a fold without a matrix, or with
    other labels than the first, is left out of the pool with a note."""
    root = Path(root)
    files: dict[str, str] = {}
    notes: list[str] = []
    metric = main_metric(list(summary))
    if metric is None:
        notes.append("no test metric in the k-fold table: no per-fold summary")
    else:
        files["kfold_summary"] = str(
            save_figure(kfold_summary_figure(rows, metric), root / "kfold_summary.png")
        )
    pooled, labels, used = None, None, []
    for r in rows:
        fold_dir = root / f"fold{r['fold']}"
        path = _fold_confusion(fold_dir)
        read = _read_confusion(
            path, f"confusion_test.csv in {fold_dir}", "left out of the pooled confusion matrix", notes
        )
        if read is None:
            continue
        m, labs = read
        if labels is not None and labs != labels:
            notes.append(f"{path}: other labels than fold {used[0]}; left out of the pooled confusion matrix")
            continue
        pooled, labels = (m if pooled is None else pooled + m), labs
        used.append(r["fold"])
    if pooled is not None and len(used) > 1:
        files["confusion_pooled_csv"] = str(
            write_confusion_csv(root / "confusion_pooled.csv", pooled, labels)
        )
        title = (
            f"test split pooled over folds {', '.join(map(str, used))}: "
            f"{f'the {checkpoint} checkpoint' if checkpoint else 'the tested checkpoint'} of each "
            f"fold\n{CELLS[True]}"
        )
        files["confusion_pooled"] = str(
            save_figure(confusion_figure(pooled, labels, True, title), root / "confusion_pooled.png")
        )
    elif pooled is not None:
        notes.append("confusion matrices of fewer than two folds: no pooled confusion matrix")
    return {"files": files, "notes": notes}
