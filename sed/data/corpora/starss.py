"""STARSS22/23 (DCASE Task 3) development set: layout, metadata, ADPIT targets, corpus check
(../shared/specs/seld.md 1.1, 1.2, 3.1).

``<root>/{foa,mic}_dev/<split>/fold{F}_room{R}_mix{M:03d}.wav`` (4 channels, 24 kHz) with
``<root>/metadata_dev/<split>/<same stem>.csv`` (rows read by
:func:`sed.data.corpora.dcase_csv.read_dcase_csv`). Splits are ``dev-train-*`` (fold 3) and
``dev-test-*`` (fold 4). The same metadata layout with a track column is read for
TAU-NIGENS 2020/2021 (:func:`read_tau_metadata`).
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sed.audio.ambisonics import polar_to_cartesian
from sed.audio.io import info
from sed.data.corpora.dcase_csv import SeldEvent, read_dcase_csv
from sed.errors import DatasetError, SedError

FORMATS = ("foa", "mic")
METADATA_DIR = "metadata_dev"
SAMPLE_RATE = 24000
NUM_CHANNELS = 4
FRAME_SECONDS = 0.1
NUM_CLASSES = 13
CLASS_NAMES = (
    "Female speech",
    "Male speech",
    "Clapping",
    "Telephone",
    "Laughter",
    "Domestic sounds",
    "Walk/footsteps",
    "Door open/close",
    "Music",
    "Musical instrument",
    "Water tap",
    "Bell",
    "Knock",
)
#: Rooms of the STARSS23 development folds (train = fold 3, test = fold 4).
TRAIN_ROOMS = (4, 6, 7, 9, 12, 13, 14, 21, 22)
TEST_ROOMS = (2, 8, 10, 15, 16, 23, 24)
#: ADPIT slots (dim 1 of the targets): A0 | B0 B1 | C0 C1 C2.
ADPIT_SLOTS = 6

_STEM = re.compile(r"fold(\d+)_room(\d+)_mix(\d+)")


def format_stem(fold: int, room: int, mix: int) -> str:
    return f"fold{fold}_room{room}_mix{mix:03d}"


def parse_fold_room(filename: str | os.PathLike) -> tuple[int, int, int]:
    """``(fold, room, mix)`` of ``fold3_room4_mix001`` (with or without folder and extension)."""
    stem = Path(filename).name.split(".")[0]
    m = _STEM.fullmatch(stem)
    if m is None:
        raise DatasetError(filename, "not a STARSS file name (expected fold<F>_room<R>_mix<M>)")
    return int(m[1]), int(m[2]), int(m[3])


_NO_FOLDER, _NO_AUDIO = "STARSS folder not found", "no .wav files in its split folders"


def _scan_pairs(root: Path, fmt: str) -> tuple[list[tuple[Path, Path]], list[tuple[Path, str]]]:
    """Matched ``(wav, csv)`` pairs and ``(path, reason)`` per missing folder or unmatched file."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    audio_dir, meta_dir = root / f"{fmt}_dev", root / METADATA_DIR
    missing = [(d, _NO_FOLDER) for d in (audio_dir, meta_dir) if not d.is_dir()]
    if missing:
        return [], missing
    wavs = {p.relative_to(audio_dir).with_suffix(""): p for p in audio_dir.glob("*/*.wav")}
    csvs = {p.relative_to(meta_dir).with_suffix(""): p for p in meta_dir.glob("*/*.csv")}
    if not wavs and not csvs:
        return [], [(audio_dir, _NO_AUDIO)]
    problems = sorted(
        [(wavs[k], f"no metadata file {meta_dir / k}.csv") for k in wavs.keys() - csvs.keys()]
        + [(csvs[k], f"no audio file {audio_dir / k}.wav") for k in csvs.keys() - wavs.keys()]
    )
    return [(wavs[k], csvs[k]) for k in sorted(wavs.keys() & csvs.keys())], problems


