"""What ``sedkit detect`` writes: event tables (DCASE TSV, CSV, JSON) and timestamped score files.

- **tsv** (the DCASE format): a header ``filename onset offset event_label`` and one row per event, the
  file named by its base name (the file ids of DCASE ground truth); times in seconds, 3 decimals.
- **csv**: ``file,onset,offset,event_label`` with the path as given.
- **json**: ``[{"file", "duration", "events": [{"onset", "offset", "event_label"}]}]``.
- **score files**: one ``<stem>.tsv`` per input in a folder, sed_scores_eval's format
  (:func:`sed_scores_eval.base_modules.io.write_sed_scores`: ``onset offset <class>...``, one row per frame),
  so ``sed_scores_eval`` (and ``sedkit sed-eval``) read them back; written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sed.errors import DatasetError, one_line, printable
from sed.fileio import atomic_open

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
    """The score file of input ``name`` in ``folder``: ``<stem>.tsv`` (sed_scores_eval's audio id)."""
    return Path(folder) / f"{Path(name).stem}.tsv"


def write_scores(path: str | os.PathLike, probs: np.ndarray, hop: float, labels: Sequence[str]) -> Path:
    """Frame probabilities ``[F, C]`` as a sed_scores_eval score file (frame ``i``: ``[i hop, (i+1) hop)``),
    atomically."""
    from sed_scores_eval.base_modules.io import write_sed_scores

    timestamps = np.arange(len(probs) + 1) * hop
    with atomic_open(path, "w") as f:
        write_sed_scores(np.asarray(probs, dtype=float), f, timestamps=timestamps, event_classes=list(labels))
    return Path(path)


def read_scores(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(frame boundaries ``[F + 1]`` s, scores ``[F, C]``, class names) of a score file; a file that is not
    one is a one-line :class:`DatasetError`."""
    from sed_scores_eval.base_modules.io import read_sed_scores

    try:
        df = read_sed_scores(str(path))
    except Exception as e:  # pandas' and sed_scores_eval's reasons: empty, ragged, missing columns
        raise DatasetError(path, f"not a sed_scores_eval score file ({one_line(e)})") from None
    labels = [c for c in df.columns if c not in ("onset", "offset")]
    t = np.concatenate([df["onset"].to_numpy(float), df["offset"].to_numpy(float)[-1:]])
    return t, df[labels].to_numpy(float), labels
