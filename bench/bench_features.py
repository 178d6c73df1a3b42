"""Feature front ends side by side with what they replace (ratios, not absolute times).

(a) ``KaldiFbank(target_length=1024)`` on a batch of 10-s 16 kHz clips against the AST reference
    loader's per-clip ``torchaudio.compliance.kaldi.fbank`` + pad + normalise loop
    (target >= 1.0x on CPU; >= 20x on CUDA against the CPU loop, when a GPU is present).
(b) ``FOALogMelIV`` against the DCASE 2023 baseline's own extractor on one 60-s 4-channel 24 kHz
    file and on a few files (target >= 3x on CPU for one file); ``MicLogMelGCC`` is reported
    alongside. The baseline is ``cls_feature_class.FeatureClass`` of
    https://github.com/sharathadavanne/seld-dcase2023 (``parameters.get_params`` task 1 for FOA, 4
    for MIC + GCC-PHAT), imported from the work tree given with ``--ref PATH`` (commit
    24d14c9ebe6878062dc3b68eb07dd0100722f530 is the one tests/reference/seld_features checks against;
    it needs librosa, scikit-learn, joblib, matplotlib and IPython): its per-file methods
    ``_spectrogram``, ``_get_mel_spectrogram`` and ``_get_foa_intensity_vectors`` / ``_get_gcc``, as
    its ``extract_file_feature`` calls them, on audio already in memory. Without ``--ref``, (b) is
    skipped.

Each candidate and its reference are warmed up, then timed alternately (so both see the same
machine load) and the median of the repeats is reported. Torch threads are left at their default
unless ``--threads`` is given. On a machine whose cores are busy with other processes, torch's
OpenMP-parallel ops wait on descheduled threads and lose far more than the (mostly single-threaded)
numpy/librosa reference: the script prints the load average, and ``--threads 1`` shows whether a
low ratio is the machine rather than the code.

    python bench/bench_features.py [--quick] [--threads N] [--ref /path/to/seld-dcase2023]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchaudio.compliance import kaldi

from sed.audio.features import AUDIOSET_MEAN, AUDIOSET_STD, KaldiFbank
from sed.audio.spatial import FOALogMelIV, MicLogMelGCC


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def race(
    ours: Callable[[], object], ref: Callable[[], object], repeats: int, warmup: int = 1
) -> tuple[float, float]:
    """Median seconds of ``ours`` and ``ref``, timed alternately after ``warmup`` calls each."""
    for _ in range(warmup):
        ours()
        _sync()
        ref()
    t_ours, t_ref = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        ours()
        _sync()
        t_ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        ref()
        t_ref.append(time.perf_counter() - t)
    return statistics.median(t_ours), statistics.median(t_ref)


def report(name: str, ours: float, ref: float, target: float | None) -> None:
    ratio = ref / ours
    verdict = "" if target is None else ("  ok" if ratio >= target else f"  MISSED (target {target:g}x)")
    goal = "" if target is None else f" (target >= {target:g}x)"
    print(
        f"{name:<58} ours {ours * 1e3:9.1f} ms   reference {ref * 1e3:9.1f} ms   "
        f"ratio {ratio:6.2f}x{goal}{verdict}"
    )


def ast_loader_loop(clips: torch.Tensor, target_length: int = 1024) -> list[torch.Tensor]:
    """What the AST reference data loader does, one clip at a time."""
    out = []
    for w in clips:
        fb = kaldi.fbank(
            w[None],
            htk_compat=True,
            sample_frequency=16000,
            use_energy=False,
            window_type="hanning",
            num_mel_bins=128,
            dither=0.0,
            frame_shift=10,
        )
        p = target_length - fb.shape[0]
        fb = F.pad(fb, (0, 0, 0, p)) if p > 0 else fb[:target_length]
        out.append((fb - AUDIOSET_MEAN) / (2 * AUDIOSET_STD))
    return out


def bench_fbank(num_clips: int, repeats: int) -> None:
    g = torch.Generator().manual_seed(0)
    clips = 0.1 * torch.randn(num_clips, 160000, generator=g)
    front = KaldiFbank(target_length=1024)
    with torch.inference_mode():
        a = front(clips)
        b = torch.stack(ast_loader_loop(clips))
        assert (a - b).abs().max() < 1e-3, "KaldiFbank disagrees with the AST loader"
        ours, ref = race(lambda: front(clips), lambda: ast_loader_loop(clips), repeats)
        report(f"(a) KaldiFbank, {num_clips} x 10 s, CPU batched vs CPU loop", ours, ref, 1.0)
        if torch.cuda.is_available():
            front_gpu, clips_gpu = front.cuda(), clips.cuda()
            ours, ref = race(lambda: front_gpu(clips_gpu), lambda: ast_loader_loop(clips), repeats, warmup=2)
            report(f"(a) KaldiFbank, {num_clips} x 10 s, CUDA batched vs CPU loop", ours, ref, 20.0)


def seld_baseline(ref: str | os.PathLike, fmt: str):
    """The DCASE 2023 baseline's ``FeatureClass`` for ``fmt`` ("foa": ``get_params`` task 1, "mic": task 4,
    GCC-PHAT), imported from its work tree ``ref``."""
    path = str(Path(ref).resolve())
    if path not in sys.path:
        sys.path.insert(0, path)
    import cls_feature_class
    import parameters

    with contextlib.redirect_stdout(io.StringIO()):  # get_params prints every parameter
        params = parameters.get_params({"foa": "1", "mic": "4"}[fmt])
    return cls_feature_class.FeatureClass(params)


def baseline_features(fc, audio: np.ndarray) -> np.ndarray:
    """``(frames, channels * 64)`` features of ``(samples, 4)`` audio (what the baseline's ``_load_audio``
    returns) by the baseline's per-file methods, in the order its ``extract_file_feature`` calls them."""
    spect = fc._spectrogram(audio, int(len(audio) / float(fc._hop_len)))
    spatial = fc._get_foa_intensity_vectors(spect) if fc._dataset == "foa" else fc._get_gcc(spect)
    return np.concatenate((fc._get_mel_spectrogram(spect), spatial), axis=-1)