def list_starss_pairs(root: str | os.PathLike, fmt: str = "foa") -> list[tuple[Path, Path]]:
    """Sorted ``(wav, csv)`` pairs of ``<fmt>_dev/<split>/`` and ``metadata_dev/<split>/``.

    DatasetError if a folder is missing or any audio or metadata file lacks its partner."""
    root = Path(root)
    pairs, problems = _scan_pairs(root, fmt)
    if problems and problems[0][1] in (_NO_FOLDER, _NO_AUDIO):
        raise DatasetError(*problems[0])
    if problems:
        lines = [f"{p}: {r}" for p, r in problems]
        more = f" and {len(lines) - 5} more" if len(lines) > 5 else ""
        raise DatasetError(root, f"{len(lines)} unmatched file(s): {'; '.join(lines[:5])}{more}")
    return pairs


# ---------------------------------------------------------------- metadata


@dataclass(frozen=True, eq=False)
class SeldLabels:
    """The events of one metadata file as arrays (one entry per CSV row, file order).

    ``track`` is the source index (STARSS) or track index (TAU-NIGENS); angles in degrees;
    ``distance`` in cm as in the file, NaN where the file has no distance column."""

    path: str
    frame: np.ndarray
    cls: np.ndarray
    track: np.ndarray
    azimuth: np.ndarray
    elevation: np.ndarray
    distance: np.ndarray

    @classmethod
    def from_events(cls, events: Iterable[SeldEvent], path: str | os.PathLike = "") -> SeldLabels:
        ev = list(events)
        ints = np.array([(e.frame, e.cls, e.track) for e in ev], dtype=np.int64).reshape(-1, 3)
        flt = np.array(
            [(e.azimuth, e.elevation, np.nan if e.distance is None else e.distance) for e in ev],
            dtype=np.float64,
        ).reshape(-1, 3)
        return cls(os.fspath(path), *ints.T.copy(), *flt.T.copy())

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def has_distance(self) -> bool:
        return bool(np.isfinite(self.distance).all())

    @property
    def num_frames(self) -> int:
        """Last annotated frame + 1 (0 without events)."""
        return int(self.frame.max()) + 1 if len(self) else 0

    def events(self) -> list[SeldEvent]:
        return [
            SeldEvent(int(f), int(c), int(t), float(a), float(e), None if np.isnan(d) else float(d))
            for f, c, t, a, e, d in zip(
                self.frame, self.cls, self.track, self.azimuth, self.elevation, self.distance
            )
        ]

    def class_counts(self, num_classes: int) -> np.ndarray:
        """Event frames (rows) per class."""
        return np.bincount(self.cls, minlength=num_classes)


def _read_metadata(path: str | os.PathLike, columns: tuple[int, ...], corpus: str) -> SeldLabels:
    p = Path(path)
    events = read_dcase_csv(p)  # parses and names file and line on errors
    with open(p, newline="") as f:
        for lineno, row in enumerate(csv.reader(f), start=1):
            n = len(row) if any(c.strip() for c in row) else 0
            if n and n not in columns:
                want = " or ".join(map(str, columns))
                raise DatasetError(p, f"line {lineno}: expected {want} columns ({corpus} metadata), got {n}")
    return SeldLabels.from_events(events, p)


def read_starss_metadata(path: str | os.PathLike) -> SeldLabels:
    """STARSS22 (5 columns) or STARSS23 (6 columns, distance in cm) metadata; third column = source."""
    return _read_metadata(path, (5, 6), "STARSS")


def read_tau_metadata(path: str | os.PathLike) -> SeldLabels:
    """TAU-NIGENS Spatial Sound Events 2020/2021 metadata: 5 columns, third = track index."""
    return _read_metadata(path, (5,), "TAU-NIGENS")


