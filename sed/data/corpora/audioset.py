"""The AudioSet ontology's 527 classes in the order of the public class_labels_indices.csv.

The table ships with the package (sed/data/corpora/audioset_labels.csv, header ``index,mid,display_name``)
and is read once through importlib.resources; pretrained AudioSet taggers take their label names
from here.
"""

from __future__ import annotations

import csv
import io
from functools import lru_cache
from importlib import resources

_FILE = "audioset_labels.csv"


@lru_cache(maxsize=1)
def _rows() -> tuple[tuple[int, str, str], ...]:
    text = resources.files("sed.data.corpora").joinpath(_FILE).read_text(encoding="utf-8")
    rows = []
    for row in csv.DictReader(io.StringIO(text)):
        rows.append((int(row["index"]), row["mid"], row["display_name"]))
    rows.sort(key=lambda r: r[0])
    return tuple(rows)


def audioset_labels() -> list[str]:
    """The 527 AudioSet display names, index order (0 'Speech' ... 526 'Field recording')."""
    return [name for _, _, name in _rows()]


def audioset_mids() -> list[str]:
    """The 527 AudioSet machine ids (Freebase mids, e.g. '/m/09x0r'), index order."""
    return [mid for _, mid, _ in _rows()]


NUM_AUDIOSET_CLASSES = 527
