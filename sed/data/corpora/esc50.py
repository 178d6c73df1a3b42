"""ESC-50 (Piczak 2015): 2,000 five-second clips, 50 classes, 5 folds.

Layout: ``<root>/audio/{fold}-{clip_id}-{take}-{target}.wav`` and ``<root>/meta/esc50.csv``
with the header ``filename,fold,target,category,esc10,src_file,take``. The official protocol
is 5-fold cross-validation over the ``fold`` column.

:func:`esc50_items` gives the clips as :class:`~sed.data.clips.ClipItem` s carrying their
official fold; :class:`Esc50Dataset` is a :class:`~sed.data.clips.ClipDataset` over some folds.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from sed.data.clips import ClipDataset, ClipItem
from sed.errors import DatasetError

#: Columns of ``meta/esc50.csv``, in the order of the real file.
META_COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")
META_PATH = Path("meta") / "esc50.csv"
AUDIO_DIR = "audio"


class Esc50Clip(NamedTuple):
    path: Path
    fold: int
    target: int
    category: str
    take: str
    clip_id: int


def read_esc50_meta(root: str | os.PathLike) -> list[Esc50Clip]:
    """Clips listed in ``<root>/meta/esc50.csv``; DatasetError names the file for bad metadata
    and lists missing audio files."""
    root = Path(root)
    meta = root / META_PATH
    if not meta.is_file():
        raise DatasetError(meta, "ESC-50 metadata not found (expected <root>/meta/esc50.csv)")
    clips: list[Esc50Clip] = []
    with open(meta, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in META_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(meta, f"missing column(s) {', '.join(missing)} (header {reader.fieldnames})")
        for lineno, row in enumerate(reader, start=2):
            try:
                clip = Esc50Clip(
                    root / AUDIO_DIR / row["filename"],
                    int(row["fold"]),
                    int(row["target"]),
                    row["category"],
                    row["take"],
                    int(row["src_file"]),
                )
            except (TypeError, ValueError) as e:
                raise DatasetError(meta, f"line {lineno}: {e}") from None
            if clip.fold < 1 or clip.target < 0:
                raise DatasetError(meta, f"line {lineno}: fold must be >= 1 and target >= 0")
            clips.append(clip)
    absent = [c.path.name for c in clips if not c.path.is_file()]
    if absent:
        more = f" and {len(absent) - 3} more" if len(absent) > 3 else ""
        raise DatasetError(
            root / AUDIO_DIR,
            f"{len(absent)} audio file(s) listed in {meta.name} are missing: {', '.join(absent[:3])}{more}",
        )
    return clips


def label_names(clips: Iterable[Esc50Clip]) -> list[str]:
    """Category names indexed by target; DatasetError if targets skip a number or disagree."""
    names: dict[int, str] = {}
    for c in clips:
        if names.setdefault(c.target, c.category) != c.category:
            raise DatasetError(
                c.path, f"target {c.target} is {c.category!r} here but {names[c.target]!r} elsewhere"
            )
    if sorted(names) != list(range(len(names))):
        raise DatasetError(None, f"ESC-50 targets are not 0..{len(names) - 1}: {sorted(names)}")
    return [names[t] for t in range(len(names))]


def esc50_items(root: str | os.PathLike) -> tuple[list[ClipItem], list[str]]:
    """(items, label names) of ESC-50: single-label items with their official fold (1-5)."""
    clips = read_esc50_meta(root)
    return [ClipItem(str(c.path), c.target, fold=c.fold) for c in clips], label_names(clips)


class Esc50Dataset(ClipDataset):
    """ESC-50 clips of ``folds`` (all when None) as a :class:`~sed.data.clips.ClipDataset`."""

    def __init__(self, root: str | os.PathLike, folds: Iterable[int] | None = None, **kwargs):
        items, names = esc50_items(root)
        if folds is not None:
            folds = set(folds)
            items = [it for it in items if it.fold in folds]
        super().__init__(items, names, multi_label=False, **kwargs)