def adpit_targets(
    events: SeldLabels | Iterable[SeldEvent],
    num_frames: int,
    num_classes: int = NUM_CLASSES,
    with_distance: bool = False,
    start_frame: int = 0,
) -> torch.Tensor:
    """ADPIT label tensor ``[num_frames, 6, 4, C]`` (``[.., 5, C]`` with distance in metres).

    Dim 1: 0 = A0 (one instance of the class in the frame), 1-2 = B0, B1 (two), 3-5 = C0, C1,
    C2 (three or more; the first three in file order are kept). Dim 2: activity, x, y, z
    (unit vector of azimuth/elevation) [, distance = cm / 100]. Events outside
    ``[start_frame, start_frame + num_frames)`` are dropped; frame ``start_frame`` is row 0
    (a window of a file's targets)."""
    labels = events if isinstance(events, SeldLabels) else SeldLabels.from_events(events)
    dims = 5 if with_distance else 4
    out = torch.zeros(num_frames, ADPIT_SLOTS, num_classes, dims)
    keep = (labels.frame >= start_frame) & (labels.frame < start_frame + num_frames)
    frame, cls = labels.frame[keep] - start_frame, labels.cls[keep]
    bad = (cls < 0) | (cls >= num_classes)
    if bad.any():
        raise DatasetError(
            labels.path or None, f"class index {int(cls[bad][0])} out of range for {num_classes} classes"
        )
    if with_distance and not np.isfinite(labels.distance[keep]).all():
        raise DatasetError(labels.path or None, "distance targets need metadata with a distance column")
    if not len(frame):
        return out.permute(0, 1, 3, 2).contiguous()
    order = np.lexsort((cls, frame))  # stable: file order within a (frame, class) group
    group = frame[order] * num_classes + cls[order]
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    sizes = np.diff(np.r_[starts, len(group)])
    size = np.repeat(sizes, sizes)
    rank = np.arange(len(group)) - np.repeat(starts, sizes)
    slot = np.where(size == 1, 0, np.where(size == 2, 1 + rank, 3 + rank))
    ok = rank < 3
    idx = order[ok]
    vals = torch.empty(len(idx), dims)
    vals[:, 0] = 1.0
    vals[:, 1:4] = polar_to_cartesian(
        torch.from_numpy(labels.azimuth[keep][idx]), torch.from_numpy(labels.elevation[keep][idx])
    ).float()
    if with_distance:
        vals[:, 4] = torch.from_numpy(labels.distance[keep][idx] / 100.0).float()
    out[torch.from_numpy(frame[idx]), torch.from_numpy(slot[ok]), torch.from_numpy(cls[idx])] = vals
    return out.permute(0, 1, 3, 2).contiguous()


# ---------------------------------------------------------------- corpus check


def _check_pair(
    wav: Path, meta_csv: Path, num_classes: int, problems: list[str], warnings: list[str]
) -> dict:
    fold, room, mix = parse_fold_room(wav)
    rec = {
        "audio": str(wav),
        "metadata": str(meta_csv),
        "split": wav.parent.name,
        "fold": fold,
        "room": room,
        "mix": mix,
        "duration": None,
        "label_frames": None,
        "event_frames": None,
    }
    try:
        a = info(wav)
        if a.channels != NUM_CHANNELS:
            problems.append(f"{wav}: has {a.channels} channel(s), expected {NUM_CHANNELS}")
        if a.sample_rate != SAMPLE_RATE:
            problems.append(f"{wav}: sample rate {a.sample_rate} Hz, expected {SAMPLE_RATE}")
        rec["duration"] = a.duration
        rec["label_frames"] = int(a.frames / round(a.sample_rate * FRAME_SECONDS))
    except SedError as e:
        problems.append(str(e))
    try:
        labels = read_starss_metadata(meta_csv)
    except SedError as e:
        problems.append(str(e))
        return rec
    bad = labels.cls >= num_classes
    if bad.any():
        problems.append(
            f"{meta_csv}: class index {int(labels.cls.max())} out of range for {num_classes} classes "
            f"({int(bad.sum())} row(s))"
        )
    rec["event_frames"] = labels.class_counts(num_classes)[:num_classes].tolist()
    late = int((labels.frame >= rec["label_frames"]).sum()) if rec["label_frames"] is not None else 0
    if late:
        warnings.append(
            f"{meta_csv}: {late} row(s) after the end of the audio ({rec['label_frames']} label "
            "frames); the targets drop them"
        )
    return rec


