"""SELD FOA features: the DCASE 2023 baseline's extractor vs FOALogMelIV through the FeatureCache.

Synthesises 4-channel 24 kHz FOA files (a moving plane wave over diffuse noise) in a temp
folder, then times, over all files:

- baseline: the baseline's own ``FeatureClass.extract_file_feature`` (scipy read, per-channel
  librosa in float64, ``np.save`` of the features) of https://github.com/sharathadavanne/seld-dcase2023
  (``parameters.get_params()`` defaults: FOA), imported from the work tree given with ``--ref PATH``
  (commit 24d14c9ebe6878062dc3b68eb07dd0100722f530 is the one tests/reference/seld_features checks
  against; it needs librosa, scikit-learn, joblib, matplotlib and IPython). Without ``--ref`` this
  row, the ratios to it and the comparison are left out;
- direct:   ``load_audio`` + ``FOALogMelIV`` (no cache);
- cold:     ``FeatureCache.warm`` on an empty cache (load + extract + atomic .npy write);
- warm:     ``FeatureCache.get`` of every whole file (a .npy read);
- seq:      ``FeatureCache.get`` of every 5-s training sequence (what ``StarssDataset`` reads).

It prints times and ratios (ratios are the point: absolute times depend on the machine), the
largest difference to the baseline's features, and the peak memory of extracting one whole
file in this process (the cache extracts whole files; see sed/data/modules/feature_cache.py).

    python bench/bench_seld_features.py --ref /path/to/seld-dcase2023            # 4 files x 60 s
    python bench/bench_seld_features.py --ref /path/to/seld-dcase2023 --quick    # 2 files x 10 s
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

SR = 24000


def synthesise(folder: Path, n: int, seconds: float) -> list[Path]:
    paths = []
    for i in range(n):
        rng = np.random.default_rng(i)
        t = int(seconds * SR)
        s = rng.standard_normal(t) * np.repeat(rng.uniform(0.1, 1.0, t // 2400 + 1), 2400)[:t]
        az = np.linspace(0, 4 * np.pi, t) + i
        el = 0.3 * np.sin(np.linspace(0, 2 * np.pi, t))
        foa = np.stack([s, s * np.sin(az) * np.cos(el), s * np.sin(el), s * np.cos(az) * np.cos(el)])
        foa += 0.05 * rng.standard_normal(foa.shape)
        path = folder / f"fold3_room4_mix{i + 1:03d}.wav"
        sf.write(path, (0.5 * foa / np.abs(foa).max()).T, SR, subtype="PCM_16")
        paths.append(path)
    return paths


def baseline_extractor(ref: str):
    """The baseline's ``FeatureClass`` with its default (FOA) parameters, from its work tree ``ref``."""
    path = str(Path(ref).resolve())
    if path not in sys.path:
        sys.path.insert(0, path)
    import cls_feature_class
    import parameters

    with contextlib.redirect_stdout(io.StringIO()):  # get_params prints every parameter
        params = parameters.get_params("1")
    assert params["dataset"] == "foa"
    return cls_feature_class.FeatureClass(params)


def timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def _hwm_mb() -> float | None:
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None


