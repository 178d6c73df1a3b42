"""Deterministic synthetic stand-ins for ESC-50, ICBHI 2017 and STARSS23, in their real layouts.

Each ``make_*`` writes a small corpus that the matching reader (:mod:`sed.data.corpora.esc50`,
:mod:`sed.data.corpora.icbhi`, :mod:`sed.data.corpora.starss`) reads like the real one, and returns a
JSON-serialisable summary that includes the labels it rendered. Everything follows from
``seed``: the same arguments give byte-identical files. Every file is written atomically as
16-bit PCM, peak-normalised below full scale. The sounds come from
:mod:`sed.data.synth.signals`.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from sed.audio.ambisonics import foa_encode, mic_plane_wave
from sed.data.corpora import esc50, icbhi, starss
from sed.data.corpora.dcase_csv import write_dcase_csv
from sed.data.synth import signals as sig
from sed.fileio import atomic_open, atomic_save

__all__ = ["SYNTH_CORPORA", "make_esc50", "make_icbhi", "make_starss"]


# ---------------------------------------------------------------- shared helpers


def _rng(seed: int, *keys: int) -> np.random.Generator:
    """An independent stream per (seed, purpose, item): one file's content never depends on another's."""
    return np.random.default_rng([seed, *keys])


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_duration(duration, minimum: float) -> None:
    if not isinstance(duration, (int, float)) or not math.isfinite(duration) or duration < minimum:
        raise ValueError(f"duration must be a number of seconds >= {minimum}, got {duration!r}")


def _write_wav(path: Path, x: np.ndarray, sample_rate: int) -> None:
    """Write ``[T]`` or ``[C, T]`` audio as 16-bit PCM after peak normalisation."""
    data = sig.peak_normalise(x)
    data = data.T if data.ndim == 2 else data
    atomic_save(path, lambda tmp: sf.write(tmp, data, sample_rate, subtype="PCM_16"))


def _write_lines(path: Path, lines: list[str]) -> None:
    with atomic_open(path, "w", newline="") as f:
        f.writelines(line + "\n" for line in lines)


# ---------------------------------------------------------------- ESC-50


def make_esc50(out, *, seed=0, num_classes=10, clips_per_class=10, duration=5.0, sample_rate=44100) -> dict:
    """ESC-50 layout: one procedural event per clip over pink noise at 5-20 dB SNR.

    ``clips_per_class`` clips of each class are spread evenly over the 5 folds; a source
    sometimes yields several takes (A, B, C), always within one fold, as in the real set."""
    _check_int("seed", seed, 0)
    names = sig.class_names(num_classes)
    _check_int("clips_per_class", clips_per_class, 5)
    if clips_per_class % 5:
        raise ValueError(f"clips_per_class must be a multiple of the 5 folds, got {clips_per_class}")
    _check_int("sample_rate", sample_rate, 8000)
    _check_duration(duration, 0.5)
    root, n = Path(out), round(duration * sample_rate)
    plan = _rng(seed, 0)
    rows, used = [], set()
    for target, name in enumerate(names):
        for fold in range(1, 6):
            src, take = 0, ""
            for _ in range(clips_per_class // 5):
                if take in ("A", "B") and plan.random() < 0.3:  # another take of the same source
                    take = chr(ord(take) + 1)
                else:  # a new source recording
                    src, take = int(plan.integers(1000, 300000)), "A"
                    while src in used:
                        src += 1
                    used.add(src)
                rows.append(
                    (f"{fold}-{src}-{take}-{target}.wav", fold, target, name, target % 5 == 0, src, take)
                )
    for i, row in enumerate(rows):
        rng = _rng(seed, 1, i)
        noise = sig.pink_noise(rng, n, sample_rate)
        length = int(rng.uniform(0.5, 0.9) * n)
        start = int(rng.integers(0, n - length + 1))
        event = sig.event_signal(row[3], rng, length, sample_rate)
        noise[start : start + length] += event * sig.snr_gain(event, noise, rng.uniform(5.0, 20.0))
        _write_wav(root / esc50.AUDIO_DIR / row[0], noise, sample_rate)
    rows.sort()
    with atomic_open(root / esc50.META_PATH, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(esc50.META_COLUMNS)
        w.writerows(rows)
    return {
        "corpus": "esc50",
        "root": str(root),
        "num_files": len(rows),
        "classes": names,
        "folds": [1, 2, 3, 4, 5],
        "sample_rate": sample_rate,
        "duration": duration,
        "meta": str(root / esc50.META_PATH),
    }


# ---------------------------------------------------------------- ICBHI 2017

#: Label frequencies of the synthetic cycles (normal, crackle, wheeze, both), close to ICBHI's.
_ICBHI_LABEL_P = (0.5, 0.27, 0.12, 0.11)


def _icbhi_rate(device: str) -> int:
    return 4000 if device == "Litt3200" else 44100


def _plan_cycles(rng: np.random.Generator, duration: float) -> list[tuple[float, float]]:
    """Contiguous 1.5-4 s cycles on a millisecond grid, the first starting within 0.5 s."""
    t, limit, cycles = int(rng.integers(0, 501)), round(duration * 1000), []
    while True:
        end = t + int(rng.integers(1500, 4001))
        if end > limit:
            return cycles
        cycles.append((t / 1000, end / 1000))
        t = end


def _render_respiration(rng: np.random.Generator, n: int, sr: int, cycles: list[list]) -> np.ndarray:
    """Breathing noise (100-1000 Hz) under a slow envelope, plus crackles and wheezes where labelled."""
    env = sig.breathing_envelope(n, sr, [(c[0], c[1]) for c in cycles], rng)
    x = sig.band_noise(rng, n, sr, 100.0, 1000.0) * env
    for start, end, crackles, wheezes in cycles:
        a, b = round(start * sr), min(round(end * sr), n)
        if wheezes:
            pos = a + int((b - a) * rng.uniform(0.1, 0.4))
            length = int((b - a) * rng.uniform(0.4, 0.55))
            x[pos : pos + length] += sig.wheeze(rng, length, sr) * rng.uniform(0.4, 0.8)
        if crackles:
            half = int(0.01 * sr)
            for _ in range(int(rng.integers(3, 9))):  # peaks 6-12 times the local RMS
                c = sig.crackle(rng, sr) * rng.uniform(6.0, 12.0) * rng.choice([-1.0, 1.0])
                pos = int(rng.integers(a, max(a + 1, b - len(c))))
                local = np.sqrt(np.mean(np.square(x[max(0, pos - half) : pos + half])))
                x[pos : pos + len(c)] += c[: n - pos] * local
    return x + 10 ** (-35 / 20) * rng.standard_normal(n)


def make_icbhi(out, *, seed=0, num_patients=8, recordings_per_patient=2, duration=20.0) -> dict:
    """ICBHI 2017 layout: breathing cycles with crackles and/or wheezes, 4 kHz and 44.1 kHz devices.

    All four cycle labels occur; the official split is by patient (about 60/40)."""
    _check_int("seed", seed, 0)
    _check_int("num_patients", num_patients, 2)
    _check_int("recordings_per_patient", recordings_per_patient, 1)
    _check_duration(duration, 4.0)
    root, plan = Path(out), _rng(seed, 0)
    patients = list(range(101, 101 + num_patients))
    # at least one 4 kHz (Litt3200) and one 44.1 kHz patient
    devices = ["Litt3200", str(plan.choice(["Meditron", "LittC2SE", "AKGC417L"]))]
    devices += [str(d) for d in plan.choice(icbhi.DEVICES, size=num_patients - 2)]
    plan.shuffle(devices)
    recordings = []
    for patient, device in zip(patients, devices):
        mode, locations = str(plan.choice(icbhi.MODES)), [str(v) for v in plan.permutation(icbhi.LOCATIONS)]
        for r in range(recordings_per_patient):
            # mc: one session recorded at several chest locations at once; sc: one location per session
            index = f"{1 + r // 7}b1" if mode == "mc" else f"{r + 1}b1"
            loc = locations[r % 7] if mode == "mc" else str(plan.choice(icbhi.LOCATIONS))
            recordings.append(
                {
                    "name": f"{patient}_{index}_{loc}_{mode}_{device}",
                    "patient": patient,
                    "sample_rate": _icbhi_rate(device),
                    "cycles": _plan_cycles(plan, duration),
                }
            )
    all_cycles = [(i, j) for i, rec in enumerate(recordings) for j in range(len(rec["cycles"]))]
    if len(all_cycles) < 4:
        raise ValueError(
            f"{len(all_cycles)} respiratory cycles fit; need >= 4 for all labels "
            "(raise duration or the number of recordings)"
        )
    labels = list(plan.choice(4, size=len(all_cycles), p=_ICBHI_LABEL_P))
    for k, pick in enumerate(plan.permutation(len(all_cycles))[:4]):
        labels[pick] = k  # every label occurs at least once
    for (i, j), label in zip(all_cycles, labels):
        start, end = recordings[i]["cycles"][j]
        recordings[i]["cycles"][j] = [start, end, int(label) & 1, int(label) >> 1]
    order = [int(p) for p in plan.permutation(patients)]
    test = set(order[: max(1, round(0.4 * num_patients))])
    folds = {p: k % 5 for k, p in enumerate(order)}
    for i, rec in enumerate(recordings):
        rec["split"] = "test" if rec["patient"] in test else "train"
        sr = rec["sample_rate"]
        audio = _render_respiration(_rng(seed, 1, i), round(duration * sr), sr, rec["cycles"])
        _write_wav(root / f"{rec['name']}.wav", audio, sr)
        _write_lines(
            root / f"{rec['name']}.txt", [f"{s:.3f}\t{e:.3f}\t{c}\t{w}" for s, e, c, w in rec["cycles"]]
        )
    _write_lines(root / "official_split.txt", sorted(f"{r['name']}\t{r['split']}" for r in recordings))
    _write_lines(root / "patient_list_foldwise.txt", [f"{p} {folds[p]}" for p in patients])
    counts = Counter(c[2] + 2 * c[3] for r in recordings for c in r["cycles"])
    return {
        "corpus": "icbhi",
        "root": str(root),
        "num_files": len(recordings),
        "sample_rates": sorted({r["sample_rate"] for r in recordings}),
        "label_counts": [counts[k] for k in range(4)],
        "recordings": recordings,
    }


# ---------------------------------------------------------------- STARSS23

_FRAME = round(starss.SAMPLE_RATE * starss.FRAME_SECONDS)  # 2400 samples per 100 ms label frame
_XFADE = 120  # half-length (5 ms) of the crossfade between the frames of a moving source
_PAD = 64  # zeros around each rendered segment: room for the mic array's fractional delays
_MAX_POLYPHONY = 3
_STARSS_SPLITS = (("dev-train-synth", 3, starss.TRAIN_ROOMS), ("dev-test-synth", 4, starss.TEST_ROOMS))
_STARSS_FORMATS = {"foa": ("foa",), "mic": ("mic",), "both": ("foa", "mic")}


@dataclass
class _Event:
    cls: int
    start: int  # first label frame
    azimuth: list[int]  # per frame, integer degrees
    elevation: int
    distance: int  # cm
    source: int = 0

    @property
    def stop(self) -> int:
        return self.start + len(self.azimuth)


def _plan_scene(rng: np.random.Generator, n_frames: int, num_classes: int, same_class: bool) -> list[_Event]:
    """Events of 0.5-3 s on the 100 ms grid, at most 3 at once. Event 0 moves; event 1 overlaps
    it (with the same class when ``same_class``); the rest are placed at random, some moving."""
    events: list[_Event] = []
    load = np.zeros(n_frames, dtype=int)
    for k in range(max(3, round(n_frames / 25))):
        for _ in range(50):
            lo = events[0].start if k == 1 else 0
            start = int(rng.integers(lo, min(events[0].stop, n_frames - 4) if k == 1 else n_frames - 4))
            length = int(rng.integers(5, min(30, n_frames - start) + 1))
            if (load[start : start + length] < _MAX_POLYPHONY).all():
                break
        else:
            continue
        load[start : start + length] += 1
        az0, speed = int(rng.integers(-180, 181)), 0.0
        if k == 0 or rng.random() < 0.35:  # moving: 1-6 degrees per frame (10-60 deg/s)
            speed = rng.uniform(1.0, 6.0) * rng.choice([-1.0, 1.0])
        azimuth = [(round(az0 + speed * j) + 180) % 360 - 180 for j in range(length)]
        cls = events[0].cls if (k == 1 and same_class) else int(rng.integers(num_classes))
        events.append(_Event(cls, start, azimuth, int(rng.integers(-45, 46)), int(rng.integers(100, 401))))
    for cls in set(e.cls for e in events):  # source index: running number within the class
        for i, e in enumerate(sorted((e for e in events if e.cls == cls), key=lambda e: e.start)):
            e.source = i
    return events


def _encode(segment: np.ndarray, azimuth: int, elevation: int, fmt: str) -> np.ndarray:
    s = torch.from_numpy(segment)
    if fmt == "foa":
        return foa_encode(s, float(azimuth), float(elevation)).numpy()
    return mic_plane_wave(s, float(azimuth), float(elevation), starss.SAMPLE_RATE).numpy()


def _spatialise(signal: np.ndarray, event: _Event, fmt: str) -> np.ndarray:
    """Render a mono event ``[L]`` as ``[4, L + 2 * _PAD]``: frame by frame, each 100 ms segment
    at its labelled direction, neighbouring segments joined by linear crossfades of 10 ms."""
    length, frames = len(signal), len(event.azimuth)
    out = np.zeros((4, length + 2 * _PAD))
    if len(set(event.azimuth)) == 1:
        frames = 1  # static: one segment
    for k in range(frames):
        lo = 0 if k == 0 else k * _FRAME - _XFADE
        hi = length if k == frames - 1 else (k + 1) * _FRAME + _XFADE
        w = np.ones(hi - lo)
        ramp = (np.arange(2 * _XFADE) + 0.5) / (2 * _XFADE)
        if k > 0:
            w[: 2 * _XFADE] = ramp
        if k < frames - 1:
            w[-2 * _XFADE :] = ramp[::-1]
        segment = np.pad(signal[lo:hi] * w, _PAD)
        out[:, lo : hi + 2 * _PAD] += _encode(segment, event.azimuth[k], event.elevation, fmt)
    return out


def _render_scene(events, signals, noise: np.ndarray, fmt: str) -> np.ndarray:
    x = np.pad(noise, ((0, 0), (_PAD, _PAD)))
    for event, s in zip(events, signals):
        a = event.start * _FRAME
        x[:, a : a + len(s) + 2 * _PAD] += _spatialise(s, event, fmt)
    return x[:, _PAD:-_PAD]


def make_starss(out, *, seed=0, files_per_split=2, duration=20.0, num_classes=13, fmt="foa") -> dict:
    """STARSS23 layout: point sources (static and moving, overlapping) over diffuse noise at -30 dB.

    ``fmt`` is "foa" (ACN/SN3D ambisonics), "mic" (tetrahedral array) or "both" (the same
    scenes in both formats). Labels list, per 100 ms frame, the integer direction rendered."""
    _check_int("seed", seed, 0)
    _check_int("files_per_split", files_per_split, 1)
    _check_duration(duration, 1.0)
    names = sig.class_names(num_classes)
    if fmt not in _STARSS_FORMATS:
        raise ValueError(f"fmt must be one of {sorted(_STARSS_FORMATS)}, got {fmt!r}")
    root, plan, sr = Path(out), _rng(seed, 0), starss.SAMPLE_RATE
    n_frames, n = int(duration * 10 + 1e-9), round(duration * sr)
    scenes = {}
    for split, fold, rooms in _STARSS_SPLITS:
        mixes: Counter = Counter()
        for _ in range(files_per_split):
            room = int(plan.choice(rooms))
            mixes[room] += 1
            stem = starss.format_stem(fold, room, mixes[room])
            rng = _rng(seed, 1, len(scenes))
            events = _plan_scene(rng, n_frames, num_classes, same_class=not scenes or rng.random() < 0.3)
            signals = [
                sig.event_signal(names[e.cls], rng, len(e.azimuth) * _FRAME, sr) * (200.0 / e.distance)
                for e in events
            ]
            noise = 10 ** (-30 / 20) * rng.standard_normal((4, n))
            for f in _STARSS_FORMATS[fmt]:
                _write_wav(
                    root / f"{f}_dev" / split / f"{stem}.wav", _render_scene(events, signals, noise, f), sr
                )
            rows = sorted(
                (e.start + j, e.cls, e.source, az, e.elevation, e.distance)
                for e in events
                for j, az in enumerate(e.azimuth)
            )
            write_dcase_csv(root / starss.METADATA_DIR / split / f"{stem}.csv", rows)
            scenes[f"{split}/{stem}"] = [list(r) for r in rows]
    return {
        "corpus": "starss",
        "root": str(root),
        "num_files": len(scenes),
        "formats": list(_STARSS_FORMATS[fmt]),
        "sample_rate": sr,
        "duration": duration,
        "classes": names,
        "labels": scenes,
    }


SYNTH_CORPORA = {"esc50": make_esc50, "icbhi": make_icbhi, "starss": make_starss}
