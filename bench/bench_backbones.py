"""CPU inference time per 10-s clip and parameters of every backbone family next to AST-Base, as ratios.

Each model (random weights, AudioSet's 527-class head) scores one 10-s clip at its own sample rate
(batch 1) through its whole forward, front end included, under ``torch.inference_mode`` on the CPU,
at its published input length (AST-Base 1024 frames, BEATs 998, CED 1001, EfficientAT 1000 at 32 kHz);
after warm-up the median of the timed repeats is reported with the parameter count and both ratios to
AST-Base. Denormal floats are flushed to zero (random-weight MobileNets produce them and would be
timed ~100x slow; trained weights do not). Absolute times depend on the machine; the ratios are the result.

    python bench/bench_backbones.py                  # every family's sizes
    python bench/bench_backbones.py --quick          # fewer repeats
    python bench/bench_backbones.py --models ced_mini,efficientat_mn10 --threads 1
"""

from __future__ import annotations

import argparse

import torch
from bench_student import latency, params  # the same timing as the student bench

DEFAULT = (
    "beats_iter3,ced_tiny,ced_mini,ced_small,ced_base,efficientat_mn04,efficientat_mn05,efficientat_mn10,"
    "efficientat_mn20,efficientat_mn30,efficientat_mn40"
)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=DEFAULT)
    ap.add_argument("--reference", default="ast_base")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--quick", action="store_true", help="3 repeats, 1 warm-up")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    warmup, repeats = (1, 3) if args.quick else (args.warmup, args.repeats)
    from sed.models import create_model

    rows = []
    for name in [args.reference] + [m for m in args.models.split(",") if m]:
        torch.manual_seed(0)
        model = create_model(
            name, num_classes=527, **({"input_tdim": 1024} if name.startswith("ast") else {})
        )
        sr = int(model.sample_rate)
        rows.append(
            {
                "model": name,
                "params": params(model),
                "sample_rate": sr,
                "latency_s": latency(model, 10.0, sr, warmup, repeats),
            }
        )
        del model
    ref = rows[0]
    print(
        f"CPU, batch 1, one 10-s clip, {torch.get_num_threads()} threads, median of {repeats} after {warmup} "
        "warm-up; "
        f"ratios to {args.reference}"
    )
    print(f"{'model':<20} {'params':>12} {'rate':>6} {'ms/clip':>9} {'time ratio':>11} {'params ratio':>13}")
    for r in rows:
        r["time_ratio"], r["params_ratio"] = r["latency_s"] / ref["latency_s"], r["params"] / ref["params"]
        print(
            f"{r['model']:<20} {r['params']:>12,} {r['sample_rate']:>6} {r['latency_s'] * 1e3:>9.1f} "
            f"{r['time_ratio']:>10.3f}x {r['params_ratio']:>12.3f}x"
        )
    return rows


if __name__ == "__main__":
    main()