def prepare_starss(
    root: str | os.PathLike, fmt: str = "foa", num_classes: int = NUM_CLASSES, strict: bool = True
) -> dict:
    """Check a STARSS22/23 development corpus and count it.

    Checks that every audio file has its metadata file and vice versa, that file names parse,
    that audio is readable, 4-channel and 24 kHz, and that metadata rows parse (5 or 6
    columns) with class indices below ``num_classes``. Every problem is collected (one line
    each, naming its file). With ``strict`` (default) any problem raises one
    :class:`DatasetError` listing them all (also in its ``problems`` attribute, the report in
    ``report``); otherwise they are returned in ``report["problems"]``.

    Returns ``{"root", "format", "num_classes", "files": [per-file record], "folds": {fold:
    {"files", "duration", "label_frames", "rooms", "splits", "event_frames": [per class]}},
    "total": {...same...}, "problems": [...], "warnings": [...]}``; durations in seconds,
    event frames = metadata rows per class (files whose metadata failed count 0)."""
    root = Path(root)
    pairs, unmatched = _scan_pairs(root, fmt)
    problems = [f"{p}: {r}" for p, r in unmatched]
    warnings: list[str] = []
    files = []
    for wav, meta_csv in pairs:
        try:
            files.append(_check_pair(wav, meta_csv, num_classes, problems, warnings))
        except DatasetError as e:  # file name
            problems.append(str(e))

    def summary(recs: list[dict]) -> dict:
        return {
            "files": len(recs),
            "duration": sum(r["duration"] or 0.0 for r in recs),
            "label_frames": sum(r["label_frames"] or 0 for r in recs),
            "rooms": sorted({r["room"] for r in recs}),
            "splits": sorted({r["split"] for r in recs}),
            "event_frames": [
                sum((r["event_frames"] or [0] * num_classes)[c] for r in recs) for c in range(num_classes)
            ],
        }

    folds = {f: summary([r for r in files if r["fold"] == f]) for f in sorted({r["fold"] for r in files})}
    report = {
        "root": str(root),
        "format": fmt,
        "num_classes": num_classes,
        "files": files,
        "folds": folds,
        "total": summary(files),
        "problems": problems,
        "warnings": warnings,
    }
    if strict and problems:
        err = DatasetError(root, f"{len(problems)} problem(s) in the STARSS corpus: {'; '.join(problems)}")
        err.problems, err.report = problems, report
        raise err
    return report


def format_prepare_report(report: dict) -> str:
    """The report of :func:`prepare_starss` as aligned text: folds, events per class, problems."""
    folds, total, c = report["folds"], report["total"], report["num_classes"]
    lines = [
        f"STARSS corpus {report['root']} ({report['format']}): {total['files']} files, "
        f"{total['duration'] / 60:.1f} min, {sum(total['event_frames'])} event frames",
        "",
    ]
    rows = [("fold", "files", "minutes", "label frames", "rooms", "splits")]
    rows += [
        (
            str(f),
            str(s["files"]),
            f"{s['duration'] / 60:.1f}",
            str(s["label_frames"]),
            ",".join(map(str, s["rooms"])),
            ",".join(s["splits"]),
        )
        for f, s in folds.items()
    ]
    rows.append(
        ("all", str(total["files"]), f"{total['duration'] / 60:.1f}", str(total["label_frames"]), "", "")
    )
    lines += _table(rows, right=(1, 2, 3))
    names = CLASS_NAMES if c == len(CLASS_NAMES) else [""] * c
    rows = [("class", "name", *(f"fold{f}" for f in folds), "total")]
    rows += [
        (
            str(k),
            names[k],
            *(str(s["event_frames"][k]) for s in folds.values()),
            str(total["event_frames"][k]),
        )
        for k in range(c)
    ]
    lines += ["", "event frames (metadata rows) per class:", *_table(rows, right=range(2, len(folds) + 3))]
    for title in ("problems", "warnings"):
        if report[title]:
            lines += ["", f"{title} ({len(report[title])}):", *(f"  {p}" for p in report[title])]
    if not report["problems"]:
        lines += ["", "no problems found"]
    return "\n".join(lines)


def _table(rows: list[tuple[str, ...]], right: Iterable[int] = ()) -> list[str]:
    right = set(right)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            v.rjust(w) if i in right else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths))
        ).rstrip()
        for r in rows
    ]
