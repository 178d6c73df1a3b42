"""Prediction files against a DCASE ground truth (``sedkit sed-eval``): a folder of score files (PSDS1/2 and
the F1s) or an events TSV (the F1s only: PSDS needs scores).

A bad score file is reported and left out of the evaluation (with its ground truth): the rest is scored
and the caller counts the problems. A bad ground truth, durations or thresholds file stops the job.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from sed.data.corpora.text import csv_rows, text_lines
from sed.errors import DatasetError, SedError, short
from sed.metrics.detection import detection_report, event_metrics
from sed.metrics.detection_io import read_durations, read_events, read_score_file

__all__ = ["evaluate_files", "read_thresholds"]


def _threshold(text: str, path: Path, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DatasetError(path, f"{where}: threshold {short(text)} is not a number") from None
    if not (math.isfinite(value) and 0 <= value <= 1):
        raise DatasetError(path, f"{where}: threshold {short(text)} is not in [0, 1]")
    return value


def read_thresholds(value: str | float) -> float | dict[str, float]:
    """One threshold (a number), or per class from a file: a JSON object ``{label: threshold}`` or a TSV
    of ``event_label threshold`` rows (the header optional)."""
    try:
        return _threshold(str(value), Path("--thresholds"), "value")
    except DatasetError:
        if isinstance(value, float) or not Path(value).is_file():
            raise DatasetError(value, "neither a threshold in [0, 1] nor a file of thresholds") from None
    p = Path(value)
    if p.suffix.lower() == ".json":
        try:
            table = json.loads("".join(text_lines(p)))
        except json.JSONDecodeError as e:
            raise DatasetError(p, f"line {e.lineno}: not JSON ({e.msg})") from None
        if not isinstance(table, dict) or not table:
            raise DatasetError(p, "not a JSON object {label: threshold}")
        return {str(k): _threshold(str(v), p, f"class {short(k)}") for k, v in table.items()}
    out: dict[str, float] = {}
    for lineno, cells in csv_rows(p, delimiter="\t"):
        cells = [c.strip() for c in cells]
        if not any(cells) or (lineno == 1 and cells == ["event_label", "threshold"]):
            continue
        if len(cells) != 2 or not cells[0]:
            raise DatasetError(p, f"line {lineno}: expected event_label<TAB>threshold")
        if cells[0] in out:
            raise DatasetError(p, f"line {lineno}: class {short(cells[0])} listed twice")
        out[cells[0]] = _threshold(cells[1], p, f"line {lineno}")
    if not out:
        raise DatasetError(p, "no thresholds")
    return out


def _scores(folder: Path) -> tuple[dict, list[tuple[Path, str]]]:
    """The readable score files of ``folder`` (one set of classes: the first readable file's) and the
    problems of the others."""
    scores, errors, classes = {}, [], None
    files = sorted(f for f in folder.iterdir() if f.suffix == ".tsv" and f.is_file())
    if not files:
        raise DatasetError(folder, "no .tsv score files (expected the folder of sedkit detect --scores-dir)")
    for f in files:
        try:
            df = read_score_file(f)
        except SedError as e:
            errors.append((f, str(e)))
            continue
        if classes is None:
            classes = list(df.columns[2:])
        elif list(df.columns[2:]) != classes:
            errors.append(
                (f, str(DatasetError(f, f"classes differ from the other files' ({short(classes)})")))
            )
            continue
        scores[f.name[: -len(".tsv")]] = df
    return scores, errors


def evaluate_files(
    predictions: str | os.PathLike,
    ground_truth: str | os.PathLike,
    durations: str | os.PathLike | None = None,
    thresholds: float | dict[str, float] | None = None,
) -> dict:
    """``thresholds``: a number or ``{label: threshold}`` for scores (default 0.5); none for events.
    Returns ``{"kind": "scores" | "events", "macro": {...}, "classes": {label: {...}}, "files": n,
    "silent": [ids scored as silent], "unannotated": [classes left out], "errors": [one line per bad
    prediction file]}``.

    ``predictions``: a folder of score files, or a DCASE events TSV. ``durations`` (a ``filename duration``
    TSV): the files evaluated; a file of it without scores is scored as silent. Without it, score files
    are as long as their frames and every annotated file needs scores; events are evaluated up to the last
    event of each file (segment F1; the other F1s do not depend on durations).
    """
    pred = Path(predictions)
    gt = read_events(ground_truth)
    lengths = None if durations is None else read_durations(durations)
    if pred.is_dir():
        scores, errors = _scores(pred)
        bad = {f.name[: -len(".tsv")] for f, _ in errors}
        if lengths is not None:
            lengths = {k: v for k, v in lengths.items() if k not in bad}
        gt = {k: v for k, v in gt.items() if k not in bad}
        if not scores:
            raise DatasetError(pred, "no readable score files")
        try:
            rep = detection_report(scores, gt, lengths, 0.5 if thresholds is None else thresholds)
        except ValueError as e:
            raise DatasetError(pred, str(e)) from None
        files = len(rep["silent"]) + len(scores)
        return {**rep, "kind": "scores", "files": files, "errors": [e for _, e in errors]}
    if not pred.is_file():
        raise DatasetError(pred, "not found (expected a folder of score files or an events TSV)")
    detections = read_events(pred)
    try:
        labels = sorted({e[2] for side in (gt, detections) for items in side.values() for e in items})
        if thresholds is not None:
            raise ValueError("--thresholds applies to scores; these events are thresholded already")
        rep = event_metrics(detections, gt, lengths, labels=labels, per_class=True)
    except ValueError as e:
        raise DatasetError(pred, str(e)) from None
    files = len(lengths) if lengths is not None else len(set(gt) | set(detections))
    return {**rep, "kind": "events", "files": files, "silent": [], "errors": []}
