"""ICBHI 2017 respiratory sound database (../shared/specs/ast-patchmix-icbhi.md 2.1).

Layout: one flat folder of ``{patient}_{index}_{location}_{mode}_{device}.wav`` recordings,
each with a same-stem ``.txt`` of tab-separated cycles ``start end crackles wheezes``;
``official_split.txt`` (``name<TAB>train|test``) and ``patient_list_foldwise.txt``
(``<patient> <fold>``) beside them.

Renamed recordings: the Patch-Mix/SCL reference renames 91 archive recordings
(``*_AKGC417L``, ``*_LittC2SE``) to ``*_Meditron`` so that they match its
``official_split.txt``. Here both names work: a recording is looked up in the split file
under its own name first, then under the other form (``X_AKGC417L`` / ``X_LittC2SE`` ->
``X_Meditron``; ``X_Meditron`` -> ``X_AKGC417L``, then ``X_LittC2SE``); see :func:`name_aliases`.

Cycles (:func:`load_recording`, :func:`slice_cycle`, :func:`fix_length`) follow the reference's
``get_individual_cycles_torchaudio`` and ``cut_pad_sample_torchaudio`` (spec 2.1) exactly.
Checking a corpus folder and counting its cycles: :mod:`sed.data.corpora.icbhi_prepare`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torchaudio

from sed.audio.io import load_audio
from sed.data.clips import ClipItem
from sed.errors import DatasetError

#: Recording devices; the position is the device id used by the Patch-Mix code.
DEVICES = ("Meditron", "LittC2SE", "Litt3200", "AKGC417L")
LOCATIONS = ("Tc", "Al", "Ar", "Pl", "Pr", "Ll", "Lr")
MODES = ("sc", "mc")
#: Cycle labels: (crackles, wheezes) (0,0) -> 0, (1,0) -> 1, (0,1) -> 2, (1,1) -> 3.
LABEL_NAMES = ("normal", "crackle", "wheeze", "both")
SPLITS = ("train", "test")
SPLIT_FILE, FOLD_FILE = "official_split.txt", "patient_list_foldwise.txt"
NUM_FOLDS = 5
#: The reference renames these archive devices to ``RENAMED_TO`` (spec 2.1, ``script.sh``).
RENAMED_FROM, RENAMED_TO = ("AKGC417L", "LittC2SE"), "Meditron"
SAMPLE_RATE = 16000


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
        raise DatasetError(
            stem, f"not an ICBHI recording name (Patient_Index_Location_Mode_Device): {problem}"
        )
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
        raise DatasetError(
            root, f"{len(lonely)} recording(s) without annotation .txt: {', '.join(lonely[:3])}{more}"
        )
    return stems


# ---------------------------------------------------------------- names and splits


def name_aliases(stem: str) -> list[str]:
    """Other names of one recording: ``X_AKGC417L``/``X_LittC2SE`` <-> ``X_Meditron`` (module docstring)."""
    head, _, device = stem.rpartition("_")
    if device in RENAMED_FROM:
        return [f"{head}_{RENAMED_TO}"]
    return [f"{head}_{d}" for d in RENAMED_FROM] if device == RENAMED_TO else []


def lookup_split(stem: str, table: dict[str, str]) -> tuple[str | None, str | None]:
    """``(part, key)`` of a recording in an official split table: its own name first, then its aliases."""
    for key in (stem, *name_aliases(stem)):
        if key in table:
            return table[key], key
    return None, None


def _fold_arg(fold) -> str | int:
    if fold == "official":
        return fold
    if isinstance(fold, str) and fold.isdigit():
        fold = int(fold)
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < NUM_FOLDS:
        raise ValueError(f"fold must be 'official' or 0..{NUM_FOLDS - 1}, got {fold!r}")
    return fold


def recording_parts(root: str | os.PathLike, stems: list[str], fold="official") -> dict[str, str]:
    """``{stem: 'train' | 'test'}``: the official 60/40 split, or patient fold ``k`` as test (0..4)."""
    root, fold = Path(root), _fold_arg(fold)
    if fold == "official":
        table = read_official_split(root / SPLIT_FILE)
        parts = {s: lookup_split(s, table)[0] for s in stems}
        where = root / SPLIT_FILE
    else:
        folds = read_patient_folds(root / FOLD_FILE)
        patient_fold = {s: folds.get(parse_recording_name(s).patient) for s in stems}
        parts = {
            s: None if f is None else ("test" if f == fold else "train") for s, f in patient_fold.items()
        }
        where = root / FOLD_FILE
    missing = [s for s, p in parts.items() if p is None]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise DatasetError(where, f"{len(missing)} recording(s) not covered: {', '.join(missing[:3])}{more}")
    return parts


def val_patients(patients, fraction: float = 0.2, seed: int = 0) -> set[int]:
    """Deterministic validation patients: ``round(fraction * n)`` (at least 1, at most n - 1) of a
    ``default_rng(seed)`` permutation of the sorted distinct ``patients``."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {fraction}")
    pool = sorted(set(int(p) for p in patients))
    if fraction == 0.0 or len(pool) < 2:
        return set()
    k = min(max(1, round(fraction * len(pool))), len(pool) - 1)
    return set(int(p) for p in np.random.default_rng(seed).permutation(pool)[:k])


