"""Procedural signals for the synthetic corpora (:mod:`sed.data.synth.corpora`).

``SIGNAL_KINDS`` maps a class name to a generator ``fn(rng, n, sr) -> float64 [n]``. Every
call draws its parameters from a range of its own, so clips of one class vary while the
classes stay acoustically distinct (different bands, temporal patterns and pitch tracks).
Intermittent kinds never leave a gap of 100 ms or more, so every labelled 100 ms frame of
an event holds energy. Frequencies are kept below 0.45 of the sample rate.

Also here: background noises, the respiratory sounds of the ICBHI stand-in (breathing,
crackles, wheezes), and the scaling helpers (RMS, SNR, peak) the generators share.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.fft import next_fast_len

SignalFn = Callable[[np.random.Generator, int, int], np.ndarray]


def _time(n: int, sr: int) -> np.ndarray:
    return np.arange(n) / sr


def _nyq(f, sr: int):
    return np.minimum(f, 0.45 * sr)


def _shaped_noise(rng: np.random.Generator, n: int, sr: int, gain) -> np.ndarray:
    """White noise shaped in the frequency domain by ``gain(freqs)``; unit RMS. The FFT runs
    on a fast length and the result is cut to ``n`` samples."""
    m = next_fast_len(max(n, 1), real=True)
    spec = np.fft.rfft(rng.standard_normal(m))
    spec *= gain(np.fft.rfftfreq(m, 1.0 / sr))
    return unit_rms(np.fft.irfft(spec, m)[:n])


def band_noise(rng: np.random.Generator, n: int, sr: int, lo: float, hi: float) -> np.ndarray:
    """White noise restricted to ``[lo, hi]`` Hz; unit RMS."""
    return _shaped_noise(rng, n, sr, lambda f: (f >= lo) & (f <= _nyq(hi, sr)))


def pink_noise(rng: np.random.Generator, n: int, sr: int, lo: float = 50.0) -> np.ndarray:
    """1/f noise from ``lo`` Hz to 0.45 sr; unit RMS (the ESC-50 background)."""
    return _shaped_noise(rng, n, sr, lambda f: ((f >= lo) & (f <= 0.45 * sr)) / np.sqrt(np.maximum(f, lo)))


def _gate(n: int, sr: int, on_s: np.ndarray, off_s: np.ndarray) -> np.ndarray:
    """0/1 mask with alternating on/off runs (lengths in seconds, cycled), starting on."""
    mask = np.zeros(n)
    pos, i = 0, 0
    while pos < n:
        on = max(1, int(on_s[i % len(on_s)] * sr))
        mask[pos : pos + on] = 1.0
        pos += on + max(1, int(off_s[i % len(off_s)] * sr))
        i += 1
    return mask


def _impulses(n: int, sr: int, period_s: float, shape: np.ndarray, jitter_s: float, rng) -> np.ndarray:
    """``shape`` placed every ``period_s`` seconds (+- jitter), starting at 0."""
    out = np.zeros(n)
    t = 0.0
    while True:
        i = int(max(0.0, t + rng.uniform(-jitter_s, jitter_s)) * sr)
        if i >= n:
            return out
        m = min(len(shape), n - i)
        out[i : i + m] += shape[:m]
        t += period_s


# ---------------------------------------------------------------- the sound classes


def tone(rng, n, sr):
    return np.sin(2 * np.pi * rng.uniform(400, 800) * _time(n, sr) + rng.uniform(0, 2 * np.pi))


def chirp(rng, n, sr):
    """Exponential sweep rising from 200-400 Hz to 2.5-4 kHz over the event."""
    f0, f1 = rng.uniform(200, 400), _nyq(rng.uniform(2500, 4000), sr)
    dur = max(n / sr, 1e-3)
    k = np.log(f1 / f0)
    return np.sin(2 * np.pi * f0 * dur / k * (np.exp(k * _time(n, sr) / dur) - 1.0))


def noise_burst(rng, n, sr):
    """Broadband bursts of 100-250 ms separated by 20-60 ms of silence."""
    gate = _gate(n, sr, rng.uniform(0.10, 0.25, 8), rng.uniform(0.02, 0.06, 8))
    return rng.standard_normal(n) * gate


def click_train(rng, n, sr):
    """Sharp broadband clicks (1 ms, decaying) at 12-20 per second."""
    m = max(2, sr // 1000)
    click = rng.standard_normal(m) * np.exp(-np.arange(m) / (sr * 2e-4))
    return _impulses(n, sr, 1.0 / rng.uniform(12, 20), click, 0.005, rng)


def harmonic_stack(rng, n, sr):
    """Steady complex tone: f0 150-250 Hz with 8 harmonics of amplitude 1/k."""
    f0, t = rng.uniform(150, 250), _time(n, sr)
    return sum(
        np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) / k
        for k in range(1, 9)
        if k * f0 < 0.45 * sr
    )


def am_tone(rng, n, sr):
    """1.0-1.4 kHz carrier, amplitude-modulated at 4-8 Hz (depth 0.9)."""
    t = _time(n, sr)
    env = 1.0 + 0.9 * np.sin(2 * np.pi * rng.uniform(4, 8) * t)
    return env * np.sin(2 * np.pi * rng.uniform(1000, 1400) * t)


def fm_tone(rng, n, sr):
    """1.8-2.4 kHz carrier with 5-8 Hz vibrato of 150-250 Hz deviation."""
    t, fm, dev = _time(n, sr), rng.uniform(5, 8), rng.uniform(150, 250)
    return np.sin(2 * np.pi * rng.uniform(1800, 2400) * t + dev / fm * np.sin(2 * np.pi * fm * t))


def bandpass_noise(rng, n, sr):
    """Steady noise band centred at 3-4.5 kHz, about 0.3 octave wide."""
    fc = rng.uniform(3000, 4500)
    return band_noise(rng, n, sr, fc * 0.9, fc * 1.1)


def plucks(rng, n, sr):
    """Plucked-string notes (f0 300-600 Hz, 3 harmonics) every 150-250 ms, each decaying."""
    period, f0 = rng.uniform(0.15, 0.25), rng.uniform(300, 600)
    t = _time(int(period * sr) + 1, sr)
    note = np.exp(-t / rng.uniform(0.04, 0.08)) * sum(np.sin(2 * np.pi * k * f0 * t) / k for k in (1, 2, 3))
    return _impulses(n, sr, period, note, 0.0, rng)


def pulse_train(rng, n, sr):
    """Buzz: narrow pulses at 60-100 Hz (flat harmonic comb up to the top of the band)."""
    f0, t = rng.uniform(60, 100), _time(n, sr)
    return (np.mod(f0 * t, 1.0) < 0.08).astype(float) - 0.08


def rumble(rng, n, sr):
    """Low-frequency noise below 120-200 Hz, slowly swelling."""
    env = 1.0 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.3, 1.0) * _time(n, sr))
    return band_noise(rng, n, sr, 30.0, rng.uniform(120, 200)) * env


def beeps(rng, n, sr):
    """3.0-3.8 kHz tone gated 60-80 ms on, 30-40 ms off."""
    gate = _gate(n, sr, rng.uniform(0.06, 0.08, 1), rng.uniform(0.03, 0.04, 1))
    return gate * np.sin(2 * np.pi * _nyq(rng.uniform(3000, 3800), sr) * _time(n, sr))


def hiss(rng, n, sr):
    """Steady high-frequency noise from 6-7 kHz up to 10 kHz (or 0.45 sr)."""
    return band_noise(rng, n, sr, min(rng.uniform(6000, 7000), 0.3 * sr), 10000.0)


def drips(rng, n, sr):
    """Short falling chirps (25 ms, 1.6 kHz to 600 Hz) every 60-90 ms."""
    t = _time(int(0.025 * sr), sr)
    freq = 1600.0 - 1000.0 * t / 0.025
    drop = np.sin(2 * np.pi * np.cumsum(freq) / sr) * np.hanning(len(t))
    return _impulses(n, sr, rng.uniform(0.06, 0.09), drop, 0.005, rng)


#: Sound classes in class-index order. The first ten are the most distinct (ESC-50 default).
SIGNAL_KINDS: dict[str, SignalFn] = {
    "tone": tone,
    "chirp": chirp,
    "noise_burst": noise_burst,
    "click_train": click_train,
    "harmonic_stack": harmonic_stack,
    "am_tone": am_tone,
    "fm_tone": fm_tone,
    "bandpass_noise": bandpass_noise,
    "plucks": plucks,
    "pulse_train": pulse_train,
    "rumble": rumble,
    "beeps": beeps,
    "hiss": hiss,
    "drips": drips,
}


def class_names(num_classes: int) -> list[str]:
    """The first ``num_classes`` kind names; ValueError outside 1..len(SIGNAL_KINDS)."""
    if not 1 <= num_classes <= len(SIGNAL_KINDS):
        raise ValueError(f"num_classes must be between 1 and {len(SIGNAL_KINDS)}, got {num_classes}")
    return list(SIGNAL_KINDS)[:num_classes]


def event_signal(kind: str, rng: np.random.Generator, n: int, sr: int, fade_s: float = 0.005) -> np.ndarray:
    """One event of a class: unit RMS, with raised-cosine fades of ``fade_s`` at both ends."""
    x = np.asarray(SIGNAL_KINDS[kind](rng, n, sr), dtype=np.float64)
    m = min(int(fade_s * sr), n // 2)
    if m > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(m) / m)
        x[:m] *= ramp
        x[n - m :] *= ramp[::-1]
    return unit_rms(x)


# ---------------------------------------------------------------- respiratory sounds


def breathing_envelope(n: int, sr: int, cycles: list[tuple[float, float]], rng) -> np.ndarray:
    """Slow envelope: per cycle, an inspiration bump then a softer expiration bump."""
    env = np.full(n, 0.05)
    for start, end in cycles:
        a, b = round(start * sr), min(round(end * sr), n)
        split = a + int((b - a) * rng.uniform(0.35, 0.45))
        for lo, hi, gain in ((a, split, 1.0), (split, b, 0.7)):
            env[lo:hi] += gain * np.sin(np.pi * np.arange(hi - lo) / max(hi - lo, 1)) ** 2
    return env


def crackle(rng: np.random.Generator, sr: int) -> np.ndarray:
    """One explosive transient: a damped 250-700 Hz oscillation lasting 3-12 ms."""
    dur = rng.uniform(0.003, 0.012)
    t = _time(max(3, int(dur * sr)), sr)
    return np.exp(-t / (dur / 4)) * np.sin(2 * np.pi * _nyq(rng.uniform(250, 700), sr) * t + np.pi / 2)


def wheeze(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Sustained tone at 150-800 Hz with a +-10 % glide and, sometimes, a 2nd harmonic (<= 1 kHz)."""
    f0 = rng.uniform(150, 800)
    freq = f0 * np.linspace(1.0, rng.uniform(0.9, 1.1), n)
    phase = 2 * np.pi * np.cumsum(freq) / sr
    x = np.sin(phase)
    if 2 * f0 * 1.1 <= 1000 and rng.random() < 0.5:
        x += 0.3 * np.sin(2 * phase)
    return unit_rms(x * np.hanning(n) ** 0.25)


# ---------------------------------------------------------------- scaling


def unit_rms(x: np.ndarray) -> np.ndarray:
    rms = float(np.sqrt(np.mean(np.square(x)))) if x.size else 0.0
    return x / rms if rms > 0 else x


def snr_gain(signal: np.ndarray, noise: np.ndarray, snr_db: float) -> float:
    """Factor for ``signal`` so that its power is ``snr_db`` above the power of ``noise``."""
    ps, pn = float(np.mean(np.square(signal))), float(np.mean(np.square(noise)))
    return float(np.sqrt(pn / ps * 10 ** (snr_db / 10))) if ps > 0 else 0.0


def peak_normalise(x: np.ndarray, peak: float = 0.9) -> np.ndarray:
    """Scale all channels together so the largest magnitude is ``peak`` (< 1: no clipping)."""
    m = float(np.max(np.abs(x))) if x.size else 0.0
    return x * (peak / m) if m > 0 else x
