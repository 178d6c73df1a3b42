"""The report of a training run folder: learning curves with their diagnosis, confusion matrices and
per-class tables (``sedkit plot``, and every run at the end of ``fit``/``test``).

A run folder holds Lightning's ``metrics.csv`` (CSVLogger, possibly in ``version_N/``),
``confusion_<stage>.csv`` and ``labels.json``; :func:`plot_run` turns whatever is present into PNGs,
``per_class_<stage>.csv`` and ``diagnosis.json``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from sed.errors import DatasetError
from sed.fileio import atomic_open
from sed.metrics.confusion import (
    per_class_table,
    plot_confusion_matrix,
    read_confusion_csv,
    write_per_class_csv,
)
from sed.metrics.curves import diagnose, find_metrics_csv, plot_learning_curves, read_history


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
        diagnosis = diagnose([tr[e] for e in common], [va[e] for e in common], epochs=common, chance_loss=chance)
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
        if path is None:
            notes.append(f"no confusion_{stage}.csv: {stage} confusion matrix skipped")
            continue
        try:
            m, labs = read_confusion_csv(path)
        except DatasetError as e:
            notes.append(f"{e}: {stage} confusion matrix skipped")
            continue
        files[f"confusion_{stage}"] = str(plot_confusion_matrix(m, labs, run / f"confusion_{stage}.png"))
        out = write_per_class_csv(run / f"per_class_{stage}.csv", per_class_table(m, labs))
        files[f"per_class_{stage}"] = str(out)
    return {"files": files, "diagnosis": diagnosis, "notes": notes}
