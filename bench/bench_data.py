"""Clips per second delivered to the model from loose WAV files vs FLAC shards vs WAV shards.

``--clips`` synthetic ``--seconds``-long clips (tones, chirps and noise over pink noise, 16-bit PCM at
``--rate`` Hz, 3 classes) are written as a class-folder corpus and sharded twice with ``sedkit shard``
(FLAC and WAV, 1,000 samples per shard, the source rate kept). Each source then feeds one training
epoch of ``AudioDataModule`` (random ``--crop``-second crops resampled to 16 kHz, batches of 32,
``--workers`` dataloader workers) and the time from the first to the last batch is measured:
loose files are read with a seek to the crop, shards are streamed and decoded whole. The three run
in turn for ``--rounds`` rounds; each is reported by its best round, with its bytes on disk.

    python bench/bench_data.py                       # 2,000 x 10 s at 44.1 kHz (about 1.8 GB of WAV)
    python bench/bench_data.py --clips 200 --keep work/bench_data   # smaller; keep the corpus
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf


def make_corpus(root: Path, clips: int, seconds: float, rate: int) -> None:
    from sed.data.synth import signals as s

    kinds = {"tone": s.tone, "chirp": s.chirp, "noise_burst": s.noise_burst}
    rng = np.random.default_rng(0)
    n = int(seconds * rate)
    for i in range(clips):
        name = list(kinds)[i % 3]
        x = kinds[name](rng, n, rate) + 0.05 * s.pink_noise(rng, n, rate)
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        sf.write(
            folder / f"{i:05d}.wav",
            (0.5 * x / max(np.abs(x).max(), 1e-6)).astype(np.float32),
            rate,
            subtype="PCM_16",
        )


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def epoch(dm) -> tuple[float, int]:
    dm.setup("fit")
    loader = dm.train_dataloader()
    n, t0 = 0, None
    for batch in loader:
        t0 = t0 or time.perf_counter()  # from the first batch: worker start-up excluded
        n += batch["wave"].shape[0]
    return time.perf_counter() - t0, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rate", type=int, default=44100)
    ap.add_argument("--crop", type=float, default=5.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--keep", default=None, help="build (or reuse) the corpus and shards here")
    args = ap.parse_args()

    from sed.data.modules.audio import AudioDataModule
    from sed.data.shards.writer import read_source, write_shards

    tmp = None if args.keep else tempfile.mkdtemp()
    root = Path(args.keep or tmp)
    try:
        corpus = root / "corpus"
        if not corpus.is_dir():
            make_corpus(corpus, args.clips, args.seconds, args.rate)
        for fmt in ("flac", "wav"):
            write_shards(read_source(corpus), root / f"shards_{fmt}", shard_size=1000, fmt=fmt)
        common = {
            "sample_rate": 16000,
            "clip_seconds": args.crop,
            "batch_size": 32,
            "num_workers": args.workers,
            "validate": False,
        }
        sources = {
            "loose WAV files": lambda: AudioDataModule(
                source="folder", root=str(corpus), val_fraction=0.01, **common
            ),
            "FLAC shards": lambda: AudioDataModule(
                source="shards",
                shards=str(root / "shards_flac"),
                val_shards=str(root / "shards_flac"),
                **common,
            ),
            "WAV shards": lambda: AudioDataModule(
                source="shards",
                shards=str(root / "shards_wav"),
                val_shards=str(root / "shards_wav"),
                **common,
            ),
        }
        sizes = {
            "loose WAV files": du(corpus),
            "FLAC shards": du(root / "shards_flac"),
            "WAV shards": du(root / "shards_wav"),
        }
        best = {k: float("inf") for k in sources}
        counts = {}
        for _ in range(args.rounds):
            for name, make in sources.items():
                t, n = epoch(make())
                best[name], counts[name] = min(best[name], t), n
        print(
            f"{args.clips} clips x {args.seconds:g} s at {args.rate} Hz, 16-bit; random {args.crop:g}-s "
            "crops "
            f"resampled to 16 kHz, batch 32, {args.workers} workers; best of {args.rounds} rounds"
        )
        base = counts["loose WAV files"] / best["loose WAV files"]
        print(f"{'source':18s} {'clips/s':>9s} {'vs loose':>9s} {'on disk':>10s} {'vs loose':>9s}")
        for name in sources:
            rate = counts[name] / best[name]
            print(
                f"{name:18s} {rate:9.1f} {rate / base:8.2f}x {sizes[name] / 2**20:8.0f} MB "
                f"{sizes[name] / sizes['loose WAV files']:8.2f}x"
            )
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