def split_recordings(
    root: str | os.PathLike,
    split: str = "train",
    fold="official",
    val_fraction: float = 0.2,
    seed: int = 0,
    select_on_test: bool = False,
) -> list[str]:
    """Stems of one split. ``val`` is carved by patient from the training recordings (see
    :func:`val_patients`) and ``train`` is the rest. With ``select_on_test`` the published
    protocol is reproduced instead: ``train`` keeps every training recording and ``val`` is
    the test split (model selection on the test set, spec 2.5)."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    stems = list_recordings(root)
    parts = recording_parts(root, stems, fold)
    if split == "test" or (split == "val" and select_on_test):
        return [s for s in stems if parts[s] == "test"]
    train = [s for s in stems if parts[s] == "train"]
    if select_on_test:
        return train
    val = val_patients([parse_recording_name(s).patient for s in train], val_fraction, seed)
    if split == "val" and not val:
        raise ValueError(
            "no validation patients (val_fraction=0 or one training patient); "
            "pass val_fraction > 0, or select_on_test=True for the published protocol"
        )
    return [s for s in train if (parse_recording_name(s).patient in val) == (split == "val")]


# ---------------------------------------------------------------- cycles


def load_recording(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Mono ``[N]`` at ``sample_rate`` with a linear fade-in and fade-out of ``sample_rate // 16``
    samples over the whole recording (``torchaudio.transforms.Fade``); resampled by
    :func:`sed.audio.io.resample`, which is the reference's ``torchaudio.transforms.Resample``."""
    wave = load_audio(path, sample_rate=sample_rate, channels="mono")[0][0]
    n = min(sample_rate // 16, wave.numel())
    return torchaudio.transforms.Fade(n, n, "linear")(wave)


def slice_cycle(wave: torch.Tensor, start: float, end: float, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """``wave[..., min(int(start * sr), N) : min(int(end * sr), N)]``."""
    n = wave.shape[-1]
    return wave[..., min(int(start * sample_rate), n) : min(int(end * sample_rate), n)]


def fix_length(
    cycle: torch.Tensor, target: int, pad: str = "repeat", fade: int = SAMPLE_RATE // 16
) -> torch.Tensor:
    """Cut or pad ``[..., n]`` to ``target`` samples: longer -> head (no fade); ``repeat`` -> cyclic
    tiling from the start, then a linear fade-out of ``fade`` samples; ``zero`` -> centred in zeros."""
    n = cycle.shape[-1]
    if pad not in ("repeat", "zero"):
        raise ValueError(f"pad must be 'repeat' or 'zero', got {pad!r}")
    if n == 0:
        raise ValueError("empty cycle")
    if n > target:
        return cycle[..., :target].clone()
    if pad == "zero":
        out = cycle.new_zeros(*cycle.shape[:-1], target)
        d = (target - n) // 2
        out[..., d : d + n] = cycle
        return out
    tiled = cycle.repeat(*([1] * (cycle.dim() - 1)), math.ceil(target / n))[..., :target]
    return torchaudio.transforms.Fade(0, min(fade, target), "linear")(tiled)


def _label(cycle: Cycle, classes: int) -> int:
    return cycle.label if classes == 4 else int(cycle.label != 0)


def icbhi_items(root: str | os.PathLike, classes: int = 4) -> tuple[list[ClipItem], list[str], list[dict]]:
    """Every cycle of the corpus as a :class:`~sed.data.clips.ClipItem` (``start``-``end`` of its
    recording, the patient's fold when ``patient_list_foldwise.txt`` is there), the label names,
    and per cycle ``{"patient", "cycle", "split"}`` (the row in its annotation file; the official
    split when ``official_split.txt`` is there). What ``sedkit shard`` writes for ICBHI."""
    root = Path(root)
    stems = list_recordings(root)
    parts = recording_parts(root, stems) if (root / SPLIT_FILE).is_file() else {}
    folds = read_patient_folds(root / FOLD_FILE) if (root / FOLD_FILE).is_file() else {}
    items, extras = [], []
    for stem in stems:
        patient = parse_recording_name(stem).patient
        for j, c in enumerate(read_annotations(root / f"{stem}.txt")):
            items.append(
                ClipItem(str(root / f"{stem}.wav"), _label(c, classes), c.start, c.end, folds.get(patient))
            )
            extras.append({"patient": patient, "cycle": j, "split": parts.get(stem)})
    names = list(LABEL_NAMES) if classes == 4 else ["normal", "abnormal"]
    return items, names, extras


class IcbhiDataset(torch.utils.data.Dataset):
    """Respiratory cycles of one ICBHI split, fixed to ``cycle_seconds`` at 16 kHz.

    Items are ``{"wave": float32 [T], "length": T, "label", "path", "patient", "cycle"}`` with
    ``T = cycle_seconds * sample_rate`` (128000); ``length`` is the whole ``T`` since repeat and
    zero padding are part of the input, as in the reference. ``cycle`` is the row of the cycle in
    its annotation file. Cycles are read once (in memory, at most ``T + 1`` samples each) and padded
    per item. Cycles that start at or after the end of their recording are skipped (``skipped``).
    ``split``/``fold``/``val_fraction``/``seed``/``select_on_test``: see :func:`split_recordings`.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        fold="official",
        classes: int = 4,
        pad: str = "repeat",
        val_fraction: float = 0.2,
        seed: int = 0,
        select_on_test: bool = False,
        cycle_seconds: float = 8.0,
        sample_rate: int = SAMPLE_RATE,
    ):
        if classes not in (2, 4):
            raise ValueError(f"classes must be 4 or 2, got {classes}")
        if pad not in ("repeat", "zero"):
            raise ValueError(f"pad must be 'repeat' or 'zero', got {pad!r}")
        self.root, self.split, self.classes, self.pad = Path(root), split, classes, pad
        self.sample_rate, self.target = sample_rate, round(cycle_seconds * sample_rate)
        self.recordings = split_recordings(root, split, fold, val_fraction, seed, select_on_test)
        pieces, self.meta, self.skipped = [], [], []
        for stem in self.recordings:
            wav, patient = self.root / f"{stem}.wav", parse_recording_name(stem).patient
            wave = load_recording(wav, sample_rate)
            for j, c in enumerate(read_annotations(self.root / f"{stem}.txt")):
                seg = slice_cycle(wave, c.start, c.end, sample_rate)[: self.target + 1]  # +1: still "longer"
                if seg.numel() == 0:
                    self.skipped.append((str(wav), j))
                    continue
                pieces.append(seg)
                self.meta.append((str(wav), patient, j, _label(c, classes)))
        lengths = torch.tensor([0] + [p.numel() for p in pieces])
        self._offsets = torch.cumsum(lengths, 0).tolist()
        self._data = torch.cat(pieces) if pieces else torch.zeros(0)

    def __len__(self) -> int:
        return len(self.meta)

    def __getitem__(self, i: int) -> dict:
        path, patient, cycle, label = self.meta[i]
        seg = self._data[self._offsets[i] : self._offsets[i + 1]]
        wave = fix_length(seg, self.target, self.pad, self.sample_rate // 16)
        return {
            "wave": wave.float(),
            "length": self.target,
            "label": label,
            "path": path,
            "patient": patient,
            "cycle": cycle,
        }

    @property
    def label_names(self) -> list[str]:
        return list(LABEL_NAMES) if self.classes == 4 else ["normal", "abnormal"]

    @property
    def labels(self) -> list[int]:
        return [m[3] for m in self.meta]

    def class_counts(self) -> list[int]:
        return np.bincount(np.asarray(self.labels, dtype=np.int64), minlength=self.classes).tolist()
