"""What ``sedkit detect`` writes: event tables (DCASE TSV, CSV, JSON) and timestamped score files.

- **tsv** (the DCASE format): a header ``filename onset offset event_label`` and one row per event, the
  file named by its base name (the file ids of DCASE ground truth); times in seconds, 3 decimals.
- **csv**: ``file,onset,offset,event_label`` with the path as given.
- **json**: ``[{"file", "duration", "events": [{"onset", "offset", "event_label"}]}]``.
- **score files**: one ``<file id>.tsv`` per input in a folder, sed_scores_eval's format (``onset offset
  <class>...``, one row per frame; :mod:`sed.metrics.detection_io`), so ``sed_scores_eval`` (and ``sedkit
  sed-eval``) read them back; written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sed.errors import printable
from sed.metrics.detection import frame_scores
from sed.metrics.detection_io import file_id, read_score_file
from sed.metrics.detection_io import write_scores as save

__all__ = ["FORMATS", "format_events", "read_scores", "score_file", "write_scores"]

FORMATS = ("tsv", "csv", "json")


def format_events(detections: Sequence, fmt: str = "tsv") -> str:
    """The events of ``detections`` (:class:`~sed.inference.detect.Detection` without ``error``) as text."""
    ok = [d for d in detections if d.error is None]
    if fmt == "json":
        rows = [
            {
                "file": d.name,
                "duration": round(d.duration, 6),
                "events": [
                    {"onset": round(a, 3), "offset": round(b, 3), "event_label": lab}
                    for a, b, lab in d.events
                ],
            }
            for d in ok
        ]
        return json.dumps(rows, indent=1, ensure_ascii=False)
    if fmt not in ("tsv", "csv"):
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    buf = io.StringIO()
    if fmt == "csv":
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["file", "onset", "offset", "event_label"])
        for d in ok:
            w.writerows([d.name, f"{a:.3f}", f"{b:.3f}", lab] for a, b, lab in d.events)
    else:
        buf.write("filename\tonset\toffset\tevent_label\n")
        for d in ok:
            name = printable(Path(d.name).name)  # a tab or newline in a name cannot break the table
            buf.writelines(f"{name}\t{a:.3f}\t{b:.3f}\t{lab}\n" for a, b, lab in d.events)
    return buf.getvalue().rstrip("\n")


def score_file(folder: str | os.PathLike, name: str) -> Path:
    """The score file of input ``name`` in ``folder``: ``<file id>.tsv`` (the name without its extension, as
    sed_scores_eval keys it: :func:`sed.metrics.detection_io.file_id`)."""
    return Path(folder) / f"{file_id(Path(name).name)}.tsv"


def write_scores(
    path: str | os.PathLike, probs: np.ndarray, hop: float, labels: Sequence[str], offset: float = 0.0
) -> Path:
    """Frame probabilities ``[F, C]`` as a sed_scores_eval score file (frame ``i``: ``offset + [i, i + 1) *
    hop``), atomically (:func:`sed.metrics.detection.frame_scores`,
    :func:`sed.metrics.detection_io.write_scores`)."""
    save(frame_scores(probs, hop, labels, offset), path)
    return Path(path)


def read_scores(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(frame boundaries ``[F + 1]`` s, scores ``[F, C]``, class names) of a score file; a file that is not
    one is a one-line :class:`DatasetError` naming the line
    (:func:`sed.metrics.detection_io.read_score_file`)."""
    df = read_score_file(path)
    labels = list(df.columns[2:])
    t = np.concatenate([df["onset"].to_numpy(float), df["offset"].to_numpy(float)[-1:]])
    return t, df[labels].to_numpy(float), labels
