"""Check an ICBHI 2017 folder and count its cycles per split, fold and class (``sedkit prepare icbhi``).

The corpus layout, names and split files are those of :mod:`sed.data.corpora.icbhi`.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path

from sed.audio.io import info
from sed.data.corpora.icbhi import (
    FOLD_FILE,
    LABEL_NAMES,
    NUM_FOLDS,
    SAMPLE_RATE,
    SPLIT_FILE,
    SPLITS,
    lookup_split,
    parse_recording_name,
    read_annotations,
    read_official_split,
    read_patient_folds,
)
from sed.errors import AudioError, DatasetError

__all__ = ["format_icbhi_report", "prepare_icbhi"]


def _count(cycles: list[tuple[str, int, int]], part_of, key) -> dict:
    """Recordings, patients and cycles per class of the cycles ``(stem, patient, label)`` whose part is
    ``key``."""
    sel = [c for c in cycles if part_of(c[0]) == key]
    per_class = Counter(c[2] for c in sel)
    return {
        "recordings": len({c[0] for c in sel}),
        "patients": len({c[1] for c in sel}),
        "cycles": [per_class[k] for k in range(len(LABEL_NAMES))],
    }


def _parses(stem: str) -> bool:
    try:
        parse_recording_name(stem)
    except DatasetError:
        return False
    return True


def prepare_icbhi(root: str | os.PathLike, strict: bool = True) -> dict:
    """Check an ICBHI 2017 folder and count its cycles per split and class.

    Checks that every ``.wav`` has its ``.txt`` and every recording-named ``.txt`` its ``.wav``,
    that names parse, audio headers and annotations read, that ``official_split.txt`` lists
    every recording (under either name, module docstring) and names no missing one, and that
    ``patient_list_foldwise.txt`` (optional: a warning when absent) covers every patient with
    folds 0..4. All problems are collected; with ``strict`` they raise one :class:`DatasetError`
    (``problems`` and ``report`` attributes), else they are in ``report["problems"]``.

    Returns ``{"root", "recordings", "patients", "renamed", "sample_rates": {sr: n}, "splits":
    {"train"|"test"|"all": {"recordings", "patients", "cycles": [per class]}}, "folds": {k:
    {"train", "test"}}, "problems", "warnings"}``; cycles that start after the end of the audio
    (skipped by the dataset) are warnings and not counted."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(root, "ICBHI folder not found")
    problems, warnings = [], []
    wavs = sorted(p.stem for p in root.glob("*.wav"))
    if not wavs:
        problems.append(f"{root}: no .wav recordings found")
    for txt in sorted(root.glob("*.txt")):  # split, fold and metadata files do not parse
        if _parses(txt.stem) and not (root / f"{txt.stem}.wav").is_file():
            problems.append(f"{txt}: annotation without recording {txt.stem}.wav")
    stems, cycles, rates = [], [], Counter()
    for stem in wavs:
        wav = root / f"{stem}.wav"
        try:
            try:
                patient = parse_recording_name(stem).patient
            except DatasetError as e:
                raise DatasetError(wav, e.reason) from None
            if not (root / f"{stem}.txt").is_file():
                raise DatasetError(wav, f"no annotation file {stem}.txt")
            rows = read_annotations(root / f"{stem}.txt")
            meta = info(wav)
        except (DatasetError, AudioError) as e:
            problems.append(str(e))
            continue
        stems.append(stem)
        rates[meta.sample_rate] += 1
        for j, c in enumerate(rows):
            if int(c.start * SAMPLE_RATE) >= math.ceil(meta.duration * SAMPLE_RATE):
                warnings.append(
                    f"{wav}: cycle {j} starts at {c.start} s, after the end ({meta.duration:.3f} s)"
                )
            else:
                cycles.append((stem, patient, c.label))
    parts, renamed = {}, 0
    try:
        table = read_official_split(root / SPLIT_FILE)
        keys = set()
        for s in wavs:  # every recording present, also those with other problems
            parts[s], key = lookup_split(s, table)
            if key is None and _parses(s):
                problems.append(f"{root / SPLIT_FILE}: recording {s} is not listed")
            keys.add(key)
            renamed += s in stems and key is not None and key != s
        problems += [
            f"{root / SPLIT_FILE}: lists {k}, which has no recording" for k in sorted(set(table) - keys)
        ]
    except DatasetError as e:
        problems.append(str(e))
    folds = {}
    if (root / FOLD_FILE).is_file():
        try:
            pf = read_patient_folds(root / FOLD_FILE)
            problems += [
                f"{root / FOLD_FILE}: patient {p} has fold {f}, not 0..{NUM_FOLDS - 1}"
                for p, f in sorted(pf.items())
                if not 0 <= f < NUM_FOLDS
            ]
            problems += [
                f"{root / FOLD_FILE}: patient {p} is not listed"
                for p in sorted({c[1] for c in cycles} | {parse_recording_name(s).patient for s in stems})
                if p not in pf
            ]
            for k in range(NUM_FOLDS):
                test = {p for p, f in pf.items() if f == k}
                folds[k] = {
                    part: _count(
                        cycles,
                        lambda s, t=test: "test" if parse_recording_name(s).patient in t else "train",
                        part,
                    )
                    for part in SPLITS
                }
        except DatasetError as e:
            problems.append(str(e))
    else:
        warnings.append(f"{root / FOLD_FILE}: not found; the 5-fold patient splits are unavailable")
    splits = {part: _count(cycles, parts.get, part) for part in SPLITS}
    splits["all"] = _count(cycles, lambda s: "all", "all")
    report = {
        "root": str(root),
        "recordings": len(stems),
        "patients": len({parse_recording_name(s).patient for s in stems}),
        "renamed": renamed,
        "sample_rates": dict(sorted(rates.items())),
        "splits": splits,
        "folds": folds,
        "problems": problems,
        "warnings": warnings,
    }
    if strict and problems:
        err = DatasetError(root, f"{len(problems)} problem(s) in the ICBHI corpus: {'; '.join(problems)}")
        err.problems, err.report = problems, report
        raise err
    return report


def format_icbhi_report(report: dict) -> str:
    """The report of :func:`prepare_icbhi` as aligned text: cycles per split/fold and class, problems."""
    rates = ", ".join(f"{sr} Hz: {n}" for sr, n in report["sample_rates"].items())
    lines = [
        f"ICBHI corpus {report['root']}: {report['recordings']} recordings, {report['patients']} patients, "
        f"{sum(report['splits']['all']['cycles'])} cycles ({rates}); {report['renamed']} found in "
        f"{SPLIT_FILE} under their renamed form",
        "",
    ]
    rows = [("split", "recordings", "patients", *LABEL_NAMES, "cycles")]
    named = [(k, v) for k, v in report["splits"].items()]
    named += [(f"fold{k} {part}", v[part]) for k, v in report["folds"].items() for part in SPLITS]
    rows += [
        (k, str(v["recordings"]), str(v["patients"]), *map(str, v["cycles"]), str(sum(v["cycles"])))
        for k, v in named
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines += [
        "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths))).rstrip()
        for r in rows
    ]
    for title in ("problems", "warnings"):
        if report[title]:
            lines += ["", f"{title} ({len(report[title])}):", *(f"  {p}" for p in report[title])]
    if not report["problems"]:
        lines += ["", "no problems found"]
    return "\n".join(lines)