def bench_seld(ref_path: str, seconds: float, num_files: int, repeats: int) -> None:
    sr = 24000
    rng = np.random.default_rng(0)
    files = [
        np.clip(0.1 * rng.standard_normal((int(seconds * sr), 4)), -1, 1).astype(np.float32)
        for _ in range(num_files)
    ]
    batch = torch.stack([torch.from_numpy(np.ascontiguousarray(a.T)) for a in files])
    loaded = [a.astype(np.float64) + 1e-8 for a in files]  # the baseline's _load_audio: float64, + 1e-8
    base_foa, base_mic = seld_baseline(ref_path, "foa"), seld_baseline(ref_path, "mic")
    foa, mic = FOALogMelIV(), MicLogMelGCC()
    with torch.inference_mode():
        one = batch[:1]
        ours, ref = race(lambda: foa(one), lambda: baseline_features(base_foa, loaded[0]), repeats)
        report(f"(b) FOALogMelIV, one {seconds:g}-s file, CPU vs baseline (librosa)", ours, ref, 3.0)
        ours, ref = race(lambda: mic(one), lambda: baseline_features(base_mic, loaded[0]), repeats)
        report(f"    MicLogMelGCC, one {seconds:g}-s file, CPU vs baseline (librosa)", ours, ref, None)
        if num_files > 1:
            ours, ref = race(
                lambda: foa(batch),
                lambda: [baseline_features(base_foa, a) for a in loaded],
                max(1, repeats // 2),
            )
            report(f"(b) FOALogMelIV, {num_files} x {seconds:g} s batched, CPU vs baseline", ours, ref, None)
        if torch.cuda.is_available():
            foa_gpu, one_gpu = foa.cuda(), one.cuda()
            ours, ref = race(
                lambda: foa_gpu(one_gpu), lambda: baseline_features(base_foa, loaded[0]), repeats, warmup=2
            )
            report(f"(b) FOALogMelIV, one {seconds:g}-s file, CUDA vs baseline (librosa)", ours, ref, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small inputs and few repeats (a few seconds)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument(
        "--ref",
        default=None,
        help="work tree of sharathadavanne/seld-dcase2023 for (b) (without it, (b) is skipped)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load = _load()  # before we add to it: what other processes put on the cores
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"load average before start {load:.2f}, CUDA {'yes' if torch.cuda.is_available() else 'no'}"
    )
    if args.quick:
        bench_fbank(num_clips=8, repeats=3)
    else:
        bench_fbank(num_clips=64, repeats=5)
    if args.ref is None:
        print("(b) skipped: give the DCASE 2023 baseline's work tree with --ref PATH")
    elif args.quick:
        bench_seld(args.ref, seconds=10.0, num_files=2, repeats=3)
    else:
        bench_seld(args.ref, seconds=60.0, num_files=4, repeats=7)
    if load >= (os.cpu_count() or 1) * 0.5:
        print(
            f"note: load average {load:.2f} on {os.cpu_count()} CPUs before start: other processes compete "
            "for "
            "the cores, so the ratios may understate the code (compare with --threads 1)"
        )


def _load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


if __name__ == "__main__":
    main()
