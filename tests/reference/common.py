"""What the reference-fixture generators and the tests share: weights from a manifest, test signals, the
tolerance.

The rule (docs/contributing.md): a family, front end, loader or metric ported from a public repository is
checked against outputs of that repository's own code. Each ``tests/reference/<family>/generate.py`` imports
the original code from a path given on its command line, fills the original model with weights made here
from a *manifest* (key, shape, dtype and a fill rule per tensor), runs it on the signals of :func:`signal`
and writes the outputs (``.npz``) and the manifest (``weights.json``). The test rebuilds the same tensors
from the manifest, writes them in the release layout, loads that file through sed and compares.

Only numpy (PCG64, whose streams numpy guarantees across versions) and torch are used here: the generator
imports this file from the sed repository without importing sed itself.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "BATCH_SEEDS",
    "LENGTHS",
    "MIXED",
    "MIXED_SEEDS",
    "assert_close",
    "padded",
    "regime_inputs",
    "load_manifest",
    "manifest_entry",
    "max_rel_diff",
    "save_manifest",
    "signal",
    "tensor_from",
    "tensors_from",
]

#: the input regimes every family is checked at (seconds): short, shorter, exact (10 s), long, longer
LENGTHS = (1.0, 3.0, 10.0, 15.0, 25.0)
#: the lengths of the mixed-length batch (seconds)
MIXED = (3.0, 10.0, 1.0)
#: the seeds of the same-length batch (three 3-s clips) and of the mixed batch's clips
BATCH_SEEDS, MIXED_SEEDS = (1, 2, 3), (4, 5, 6)
#: the agreement asked of every family: 1e-4 of the reference output's range
TOLERANCE = 1e-4


def signal(seconds: float, rate: int, seed: int = 0, channels: int = 1) -> np.ndarray:
    """A deterministic test waveform, float32 ``[channels, samples]`` in [-1, 1]: a few sines with
    slowly moving amplitudes, clicks and noise, so that every mel band and every frame carries energy."""
    n = int(round(seconds * rate))
    rng = np.random.default_rng([seed, n, rate, channels])
    t = np.arange(n) / rate
    out = np.empty((channels, n), np.float64)
    for c in range(channels):
        freqs = rng.uniform(60.0, 0.45 * rate, size=5)
        amps = rng.uniform(0.02, 0.15, size=5)
        env = 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.1, 1.0) * t + rng.uniform(0, 2 * np.pi))
        x = sum(a * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) for f, a in zip(freqs, amps)) * env
        x = x + 0.05 * rng.standard_normal(n)
        clicks = rng.integers(0, max(n, 1), size=max(1, n // rate))
        x[clicks] += rng.uniform(-0.3, 0.3, size=clicks.shape)
        out[c] = x
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def padded(clips: list[np.ndarray]) -> tuple[np.ndarray, list[int]]:
    """Mono clips ``[T_i]`` as one zero-padded batch ``[B, max T]`` and their valid lengths."""
    lengths = [len(c) for c in clips]
    wave = np.zeros((len(clips), max(lengths)), np.float32)
    for i, c in enumerate(clips):
        wave[i, : len(c)] = c
    return wave, lengths


def regime_inputs(regime: str, rate: int) -> tuple[np.ndarray, list[int] | None]:
    """The mono waveforms ``[B, T]`` of a regime ("1s" ... "25s", "batch", "mixed") and, for the mixed
    batch, the valid samples per clip (its clips alone are
    ``common.signal(MIXED[i], rate, MIXED_SEEDS[i])``)."""
    if regime == "batch":
        return np.concatenate([signal(3.0, rate, s) for s in BATCH_SEEDS]), None
    if regime == "mixed":
        return padded([signal(s, rate, seed)[0] for s, seed in zip(MIXED, MIXED_SEEDS)])
    return signal(float(regime.removesuffix("s")), rate, 0), None


# ---------------------------------------------------------------------- weights from a manifest
def manifest_entry(
    key: str,
    shape: Iterable[int],
    dtype: str = "float32",
    mean: float = 0.0,
    std: float = 0.02,
    positive: bool = False,
) -> dict:
    """One tensor: ``mean + std * N(0, 1)`` (``abs`` of the noise first when ``positive``); integer
    tensors are zeros."""
    return {
        "key": key,
        "shape": [int(s) for s in shape],
        "dtype": dtype,
        "mean": float(mean),
        "std": float(std),
        "positive": bool(positive),
    }


def tensor_from(entry: Mapping, seed: int, index: int) -> torch.Tensor:
    """The tensor of manifest ``entry`` (the ``index``-th of a manifest with ``seed``)."""
    dtype = getattr(torch, entry["dtype"])
    shape = tuple(entry["shape"])
    if not dtype.is_floating_point:
        return torch.zeros(shape, dtype=dtype)
    noise = np.random.default_rng([seed, index]).standard_normal(int(np.prod(shape, dtype=np.int64)))
    if entry.get("positive"):
        noise = np.abs(noise)
    values = entry["mean"] + entry["std"] * noise
    return torch.from_numpy(values.astype(np.float32).reshape(shape)).to(dtype)


def tensors_from(manifest: Mapping) -> dict[str, torch.Tensor]:
    """Every tensor of a manifest, by key, in the manifest's order."""
    seed = int(manifest["seed"])
    return {e["key"]: tensor_from(e, seed, i) for i, e in enumerate(manifest["tensors"])}


def save_manifest(path: str | Path, seed: int, entries: list[dict], **extra) -> dict:
    """Write ``{"seed", "tensors", **extra}`` as JSON (``extra``: the release file's other fields, e.g. a
    cfg)."""
    manifest = {"seed": int(seed), "tensors": entries, **extra}
    Path(path).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest


def load_manifest(path: str | Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


# ---------------------------------------------------------------------- agreement
def max_rel_diff(ours, ref) -> float:
    """``max |ours - ref|`` divided by the range of ``ref`` (its max minus its min, at least 1e-12)."""
    ours = np.asarray(ours.detach().cpu() if isinstance(ours, torch.Tensor) else ours, np.float64)
    ref = np.asarray(ref, np.float64)
    if ours.shape != ref.shape:
        raise AssertionError(f"shape {ours.shape} vs reference {ref.shape}")
    span = max(float(ref.max() - ref.min()), 1e-12) if ref.size else 1.0
    return float(np.abs(ours - ref).max() / span) if ref.size else 0.0


def assert_close(ours, ref, what: str, tol: float = TOLERANCE) -> float:
    """Fail unless ``ours`` is within ``tol`` of the reference's range; returns the relative difference.
    With ``SED_REFERENCE_REPORT=FILE`` each comparison is also appended to FILE as a JSON line (the table of
    tests/reference/README.md is made from it by ``python -m tests.reference.report FILE``)."""
    d = max_rel_diff(ours, ref)
    if os.environ.get("SED_REFERENCE_REPORT"):
        with open(os.environ["SED_REFERENCE_REPORT"], "a", encoding="utf-8") as f:
            f.write(
                json.dumps({"test": os.environ.get("PYTEST_CURRENT_TEST", ""), "what": what, "diff": d})
                + "\n"
            )
    assert d <= tol, f"{what}: max |sed - reference| = {d:.3g} of the reference's range (allowed {tol:g})"
    return d
