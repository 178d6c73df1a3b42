"""A deterministic synthetic stand-in for DESED (DCASE Task 4), in its real layout.

:func:`make_desed` writes, under ``out``, the folders and tables of
:data:`sed.data.corpora.desed.DESED_LAYOUT` (the DCASE 2024 baseline's names; with a sample rate other
than 16 kHz the folders drop their ``_16k``, as DESED's 44.1 kHz originals do):

- strong training soundscapes with their ``filename onset offset event_label`` TSV,
- weak training clips with their ``filename event_labels`` TSV (events rendered, times not given),
- unlabelled in-domain clips (events rendered, no labels),
- a synthetic validation split and a test split (the "validation" folder of DESED, real recordings
  there) with strong TSVs and durations TSVs; test clips last 70-100 % of ``duration``, as DESED's
  real clips are sometimes shorter than 10 s.

Class ``k`` (the ``k``-th of the real DESED class names) sounds like the ``k``-th kind of
:mod:`sed.data.synth.signals`, so the classes are easily told apart. A clip holds 1 to 3 events of
0.5-3 s (at most 40 % of the clip each) on a millisecond grid, never overlapping, each 10-20 dB above
a pink-noise background; a gap of 0.2 s at least separates events. Same ``seed``, same bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sed.data.corpora.desed import DESED_CLASSES, DESED_LAYOUT
from sed.data.synth import signals as sig
from sed.data.synth.corpora import _check_duration, _check_int, _rng, _write_lines, _write_wav

__all__ = ["make_desed"]

#: (name in the layout, purpose key of the random streams, labels written)
_SETS = (("strong", 1, "strong"), ("weak", 2, "weak"), ("unlabeled", 3, None), ("val", 4, "strong"))
_TEST = ("test", 5, "strong")
_GAP = 0.2


def _folder(key: str, sample_rate: int) -> str:
    folder = DESED_LAYOUT[key][0]
    return folder if sample_rate == 16000 else folder.replace("_16k", "")


def _plan_events(
    rng: np.random.Generator, seconds: float, num_classes: int
) -> list[tuple[float, float, int]]:
    """Non-overlapping events ``(onset, offset, class)`` in ms steps, separated by >= ``_GAP`` s."""
    longest = min(3.0, 0.4 * seconds)
    events: list[tuple[float, float, int]] = []
    for _ in range(int(rng.integers(1, 4))):
        for _try in range(20):
            length = round(rng.uniform(min(0.5, longest), longest), 3)
            onset = round(rng.uniform(0.0, seconds - length), 3)
            offset = round(onset + length, 3)
            if all(offset + _GAP <= a or onset >= b + _GAP for a, b, _ in events):
                events.append((onset, offset, int(rng.integers(num_classes))))
                break
    return sorted(events)


def _render(rng, events, n: int, sr: int, kinds: list[str]) -> np.ndarray:
    x = sig.pink_noise(rng, n, sr) * 0.05
    for onset, offset, cls in events:
        a, b = round(onset * sr), min(round(offset * sr), n)
        event = sig.event_signal(kinds[cls], rng, b - a, sr)
        x[a:b] += event * sig.snr_gain(event, x[a:b], rng.uniform(10.0, 20.0))
    return x


def make_desed(out, *, seed=0, num_classes=10, clips=40, duration=10.0, sample_rate=16000) -> dict:
    """Write the synthetic DESED corpus (see the module docstring) and return its JSON summary:
    the classes, the folders and tables written, and ``labels``: per split ``{filename: [[onset,
    offset, label], ...]}`` of every clip's rendered events (the unlabelled and weak ones too)."""
    _check_int("seed", seed, 0)
    _check_int("clips", clips, 1)
    _check_int("sample_rate", sample_rate, 8000)
    _check_duration(duration, 1.0)
    if not 1 <= num_classes <= len(DESED_CLASSES) or isinstance(num_classes, bool):
        raise ValueError(f"num_classes must be between 1 and {len(DESED_CLASSES)}, got {num_classes!r}")
    names, kinds = DESED_CLASSES[:num_classes], sig.class_names(num_classes)
    root = Path(out)
    labels: dict[str, dict[str, list]] = {}
    paths: dict[str, str] = {}
    for key, purpose, kind in (*_SETS, _TEST):
        folder = root / _folder(key, sample_rate)
        paths[key] = str(folder)
        rows, split, seconds_of = [], {}, {}
        for i in range(clips):
            rng = _rng(seed, purpose, i)
            seconds = duration if key != "test" else round(duration * rng.uniform(0.7, 1.0), 3)
            events = _plan_events(rng, seconds, num_classes)
            name = f"{key}_{i:05d}.wav"
            _write_wav(
                folder / name,
                _render(rng, events, round(seconds * sample_rate), sample_rate, kinds),
                sample_rate,
            )
            split[name] = [[a, b, names[c]] for a, b, c in events]
            if kind == "strong":
                rows += [f"{name}\t{a:.3f}\t{b:.3f}\t{names[c]}" for a, b, c in events]
            elif kind == "weak":
                rows.append(f"{name}\t{','.join(sorted({names[c] for _, _, c in events}))}")
            seconds_of[name] = seconds
        labels[key] = split
        table = DESED_LAYOUT[key][1]
        if kind is not None:
            header = "filename\tonset\toffset\tevent_label" if kind == "strong" else "filename\tevent_labels"
            _write_lines(root / table, [header, *rows])
            paths[f"{key}_tsv"] = str(root / table)
        if key in ("val", "test"):
            durations = DESED_LAYOUT[f"{key}_durations"][1]
            lines = [f"{k}\t{v:.3f}" for k, v in seconds_of.items()]
            _write_lines(root / durations, ["filename\tduration", *lines])
            paths[f"{key}_durations"] = str(root / durations)
    return {
        "corpus": "desed",
        "root": str(root),
        "num_files": clips * (len(_SETS) + 1),
        "classes": names,
        "sample_rate": sample_rate,
        "duration": duration,
        **paths,
        "labels": labels,
    }
