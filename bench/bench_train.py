"""Training throughput (clips per second) of AST-base and of a compact CNN through ClassificationTask.

Each step is the task's own training_step (front end, SpecAugment, forward, loss) plus backward and
an optimiser step, on random 10-s clips. On a GPU it runs bf16-mixed and also prints the model FLOP
utilisation against the bf16 matmul rate measured in the same run.

    python bench/bench_train.py                 # AST-base and cnn_small
    python bench/bench_train.py --quick         # AST-tiny, fewer steps
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_classify import ast_flops, matmul_rate

from sed.tasks import ClassificationTask


def throughput(
    model_name: str, device: str, batch: int, steps: int, seconds: float, **model_kwargs
) -> tuple[float, object]:
    task = (
        ClassificationTask(
            model_name=model_name, num_classes=50, model_kwargs=model_kwargs, lr=1e-4, freqm=24, timem=96
        )
        .to(device)
        .train()
    )
    opt = torch.optim.Adam([p for p in task.parameters() if p.requires_grad], lr=1e-4)
    wave = torch.randn(batch, int(16000 * seconds), device=device) * 0.1
    batch_dict = {
        "wave": wave,
        "lengths": torch.full((batch,), wave.shape[1], device=device),
        "label": torch.randint(0, 50, (batch,), device=device),
    }
    amp = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda")

    def step():
        with amp:
            loss = task.training_step(batch_dict, 0)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    task.log = lambda *a, **k: None  # no trainer attached: logging is a no-op here
    step()
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t), task.model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    dev = args.device
    big = "ast_tiny" if args.quick else "ast_base"
    batch, steps = (2, 2) if dev == "cpu" else (24, 10)
    rate_big, model = throughput(big, dev, batch, steps, 10.0, input_tdim=1024)
    rate_cnn, _ = throughput("cnn_small", dev, batch * 4, steps, 10.0, clip_seconds=10.0)
    print(
        f"device {dev}, torch threads {torch.get_num_threads()}, 10-s clips, "
        f"{'bf16-mixed' if dev == 'cuda' else 'fp32'}"
    )
    print(f"{big:10s} {rate_big:8.2f} clips/s (batch {batch})")
    print(
        f"cnn_small  {rate_cnn:8.2f} clips/s (batch {batch * 4}); ratio cnn_small/{big}: "
        f"{rate_cnn / rate_big:.1f}x"
    )
    if dev == "cuda":
        peak = matmul_rate(torch.bfloat16, n=8192, device="cuda")
        achieved = 3 * ast_flops(model) * rate_big / 1e9  # forward + backward ~ 3x forward
        print(
            f"{big} model FLOP utilisation: {achieved:.0f} GFLOP/s of {peak:.0f} (bf16 matmul) = "
            f"{achieved / peak:.0%}"
        )


if __name__ == "__main__":
    main()
