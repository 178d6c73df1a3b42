"""STARSS22/23 (DCASE Task 3) development set layout (../shared/specs/seld.md 1.1).

``<root>/{foa,mic}_dev/<split>/fold{F}_room{R}_mix{M:03d}.wav`` (4 channels, 24 kHz) with
``<root>/metadata_dev/<split>/<same stem>.csv`` (rows read by
:func:`sed.data.dcase_csv.read_dcase_csv`). Splits are ``dev-train-*`` (fold 3) and
``dev-test-*`` (fold 4).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from sed.errors import DatasetError

FORMATS = ("foa", "mic")
METADATA_DIR = "metadata_dev"
SAMPLE_RATE = 24000
FRAME_SECONDS = 0.1
#: Rooms of the STARSS23 development folds (train = fold 3, test = fold 4).
TRAIN_ROOMS = (4, 6, 7, 9, 12, 13, 14, 21, 22)
TEST_ROOMS = (2, 8, 10, 15, 16, 23, 24)

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


def list_starss_pairs(root: str | os.PathLike, fmt: str = "foa") -> list[tuple[Path, Path]]:
    """Sorted ``(wav, csv)`` pairs of ``<fmt>_dev/<split>/`` and ``metadata_dev/<split>/``.

    DatasetError if a folder is missing or any audio or metadata file lacks its partner."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    root = Path(root)
    audio_dir, meta_dir = root / f"{fmt}_dev", root / METADATA_DIR
    for d in (audio_dir, meta_dir):
        if not d.is_dir():
            raise DatasetError(d, "STARSS folder not found")
    wavs = {p.relative_to(audio_dir).with_suffix(""): p for p in audio_dir.glob("*/*.wav")}
    csvs = {p.relative_to(meta_dir).with_suffix(""): p for p in meta_dir.glob("*/*.csv")}
    unmatched = sorted(
        [f"{fmt}_dev/{k}.wav (no csv)" for k in wavs.keys() - csvs.keys()]
        + [f"{METADATA_DIR}/{k}.csv (no wav)" for k in csvs.keys() - wavs.keys()]
    )
    if unmatched:
        more = f" and {len(unmatched) - 5} more" if len(unmatched) > 5 else ""
        raise DatasetError(root, f"{len(unmatched)} unmatched file(s): {', '.join(unmatched[:5])}{more}")
    if not wavs:
        raise DatasetError(audio_dir, "no .wav files in its split folders")
    return [(wavs[k], csvs[k]) for k in sorted(wavs)]
