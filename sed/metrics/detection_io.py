"""The files of sound event detection evaluation, read line by line with one-line errors.

- DCASE event TSVs (``filename onset offset event_label``): the strong ground truth, and the events that
  ``sedkit detect`` writes. A row with an empty onset, offset and label lists a file without events.
- Durations TSVs (``filename duration``, seconds), as DESED ships them.
- Score folders: one ``<file id>.tsv`` per audio file in ``sed_scores_eval``'s layout (``onset offset
  <class> ...``, one row per frame, each frame's onset the previous frame's offset).

A file id is the file name without its extension (``Y-abc.wav`` -> ``Y-abc``), as in ``sed_scores_eval``.
Every problem is a :class:`~sed.errors.DatasetError` naming the file and the line.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from sed.data.corpora.desed import read_durations_tsv, read_strong_tsv
from sed.data.corpora.text import csv_rows
from sed.errors import DatasetError, short
from sed.fileio import atomic_open

__all__ = [
    "Events",
    "file_id",
    "read_durations",
    "read_events",
    "read_score_file",
    "read_scores",
    "write_events",
    "write_scores",
]

#: file id -> [(onset, offset, label)]
Events = dict[str, list[tuple[float, float, str]]]

EVENT_COLUMNS = ("filename", "onset", "offset", "event_label")


def file_id(filename: str) -> str:
    """The id of an audio file name: the name without its extension, as ``sed_scores_eval`` keys it."""
    return filename.rsplit(".", maxsplit=1)[0] if "." in filename else filename


def read_events(path: str | os.PathLike, labels: list[str] | None = None) -> Events:
    """The events of a DCASE TSV by file id (read by :func:`sed.data.corpora.desed.read_strong_tsv`).
    With ``labels``, a label outside them is an error. Events must last, and events of one class in one
    file may neither overlap nor touch (``sed_scores_eval`` needs them disjoint)."""
    p = Path(path)
    events: Events = {}
    for name, items in read_strong_tsv(p, labels=labels).items():
        key = file_id(name)
        if key in events:
            raise DatasetError(p, f"{short(name)}: a second file with the id {short(key)}")
        by_class: dict[str, list[tuple[float, float]]] = {}
        for onset, offset, label in items:
            if offset <= onset:
                raise DatasetError(p, f"{short(name)}: {short(label)} event at {onset:g} s does not last")
            by_class.setdefault(label, []).append((onset, offset))
        for label, spans in by_class.items():
            spans.sort()
            for (a, b), (c, d) in zip(spans, spans[1:]):
                if c <= b:
                    raise DatasetError(
                        p,
                        f"{short(name)}: {short(label)} events [{a:g}, {b:g}] and [{c:g}, {d:g}] overlap or "
                        "touch (events of one class must be disjoint; merge them)",
                    )
        events[key] = [(float(on), float(off), str(lab)) for on, off, lab in items]
    return events


def read_durations(path: str | os.PathLike) -> dict[str, float]:
    """File id -> duration in seconds of a ``filename duration`` TSV."""
    return {file_id(name): t for name, t in read_durations_tsv(path).items()}


def read_score_file(path: str | os.PathLike):
    """One score TSV as a ``sed_scores_eval`` score DataFrame (frames contiguous, scores finite)."""
    import pandas as pd

    p = Path(path)
    rows = csv_rows(p, delimiter="\t")
    first = next(rows, None)
    if first is None:
        raise DatasetError(p, "empty file (expected a header onset offset <class> ...)")
    names = [c.strip() for c in first[1]]
    if len(names) < 3 or names[:2] != ["onset", "offset"] or not all(names[2:]):
        raise DatasetError(p, f"line 1: header {short(' '.join(names))} is not onset offset <class> ...")
    if len(set(names)) != len(names):
        raise DatasetError(p, "line 1: a class is named twice")
    values = []
    previous = None
    for lineno, cells in rows:
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(names):
            raise DatasetError(p, f"line {lineno}: {len(cells)} field(s), expected {len(names)}")
        try:
            row = [float(c) for c in cells]
        except ValueError:
            raise DatasetError(p, f"line {lineno}: a value is not a number") from None
        if not all(math.isfinite(v) for v in row):
            raise DatasetError(p, f"line {lineno}: a value is not finite")
        if row[0] < 0 or row[1] <= row[0]:
            raise DatasetError(p, f"line {lineno}: frame [{cells[0]}, {cells[1]}) is not a time span >= 0")
        if previous is not None and row[0] != previous:
            raise DatasetError(p, f"line {lineno}: onset {cells[0]} is not the previous frame's offset")
        previous = row[1]
        values.append(row)
    if not values:
        raise DatasetError(p, "no frames")
    return pd.DataFrame(np.asarray(values, dtype=np.float64), columns=names)


def read_scores(folder: str | os.PathLike) -> dict:
    """File id -> score DataFrame of every ``*.tsv`` in ``folder``; all files must name the same classes."""
    d = Path(folder)
    if not d.is_dir():
        raise DatasetError(d, "not a folder of score files")
    scores = {}
    classes = None
    for f in sorted(d.glob("*.tsv")):
        df = read_score_file(f)
        if classes is None:
            classes = list(df.columns[2:])
        elif list(df.columns[2:]) != classes:
            raise DatasetError(f, f"classes differ from those of the other score files ({short(classes)})")
        scores[f.name[: -len(".tsv")]] = df
    if not scores:
        raise DatasetError(d, "no .tsv score files")
    return scores


def write_scores(df, path: str | os.PathLike) -> None:
    """One score DataFrame as a TSV (complete or absent), readable by ``sed_scores_eval.io``."""
    with atomic_open(path, "w", newline="") as f:
        df.to_csv(f, sep="\t", index=False, lineterminator="\n")


def write_events(events: Events, path: str | os.PathLike, extension: str = "") -> None:
    """A DCASE event TSV (complete or absent); ``extension`` (e.g. ``.wav``) is added to each file id."""
    with atomic_open(path, "w", newline="") as f:
        f.write("\t".join(EVENT_COLUMNS) + "\n")
        for key in sorted(events):
            for onset, offset, label in sorted(events[key]):
                f.write(f"{key}{extension}\t{onset:.3f}\t{offset:.3f}\t{label}\n")