def extraction_peak_mb(path: Path) -> tuple[float, float] | None:
    """(child process) (RSS before, peak RSS during) whole-file extraction, in MB; Linux only
    (the peak is reset through /proc/self/clear_refs after loading). None where unavailable."""
    from sed.audio.features import FOALogMelIV
    from sed.audio.io import load_audio

    front = FOALogMelIV()
    front(torch.zeros(4, SR))
    wave, _ = load_audio(path, SR, num_channels=4)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    before = _hwm_mb()
    with torch.no_grad():
        front(wave)
    after = _hwm_mb()
    return None if before is None or after is None else (before, after)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 files x 10 s")
    ap.add_argument("--files", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--peak-rss", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--rounds", type=int, default=3, help="timing rounds (best kept)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument(
        "--ref", default=None, help="work tree of sharathadavanne/seld-dcase2023 (the baseline row)"
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.peak_rss is not None:
        print(*(extraction_peak_mb(args.peak_rss) or ()))
        return
    n = args.files or (2 if args.quick else 4)
    args.rounds = 2 if args.quick else args.rounds
    seconds = args.seconds or (10.0 if args.quick else 60.0)

    from sed.audio.features import FOALogMelIV
    from sed.audio.io import load_audio
    from sed.data.modules.feature_cache import FeatureCache

    FOALogMelIV()(torch.zeros(4, SR))  # first-use costs (librosa import, mel matrix) out of the timings
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = synthesise(folder, n, seconds)
        audio_s = n * seconds
        print(f"{n} files x {seconds:.0f} s, 4 channels, {SR} Hz; torch threads {torch.get_num_threads()}")

        fc = baseline_extractor(args.ref) if args.ref else None
        base_dir = folder / "baseline"
        base_dir.mkdir()

        def baseline():
            with contextlib.redirect_stdout(io.StringIO()):  # it prints a line per file
                for i, p in enumerate(paths):
                    fc.extract_file_feature((i, str(p), str(base_dir / f"{p.stem}.npy")))

        front = FOALogMelIV()

        def direct():
            with torch.no_grad():
                return [front(load_audio(p, SR, num_channels=4)[0])[0] for p in paths]

        cache = FeatureCache(folder / "cache", front)
        seq = 250

        def cold():
            shutil.rmtree(cache.dir, ignore_errors=True)
            return cache.warm(paths, progress=False)

        def warm():
            return [cache.get(p) for p in paths]

        def sequences():
            return [
                cache.get(p, s, s + seq)
                for p in paths
                for s in range(0, cache.get(p).shape[1] - seq + 1, seq)
            ]

        # rounds interleave the methods, and each keeps its best round: fairer on a busy machine
        names = ("baseline", "direct", "cold", "warm", "sequences")
        fns = dict(zip(names, (baseline, direct, cold, warm, sequences)))
        if fc is None:
            names = names[1:]
        best, out = dict.fromkeys(names, float("inf")), {}
        for _ in range(args.rounds):
            for name in names:
                t, out[name] = timed(fns[name])
                best[name] = min(best[name], t)
        t_direct, t_cold, t_warm, t_seq = (best[k] for k in names[-4:])
        feats, warm = out["direct"], out["warm"]
        n_seq = sum(f.shape[1] // seq for f in warm)
        assert all(torch.equal(a, b) for a, b in zip(feats, warm)), "cache differs from direct extraction"

        rows = [
            ("direct FOALogMelIV", t_direct),
            ("cache cold (warm())", t_cold),
            ("cache warm (get whole files)", t_warm),
            (f"cache warm ({n_seq} 5-s sequences)", t_seq),
        ]
        if fc is not None:
            rows.insert(0, ("baseline (librosa)", best["baseline"]))
        t_base = best.get("baseline", t_direct)
        print(f"\n{'':34s} {'seconds':>9s} {'x realtime':>11s} {'baseline /' if fc else 'direct /':>11s}")
        for name, t in rows:
            print(f"{name:34s} {t:9.3f} {audio_s / t:11.0f} {t_base / t:11.1f}")
        print(
            f"\ncold / warm: {t_cold / t_warm:.0f}x; cache overhead over direct extraction: "
            f"{100 * (t_cold - t_direct) / t_direct:+.0f}%"
        )
        if fc is not None:  # the baseline's (frames, 7 * 64) channel-major file vs ours [7, frames, 64]
            base = np.load(base_dir / f"{paths[0].stem}.npy")
            ref = base.reshape(base.shape[0], -1, 64).transpose(1, 0, 2)
            ours = feats[0].double().numpy()
            d_mel = np.abs(ours[:4] - ref[:4]).max()
            d_iv = np.abs(ours[4:] - ref[4:]).max()
            print(f"max |ours - baseline|: log-mel {d_mel:.2e} dB, intensity vectors {d_iv:.2e}")
        else:
            print("no baseline: give the DCASE 2023 baseline's work tree with --ref PATH")

        if not args.quick:  # in a fresh process: this one's allocator already holds freed memory
            out = subprocess.run(
                [sys.executable, __file__, "--peak-rss", str(paths[0])],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            if out:
                before, after = map(float, out)
                print(
                    f"peak RSS extracting one {seconds:.0f}-s file: {before:.0f} MB -> {after:.0f} MB "
                    f"(+{after - before:.0f} MB; its float32 waveform is {4 * 4 * seconds * SR / 2**20:.0f} "
                    "MB)"
                )


if __name__ == "__main__":
    main()
