"""DCASE SELD CSV files: reference metadata and system output (../shared/specs/seld.md 1.1, 5).

Rows have no header. Accepted layouts (by column count):

- 4: ``frame,class,azimuth,elevation`` (polar, track 0; DCASE2024 loader)
- 5: ``frame,class,source|track,azimuth,elevation`` (STARSS22, TAU-NIGENS)
- 6: ``frame,class,source,azimuth,elevation,distance`` (STARSS23; distance in cm)
- 7: ``frame,class,track,x,y,z,distance`` (Cartesian system output; distance in m, 0 in 2023)
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import torch

from sed.audio.ambisonics import cartesian_to_polar
from sed.errors import DatasetError
from sed.fileio import atomic_open


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
    with open(p, newline="") as f:
        for lineno, row in enumerate(csv.reader(f), start=1):
            row = [c.strip() for c in row]
            if not row or all(c == "" for c in row):
                continue
            try:
                events.append(_parse_row(row))
            except (ValueError, IndexError) as e:
                raise DatasetError(p, f"line {lineno}: {e} in row {','.join(row)!r}") from None
    return events


def _parse_row(row: list[str]) -> SeldEvent:
    n = len(row)
    if n not in (4, 5, 6, 7):
        raise ValueError(f"expected 4 to 7 columns, got {n}")
    frame, cls = int(float(row[0])), int(float(row[1]))
    if frame < 0 or cls < 0:
        raise ValueError("negative frame or class index")
    if n == 4:
        return SeldEvent(frame, cls, 0, float(row[2]), float(row[3]))
    if n in (5, 6):
        az, el = float(row[3]), float(row[4])
        if not (-360.0 <= az <= 360.0 and -90.0 <= el <= 90.0):
            raise ValueError("azimuth/elevation out of range")
        return SeldEvent(frame, cls, int(float(row[2])), az, el, float(row[5]) if n == 6 else None)
    xyz = torch.tensor([float(row[3]), float(row[4]), float(row[5])], dtype=torch.float64)
    if not torch.isfinite(xyz).all():
        raise ValueError("non-finite coordinates")
    az, el = cartesian_to_polar(xyz)
    return SeldEvent(frame, cls, int(float(row[2])), float(az), float(el), float(row[6]))


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
