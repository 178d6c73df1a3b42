"""DESED (DCASE Task 4) metadata: strong, weak and durations TSVs, and the unlabelled folders.

The tables are tab-separated with a header, as the DESED download scripts and the DCASE 2024
baseline write them:

- strong: ``filename onset offset event_label`` (seconds); MAESTRO's real metadata adds a fifth
  column ``confidence`` (the annotators' soft score in [0, 1]). A row whose onset, offset and label
  are all empty lists a clip without events (pandas writes the baseline's empty clips so).
- weak: ``filename event_labels``, the labels of a clip comma-separated.
- durations: ``filename duration`` (seconds).

Every bad row (wrong column count, a time that is not a finite number >= 0, onset after offset, an
unknown label, a file missing from the audio folder) is one :class:`DatasetError` naming the table
and its line. Readers return ``{filename: [(onset, offset, label name), ...]}``, the ground-truth
format of :mod:`sed.metrics.detection`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from sed.audio.io import find_audio_files
from sed.data.corpora.text import csv_rows
from sed.errors import AudioError, DatasetError, short

__all__ = [
    "DESED_CLASSES",
    "DESED_LAYOUT",
    "read_durations_tsv",
    "read_strong_tsv",
    "read_weak_tsv",
    "unlabeled_files",
]

#: The ten DESED classes, in the order of the baseline's ``classes_labels``.
DESED_CLASSES = [
    "Alarm_bell_ringing",
    "Blender",
    "Cat",
    "Dishes",
    "Dog",
    "Electric_shaver_toothbrush",
    "Frying",
    "Running_water",
    "Speech",
    "Vacuum_cleaner",
]

#: Where each set lies under the DESED root, as the DCASE 2024 baseline's ``confs/pretrained.yaml``
#: names it (16 kHz folders; the 44.1 kHz originals drop the ``_16k``): (audio folder, metadata).
DESED_LAYOUT = {
    "strong": (
        "audio/train/synthetic21_train/soundscapes_16k",
        "metadata/train/synthetic21_train/soundscapes.tsv",
    ),
    "strong_real": ("audio/train/strong_label_real_16k", "metadata/train/audioset_strong.tsv"),
    "weak": ("audio/train/weak_16k", "metadata/train/weak.tsv"),
    "unlabeled": ("audio/train/unlabel_in_domain_16k", None),
    "val": (
        "audio/validation/synthetic21_validation/soundscapes_16k",
        "metadata/validation/synthetic21_validation/soundscapes.tsv",
    ),
    "val_durations": (None, "metadata/validation/synthetic21_validation/durations.tsv"),
    "test": ("audio/validation/validation_16k", "metadata/validation/validation.tsv"),
    "test_durations": (None, "metadata/validation/validation_durations.tsv"),
}


def _table(path: Path, columns: Sequence[Sequence[str]]) -> Iterator[tuple[str, list[str]]]:
    """("line N", cells) of each data row of a TSV whose header is one of ``columns``; ``columns``'
    widths are the accepted row widths."""
    if not path.is_file():
        raise DatasetError(path, "metadata table not found")
    rows = csv_rows(path, delimiter="\t")
    first = next(iter(rows), None)
    header = [c.strip() for c in first[1]] if first else []
    if header not in [list(c) for c in columns]:
        want, got = " or ".join(" ".join(c) for c in columns), " ".join(header)
        raise DatasetError(path, f"line 1: header {short(got)} is not the tab-separated {want}")
    for lineno, cells in rows:
        if not cells or all(not c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            raise DatasetError(
                path, f"line {lineno}: expected {len(header)} tab-separated columns, got {len(cells)}"
            )
        yield f"line {lineno}", [c.strip() for c in cells]


def _seconds(path: Path, where: str, name: str, cell: str) -> float:
    try:
        t = float(cell)
    except ValueError:
        raise DatasetError(path, f"{where}: {name} {short(cell)} is not a number of seconds") from None
    if not (math.isfinite(t) and t >= 0):
        raise DatasetError(path, f"{where}: {name} must be a finite time >= 0, got {short(cell)}")
    return t


def _label(path: Path, where: str, name: str, labels: Sequence[str] | None) -> str:
    if not name:
        raise DatasetError(path, f"{where}: empty event label")
    if labels is not None and name not in labels:
        raise DatasetError(path, f"{where}: label {short(name)} is not one of the {len(labels)} classes")
    return name


def _audio_check(path: Path, where: str, filename: str, audio_dir: Path | None) -> None:
    if not filename:
        raise DatasetError(path, f"{where}: empty filename")
    if audio_dir is not None and not (audio_dir / filename).is_file():
        raise DatasetError(path, f"{where}: audio file {short(filename)} not found in {audio_dir}")


def read_strong_tsv(
    path: str | os.PathLike,
    labels: Sequence[str] | None = DESED_CLASSES,
    audio_dir: str | os.PathLike | None = None,
    scores: bool = False,
) -> dict[str, list[tuple]]:
    """``{filename: [(onset, offset, label), ...]}`` of a strong TSV (see the module docstring), events
    sorted by onset; ``scores=True`` appends each event's confidence (1.0 without that column).
    ``labels=None`` accepts any label; ``audio_dir``: every file must be there."""
    p = Path(path)
    base = ("filename", "onset", "offset", "event_label")
    directory = None if audio_dir is None else Path(audio_dir)
    out: dict[str, list[tuple]] = {}
    for where, cells in _table(p, [base, (*base, "confidence"), (*base, "score")]):
        name = cells[0]
        _audio_check(p, where, name, directory)
        events = out.setdefault(name, [])
        if not any(cells[1:4]):  # a clip without events
            continue
        onset, offset = _seconds(p, where, "onset", cells[1]), _seconds(p, where, "offset", cells[2])
        if onset > offset:
            raise DatasetError(p, f"{where}: onset {cells[1]} is after offset {cells[2]}")
        event = (onset, offset, _label(p, where, cells[3], labels))
        if scores:
            score = 1.0 if len(cells) == 4 else _seconds(p, where, "confidence", cells[4])
            if score > 1.0:
                raise DatasetError(p, f"{where}: confidence {short(cells[4])} is not in [0, 1]")
            event = (*event, score)
        events.append(event)
    for events in out.values():
        events.sort(key=lambda e: (e[0], e[1], e[2]))
    return out


def read_weak_tsv(
    path: str | os.PathLike,
    labels: Sequence[str] | None = DESED_CLASSES,
    audio_dir: str | os.PathLike | None = None,
) -> dict[str, list[str]]:
    """``{filename: [label, ...]}`` of a weak TSV (labels comma-separated; an empty cell: none)."""
    p = Path(path)
    directory = None if audio_dir is None else Path(audio_dir)
    out: dict[str, list[str]] = {}
    for where, (name, cell) in _table(p, [("filename", "event_labels")]):
        _audio_check(p, where, name, directory)
        if name in out:
            raise DatasetError(p, f"{where}: {short(name)} is listed twice")
        names = [n.strip() for n in cell.split(",")] if cell else []
        out[name] = list(dict.fromkeys(_label(p, where, n, labels) for n in names))
    return out


def read_durations_tsv(path: str | os.PathLike) -> dict[str, float]:
    """``{filename: seconds}`` of a durations TSV (every duration finite and > 0)."""
    p = Path(path)
    out: dict[str, float] = {}
    for where, (name, cell) in _table(p, [("filename", "duration")]):
        _audio_check(p, where, name, None)
        t = _seconds(p, where, "duration", cell)
        if t <= 0:
            raise DatasetError(p, f"{where}: duration must be > 0, got {short(cell)}")
        out[name] = t
    return out


def unlabeled_files(folder: str | os.PathLike) -> list[str]:
    """The audio files of an unlabelled folder (recursive, sorted), relative to it."""
    root = Path(folder)
    if not root.is_dir():
        raise DatasetError(root, "unlabelled audio folder not found")
    try:
        return [str(f.relative_to(root)) for f in find_audio_files([root])]
    except AudioError:
        raise DatasetError(root, "unlabelled folder holds no audio files") from None
