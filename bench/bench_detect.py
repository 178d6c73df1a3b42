"""``sedkit detect`` on long files on a CPU: real-time factor per family, and peak memory 10 min vs 1 h.

For each model (a registry size built with ``frame_pooling="attention"``, random weights saved with
``sed.checkpoint.save_model``; a family without a frame head is listed as such), a child process loads the
checkpoint into :class:`sed.inference.detect.Detector` and scores a synthetic 16 kHz PCM-16 WAV of
``--minutes`` (default 10) block-wise, then events (median filter 0.45 s, threshold 0.5): the real-time
factor is the scoring time over the audio's duration (model load excluded), ``frames/s`` the file's
output frames. The child reports its peak resident memory (``ru_maxrss``) and its resident memory after
loading the model; with ``--long-minutes`` (default 60) it runs again on the longer file, so the table
shows whether memory grows with the file (it should not, beyond the frame scores ``[F, C]``).

    python bench/bench_detect.py                                  # the default sizes, 10 min and 1 h
    python bench/bench_detect.py --models cnn_tiny,tcn_tiny --minutes 2 --long-minutes 10 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SR = 16000
ROOT = Path(__file__).resolve().parents[1]
DEFAULT = "cnn_tiny,tcn_tiny,efficientat_mn04,ast_micro,beats_micro,ced_tiny,crnn_dcase2024"


def _write_wav(path: Path, minutes: float) -> None:
    import soundfile as sf

    rng = np.random.default_rng(0)
    chunk = (0.05 * rng.standard_normal(60 * SR)).astype(np.float32)
    chunk[: 10 * SR] *= 6  # some louder stretches
    with sf.SoundFile(path, "w", SR, 1, "PCM_16") as f:
        for _ in range(int(minutes)):
            f.write(chunk)
        f.write(chunk[: int((minutes % 1) * 60 * SR)])


def _checkpoint(name: str, folder: Path) -> tuple[Path | None, str]:
    import torch

    from sed.checkpoint import save_model
    from sed.models import create_model
    from sed.models.frames import is_frame_model

    torch.manual_seed(0)
    try:
        model = create_model(name, num_classes=10, frame_pooling="attention")
    except (TypeError, ValueError) as e:
        return None, f"no frame head ({str(e).splitlines()[0][:60]})"
    if not is_frame_model(model):
        return None, "no frame head"
    path = folder / f"{name}.pt"
    save_model(path, model, labels=[f"class{i}" for i in range(10)])
    return path, ""


def child(ckpt: str, wav: str, threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)
    from sed.inference.detect import Detector

    det = Detector.from_pretrained(ckpt, device="cpu")
    loaded = _rss_mb()
    t0 = time.perf_counter()
    (d,) = det.detect([wav], thresholds=0.5, median=0.45)
    seconds = time.perf_counter() - t0
    assert d.error is None, d.error
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "seconds": seconds,
                "rtf": seconds / d.duration,
                "frames": int(len(d.probs)),
                "events": len(d.events),
                "hop_ms": det.hop * 1000,
                "block_s": det.block / det.sample_rate,
                "rss_loaded_mb": loaded,
                "rss_peak_mb": peak,
            }
        )
    )


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _run_child(ckpt: Path, wav: Path, threads: int | None) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        str(ckpt),
        str(wav),
        *(["--threads", str(threads)] if threads else []),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:
        return {"error": (out.stderr.strip().splitlines() or ["?"])[-1][:80]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=DEFAULT)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--long-minutes", type=float, default=60.0, help="0: no long run")
    p.add_argument("--long-models", default=None, help="the models run on the long file (default: all)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(*args.child, args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        short, long = tmp / "short.wav", tmp / "long.wav"
        _write_wav(short, args.minutes)
        if args.long_minutes:
            _write_wav(long, args.long_minutes)
        long_models = set((args.long_models or args.models).split(","))
        print(
            f"| model | frame hop (ms) | block (s) | RTF ({args.minutes:g} min) "
            f"| peak RSS {args.minutes:g} min (MB) "
            f"| peak RSS {args.long_minutes:g} min (MB) | RSS after load (MB) |"
        )
        print("|---|---|---|---|---|---|---|")
        for name in args.models.split(","):
            ckpt, why = _checkpoint(name, tmp)
            if ckpt is None:
                print(f"| {name} | {why} | | | | | |")
                continue
            r = _run_child(ckpt, short, args.threads)
            if "error" in r:
                print(f"| {name} | failed: {r['error']} | | | | | |")
                continue
            big = _run_child(ckpt, long, args.threads) if args.long_minutes and name in long_models else {}
            big_rss = f"{big['rss_peak_mb']:.0f}" if "rss_peak_mb" in big else big.get("error", "")
            print(
                f"| {name} | {r['hop_ms']:.0f} | {r['block_s']:g} | {r['rtf']:.4f} | {r['rss_peak_mb']:.0f} "
                f"| {big_rss} | {r['rss_loaded_mb']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
