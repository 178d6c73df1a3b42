"""Scoring folders of DCASE CSVs (what ``sedkit seld-eval`` runs) and printing the results."""

from __future__ import annotations

import os
import re
from pathlib import Path

from sed.data.corpora.dcase_csv import read_dcase_csv
from sed.errors import DatasetError
from sed.metrics.seld import STARSS_NB_CLASSES, SELDMetrics2023, SELDMetrics2024


def _csv_files(root: Path, what: str) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for p in sorted(root.rglob("*.csv")):
        if p.name.startswith("."):
            continue
        if p.stem in files:
            raise DatasetError(root, f"two {what} files named {p.name}: {files[p.stem]} and {p}")
        files[p.stem] = p
    return files


def evaluate_dirs(
    pred_dir: str | os.PathLike,
    ref_dir: str | os.PathLike,
    year: int = 2023,
    average: str = "macro",
    nb_classes: int | None = None,
    *,
    doa_threshold: float = 20,
    jackknife: bool = False,
) -> tuple[dict, dict]:
    """Score every reference CSV under ``ref_dir`` (recursive) against the prediction CSV of the same
    file stem under ``pred_dir`` (recursive). Returns ``(results, report)``.

    A missing prediction counts as an empty one and is listed in ``report["missing_predictions"]``;
    predictions without a reference are listed in ``report["unmatched_predictions"]``; an unreadable
    file is skipped and its one-line message is put in ``report["errors"]`` (callers should exit
    non-zero then). ``jackknife`` adds 95% CIs (leave-one-file-out) when at least 2 files were scored.
    ``nb_classes=None`` infers ``max class index + 1`` from the data, raised to 13 when
    the reference files are named like STARSS (``fold*_room*_mix*``): macro averaging counts every class.
    """
    pred_root, ref_root = Path(pred_dir), Path(ref_dir)
    for root, what in ((ref_root, "reference"), (pred_root, "prediction")):
        if not root.is_dir():
            raise DatasetError(root, f"{what} directory not found")
    if year not in (2022, 2023, 2024):
        raise ValueError(f"year must be 2022, 2023 or 2024, got {year}")
    refs, preds = _csv_files(ref_root, "reference"), _csv_files(pred_root, "prediction")
    if not refs:
        raise DatasetError(ref_root, "no reference CSV files found")
    errors: list[str] = []
    missing: list[str] = []
    pairs: list[tuple[str, list, list]] = []
    for stem, ref_path in refs.items():
        try:
            ref = read_dcase_csv(ref_path)
            pred = read_dcase_csv(preds[stem]) if stem in preds else []  # missing = empty prediction
        except DatasetError as e:
            errors.append(str(e))
            continue
        missing += [] if stem in preds else [stem]
        pairs.append((stem, pred, ref))
    seen = max((e.cls for _, p, r in pairs for e in (*p, *r)), default=-1) + 1
    source = "given"
    if nb_classes is None:
        nb_classes, source = max(seen, 1), "inferred"
        if all(re.fullmatch(r"fold\d+_room\d+_mix\d+", s) for s in refs) and nb_classes <= STARSS_NB_CLASSES:
            nb_classes, source = STARSS_NB_CLASSES, "starss"
    metric_cls = SELDMetrics2024 if year == 2024 else SELDMetrics2023
    metrics = metric_cls(nb_classes, doa_threshold, average=average)
    evaluated = 0
    for stem, pred, ref in pairs:
        try:
            metrics.update(pred, ref)
            evaluated += 1
        except ValueError as e:
            errors.append(f"{preds.get(stem, refs[stem])}: {e}")
    results = metrics.compute(jackknife=jackknife and evaluated >= 2)
    report = {
        "year": year,
        "average": average,
        "nb_classes": nb_classes,
        "nb_classes_source": source,
        "n_reference_files": len(refs),
        "n_evaluated": evaluated,
        "missing_predictions": missing,
        "unmatched_predictions": [str(p) for s, p in preds.items() if s not in refs],
        "errors": errors,
        "class_wise": {k: [float(x) for x in v] for k, v in metrics.class_wise.items()},
    }
    return results, report


_ROWS = {
    2023: (
        ("ER", "ER_20", 1, "", 3),
        ("F", "F_20", 100, "%", 1),
        ("LE", "LE_CD", 1, "deg", 1),
        ("LR", "LR_CD", 100, "%", 1),
        ("SELD", "SELD", 1, "", 3),
    ),
    2024: (
        ("F", "F_20", 100, "%", 1),
        ("DOAE", "DOAE", 1, "deg", 1),
        ("RDE", "RDE", 1, "", 3),
        ("DistE", "DistE", 1, "m", 2),
        ("SELD", "SELD", 1, "", 3),
    ),
}


def format_results(results: dict, year: int = 2023) -> str:
    """A small aligned text table of the scores (and the jackknife 95% CI when present)."""
    rows = _ROWS[2024 if year == 2024 else 2023]
    jk = results.get("jackknife", {})
    lines = [f"{'metric':<8}{'value':>10}  {'unit':<4}" + ("  95% CI" if jk else "")]
    for key, name, scale, unit, nd in rows:
        if key not in results:
            continue
        line = f"{name:<8}{results[key] * scale:>10.{nd}f}  {unit:<4}"
        if key in jk:
            lo, hi = jk[key]["ci"]
            line += f"  [{lo * scale:.{nd}f}, {hi * scale:.{nd}f}]"
        lines.append(line.rstrip())
    return "\n".join(lines)
