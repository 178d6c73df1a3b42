"""DCASE SELD CSV files: reference metadata and system output (../shared/specs/seld.md 1.1, 5).

Rows have no header. Accepted layouts (by column count):

- 4: ``frame,class,azimuth,elevation`` (polar, track 0; DCASE2024 loader)
- 5: ``frame,class,source|track,azimuth,elevation`` (STARSS22, TAU-NIGENS)
- 6: ``frame,class,source,azimuth,elevation,distance`` (STARSS23; distance in cm)
- 7: ``frame,class,track,x,y,z,distance`` (Cartesian system output; distance in m, 0 in 2023)
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import torch

from sed.audio.ambisonics import cartesian_to_polar
from sed.data.corpora.text import csv_rows
from sed.errors import DatasetError, one_line, short
from sed.fileio import atomic_open

#: bounds of the indices a row may hold: a day of 100 ms frames, far more classes and tracks than any corpus
MAX_FRAMES, MAX_CLASSES, MAX_TRACKS = 864_000, 10_000, 100


class SeldEvent(NamedTuple):
    """One active event in one 100 ms label frame. Angles in degrees; distance as in the file."""

    frame: int
    cls: int
    track: int
    azimuth: float
    elevation: float
    distance: float | None = None


def read_dcase_csv(path: str | os.PathLike) -> list[SeldEvent]:
    """Read a reference or prediction CSV; malformed rows raise ``DatasetError`` naming file and line."""
    p = Path(path)
    if not p.is_file():
        raise DatasetError(p, "file not found")
    events: list[SeldEvent] = []
    for lineno, row in csv_rows(p):
        row = [c.strip() for c in row]
        if not row or all(c == "" for c in row):
            continue
        try:
            events.append(_parse_row(row))
        except (ValueError, OverflowError) as e:
            raise DatasetError(
                p, f"line {lineno}: {one_line(e, 120)} in row {short(','.join(row))}"
            ) from None
    return events


def _index(cell: str, what: str, limit: int) -> int:
    """A frame, class or track index: a whole number (``3`` or ``3.0``) in ``[0, limit)``."""
    value = float(cell)
    if not value.is_integer() or not 0 <= value < limit:
        raise ValueError(f"{what} index {short(cell)} is not a whole number in 0..{limit - 1}")
    return int(value)


def _parse_row(row: list[str]) -> SeldEvent:
    n = len(row)
    if n not in (4, 5, 6, 7):
        raise ValueError(f"expected 4 to 7 columns, got {n}")
    frame, cls = _index(row[0], "frame", MAX_FRAMES), _index(row[1], "class", MAX_CLASSES)
    if n == 4:
        return SeldEvent(frame, cls, 0, *_angles(row[2], row[3]))
    if n in (5, 6):
        return SeldEvent(
            frame,
            cls,
            _index(row[2], "track", MAX_TRACKS),
            *_angles(row[3], row[4]),
            _distance(row[5]) if n == 6 else None,
        )
    xyz = torch.tensor([float(row[3]), float(row[4]), float(row[5])], dtype=torch.float64)
    if not torch.isfinite(xyz).all():
        raise ValueError("non-finite coordinates")
    az, el = cartesian_to_polar(xyz)
    return SeldEvent(frame, cls, _index(row[2], "track", MAX_TRACKS), float(az), float(el), _distance(row[6]))


def _angles(azimuth: str, elevation: str) -> tuple[float, float]:
    az, el = float(azimuth), float(elevation)
    if not (-360.0 <= az <= 360.0 and -90.0 <= el <= 90.0):
        raise ValueError("azimuth/elevation out of range")
    return az, el


def _distance(cell: str) -> float:
    d = float(cell)
    if not (math.isfinite(d) and d >= 0):
        raise ValueError(f"distance {short(cell)} is not a finite number >= 0")
    return d


def write_dcase_csv(path: str | os.PathLike, rows: Iterable[Iterable], float_format: str = "{:.4f}") -> None:
    """Write rows atomically; ints stay ints, floats use ``float_format``."""

    def fmt(v) -> str:
        if isinstance(v, bool):
            return str(int(v))
        if isinstance(v, int):
            return str(v)
        if isinstance(v, float) and v.is_integer() and abs(v) < 1e15 and float_format is None:
            return str(int(v))
        return float_format.format(float(v)) if float_format else str(v)

    with atomic_open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        for r in rows:
            w.writerow([fmt(v) for v in r])


def events_by_frame(events: Iterable[SeldEvent]) -> dict[int, list[SeldEvent]]:
    out: dict[int, list[SeldEvent]] = {}
    for e in events:
        out.setdefault(e.frame, []).append(e)
    return out
