"""CPU latency per clip of the compact CNN students against AST-Base, as ratios.

Each model (random weights: latency does not depend on them) scores one clip at a time (batch 1)
through its whole forward, front end included, under ``torch.inference_mode`` on the CPU; after
warm-up forwards the median of the timed repeats is reported, with the parameter count and the
speed-up over AST-Base (``ast_time / model_time``). Checkpoints (``--checkpoint``, repeatable) are
timed the same way at their own clip length. Absolute times depend on the machine and its load;
the ratios are the result.

    python bench/bench_student.py                   # cnn_tiny/small/base vs AST-Base, 5-s clips
    python bench/bench_student.py --quick           # fewer repeats (AST-Base still included)
    python bench/bench_student.py --threads 1       # single-threaded latency
    python bench/bench_student.py --checkpoint runs/distill_ci/student/checkpoints/best-*.ckpt
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def latency(model: torch.nn.Module, seconds: float, sample_rate: int, warmup: int, repeats: int) -> float:
    """Median seconds of one forward of a batch-1 clip of ``seconds``."""
    wave = torch.randn(1, int(round(seconds * sample_rate))) * 0.1
    lengths = torch.tensor([wave.shape[1]])
    model.eval()
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(wave, lengths=lengths)
        for _ in range(repeats):
            t = time.perf_counter()
            model(wave, lengths=lengths)
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip-seconds", type=float, default=5.0)
    ap.add_argument("--num-classes", type=int, default=50)
    ap.add_argument("--models", default="cnn_tiny,cnn_small,cnn_base", help="registry students")
    ap.add_argument("--reference", default="ast_base", help="the model the ratios are against")
    ap.add_argument(
        "--checkpoint", action="append", default=[], help="also time this checkpoint (repeatable)"
    )
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--quick", action="store_true", help="5 repeats, 1 warm-up")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    warmup, repeats = (1, 5) if args.quick else (args.warmup, args.repeats)
    from sed.models import create_model
    from sed.models.loading import load_model

    torch.manual_seed(0)
    rows = []
    names = [args.reference] + [m for m in args.models.split(",") if m]
    for name in names:
        # AST: the Kaldi fbank frames of the clip (25 ms window, 10 ms shift at 16 kHz: 5 s -> 498)
        kw = (
            {"input_tdim": 1 + (int(round(args.clip_seconds * 16000)) - 400) // 160}
            if name.startswith("ast")
            else {"clip_seconds": args.clip_seconds}
        )
        model = create_model(name, num_classes=args.num_classes, **kw)
        sr = int(getattr(model, "sample_rate", 16000))
        rows.append(
            {
                "model": name,
                "params": params(model),
                "seconds": args.clip_seconds,
                "latency_s": latency(model, args.clip_seconds, sr, warmup, repeats),
            }
        )
        del model
    for path in args.checkpoint:
        model, meta = load_model(path)
        sr = int(meta.get("sample_rate") or 16000)
        secs = (meta.get("clip_samples") or args.clip_seconds * sr) / sr
        lat = latency(model, secs, sr, warmup, repeats)
        rows.append(
            {
                "model": f"{meta['model_name']} ({path})",
                "params": params(model),
                "seconds": secs,
                "latency_s": lat,
            }
        )
    ref = rows[0]["latency_s"]
    print(
        f"CPU, batch 1, {torch.get_num_threads()} threads, median of {repeats} after {warmup} warm-up; "
        f"speed-up = {args.reference} time / model time ({args.clip_seconds:g}-s clip for the registry "
        "models)"
    )
    print(f"{'model':<40} {'params':>12} {'clip s':>7} {'ms/clip':>9} {'speed-up':>9}")
    for r in rows:
        r["speedup"] = ref / r["latency_s"]
        name = r["model"] if len(r["model"]) <= 40 else r["model"][:37] + "..."
        print(
            f"{name:<40} {r['params']:>12,} {r['seconds']:>7.2f} {r['latency_s'] * 1e3:>9.2f} "
            f"{r['speedup']:>8.1f}x"
        )
    return rows


if __name__ == "__main__":
    main()
