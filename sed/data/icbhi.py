"""ICBHI 2017 respiratory sound database (../shared/specs/ast-patchmix-icbhi.md 2.1).

Layout: one flat folder of ``{patient}_{index}_{location}_{mode}_{device}.wav`` recordings,
each with a same-stem ``.txt`` of tab-separated cycles ``start end crackles wheezes``;
``official_split.txt`` (``name<TAB>train|test``) and ``patient_list_foldwise.txt``
(``<patient> <fold>``) beside them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from sed.errors import DatasetError

#: Recording devices; the position is the device id used by the Patch-Mix code.
DEVICES = ("Meditron", "LittC2SE", "Litt3200", "AKGC417L")
LOCATIONS = ("Tc", "Al", "Ar", "Pl", "Pr", "Ll", "Lr")
MODES = ("sc", "mc")
#: Cycle labels: (crackles, wheezes) (0,0) -> 0, (1,0) -> 1, (0,1) -> 2, (1,1) -> 3.
LABEL_NAMES = ("normal", "crackle", "wheeze", "both")
SPLITS = ("train", "test")


class RecordingName(NamedTuple):
    patient: int
    index: str
    location: str
    mode: str
    device: str


class Cycle(NamedTuple):
    """One annotated respiratory cycle (times in seconds, flags 0/1)."""

    start: float
    end: float
    crackles: int
    wheezes: int

    @property
    def label(self) -> int:
        return self.crackles + 2 * self.wheezes


def parse_recording_name(stem: str) -> RecordingName:
    """Split ``101_1b1_Al_sc_Meditron``; DatasetError for anything else."""
    parts = stem.split("_")
    problem = None
    if len(parts) != 5:
        problem = f"has {len(parts)} '_'-separated fields, expected 5"
    elif not parts[0].isdigit():
        problem = f"patient {parts[0]!r} is not a number"
    elif not parts[1].isalnum():
        problem = f"recording index {parts[1]!r} is not alphanumeric"
    elif parts[2] not in LOCATIONS:
        problem = f"chest location {parts[2]!r} not in {LOCATIONS}"
    elif parts[3] not in MODES:
        problem = f"mode {parts[3]!r} not in {MODES}"
    elif parts[4] not in DEVICES:
        problem = f"device {parts[4]!r} not in {DEVICES}"
    if problem:
        raise DatasetError(stem, f"not an ICBHI recording name (Patient_Index_Location_Mode_Device): {problem}")
    return RecordingName(int(parts[0]), parts[1], parts[2], parts[3], parts[4])


def read_annotations(txt: str | os.PathLike) -> list[Cycle]:
    """Cycles of one recording; DatasetError names the file and line of a malformed row."""
    path = Path(txt)
    if not path.is_file():
        raise DatasetError(path, "annotation file not found")
    cycles = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            if len(fields) != 4:
                raise ValueError(f"expected 4 fields, got {len(fields)}")
            start, end = float(fields[0]), float(fields[1])
            crackles, wheezes = int(fields[2]), int(fields[3])
            if not 0 <= start < end:
                raise ValueError("need 0 <= start < end")
            if crackles not in (0, 1) or wheezes not in (0, 1):
                raise ValueError("crackle and wheeze flags must be 0 or 1")
        except ValueError as e:
            raise DatasetError(path, f"line {lineno}: {e} in {line.strip()!r}") from None
        cycles.append(Cycle(start, end, crackles, wheezes))
    return cycles


def read_official_split(path: str | os.PathLike) -> dict[str, str]:
    """``{recording name: 'train' | 'test'}`` from ``official_split.txt``."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, "split file not found")
    split: dict[str, str] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in SPLITS:
            raise DatasetError(path, f"line {lineno}: expected '<name>\\ttrain|test', got {line.strip()!r}")
        if fields[0] in split:
            raise DatasetError(path, f"line {lineno}: {fields[0]} listed twice")
        split[fields[0]] = fields[1]
    return split


def read_patient_folds(path: str | os.PathLike) -> dict[int, int]:
    """``{patient: fold}`` from ``patient_list_foldwise.txt`` (``<patient> <fold>`` lines)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, "patient fold file not found")
    folds: dict[int, int] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or not all(f.isdigit() for f in fields):
            raise DatasetError(path, f"line {lineno}: expected '<patient> <fold>', got {line.strip()!r}")
        folds[int(fields[0])] = int(fields[1])
    return folds


def list_recordings(root: str | os.PathLike) -> list[str]:
    """Sorted stems of the ``.wav`` recordings in ``root``; each must have its ``.txt``."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(root, "ICBHI folder not found")
    stems = sorted(p.stem for p in root.glob("*.wav"))
    if not stems:
        raise DatasetError(root, "no .wav recordings found")
    lonely = [s for s in stems if not (root / f"{s}.txt").is_file()]
    if lonely:
        more = f" and {len(lonely) - 3} more" if len(lonely) > 3 else ""
        raise DatasetError(root, f"{len(lonely)} recording(s) without annotation .txt: {', '.join(lonely[:3])}{more}")
    return stems
