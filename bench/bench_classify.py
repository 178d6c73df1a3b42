"""sed's AST classification against the transformers audio-classification pipeline.

The same random AST weights (saved by this script in Hugging Face format) score the same
clips through (a) ``sed.Classifier`` and (b) ``transformers.pipeline("audio-classification")``.
Prints both times and their ratio, the max logit difference and the top-1 agreement, and the
achieved GFLOP/s of sed's AST forward against this machine's fp32 and bf16 matmul rates
measured in the same run.

    python bench/bench_classify.py                 # AST-base, 32 ten-second clips (minutes on a 2-core CPU)
    python bench/bench_classify.py --clips 8       # fewer clips
    python bench/bench_classify.py --quick         # a tiny AST, seconds
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch


def matmul_rate(dtype: torch.dtype, n: int = 2048, reps: int = 5, device: str = "cpu") -> float:
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device != "cpu":
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def ast_flops(model) -> float:
    """Multiply-adds x 2 of one AST forward (patch embedding, blocks, head); the front end excluded."""
    n, d = model.num_patches + 2, model.embed_dim
    hidden = model.blocks[0].mlp.fc1.out_features
    patch = model.num_patches * d * 16 * 16 * 2
    per_block = 2 * n * (4 * d * d + 2 * d * hidden) + 2 * 2 * n * n * d
    return patch + len(model.blocks) * per_block + 2 * d * model.num_classes


def timed(fn, reps: int = 1) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--quick", action="store_true", help="tiny AST and 4 short clips")
    args = ap.parse_args()

    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification, pipeline

    from sed.inference import Classifier

    if args.quick:
        args.clips, args.seconds = 4, 2.0
        cfg = ASTConfig(hidden_size=192, num_hidden_layers=2, num_attention_heads=3, intermediate_size=768,
                        max_length=200, num_labels=10)
    else:
        cfg = ASTConfig(num_labels=527)  # AST-base: 768 wide, 12 layers, 1024 frames
    torch.manual_seed(0)
    hf = ASTForAudioClassification(cfg).eval()
    rng = np.random.default_rng(0)
    clips = [rng.uniform(-0.5, 0.5, int(16000 * args.seconds)).astype(np.float32) for _ in range(args.clips)]

    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        ASTFeatureExtractor(max_length=cfg.max_length).save_pretrained(d)
        clf = Classifier.from_pretrained(d, device="cpu")
        clf_bf16 = Classifier(clf.model, clf.meta, device="cpu", precision="bf16")
        pipe = pipeline("audio-classification", model=d, device=-1)
        waves = [torch.from_numpy(c) for c in clips]

        def run_sed(c=clf):
            return c.score(waves, batch_size=args.batch_size)

        def run_pipe():
            return pipe([c.copy() for c in clips], batch_size=args.batch_size, top_k=1)

        t_sed = timed(run_sed)
        t_pipe = timed(run_pipe)
        t_bf16 = timed(lambda: run_sed(clf_bf16))

        fx = ASTFeatureExtractor(max_length=cfg.max_length)
        with torch.inference_mode():
            feats = fx(clips, sampling_rate=16000, return_tensors="pt")["input_values"]
            ref_logits = hf(feats).logits
            ours = clf.model(torch.stack(waves))
        max_diff = (ours - ref_logits).abs().max().item()
        pipe_top = [r[0]["label"] for r in run_pipe()]
        sed_top = [cfg.id2label[int(i)] for i in ours.argmax(-1)]
        agree = np.mean([a == b for a, b in zip(pipe_top, sed_top)])

        # model FLOP rate: the forward alone (front end excluded), timed on the same clips
        fbank = clf.model.frontend(torch.stack(waves[: args.batch_size]))
        with torch.inference_mode():
            t_fwd = timed(lambda: clf.model.forward_fbank(fbank), reps=2)
        achieved = ast_flops(clf.model) * fbank.shape[0] / t_fwd / 1e9

    r32, r16 = matmul_rate(torch.float32), matmul_rate(torch.bfloat16)
    n = args.clips
    print(f"clips: {n} x {args.seconds:.0f} s, model width {cfg.hidden_size}, {cfg.num_hidden_layers} layers, "
          f"{cfg.max_length} frames, batch {args.batch_size}, torch threads {torch.get_num_threads()}")
    print(f"sed fp32            {t_sed:8.2f} s  ({n / t_sed:6.2f} clips/s)")
    print(f"transformers pipe   {t_pipe:8.2f} s  ({n / t_pipe:6.2f} clips/s)")
    print(f"sed bf16            {t_bf16:8.2f} s  ({n / t_bf16:6.2f} clips/s)")
    print(f"ratio pipeline/sed fp32: {t_pipe / t_sed:.2f}x (target >= 1.0)")
    print(f"ratio pipeline fp32/sed bf16: {t_pipe / t_bf16:.2f}x (target >= 1.6)")
    print(f"max |logit difference| vs transformers: {max_diff:.2e} (target <= 1e-4); top-1 agreement {agree:.0%}")
    print(f"AST forward: {achieved:.1f} GFLOP/s; matmul fp32 {r32:.1f} GFLOP/s, bf16 {r16:.1f} GFLOP/s; "
          f"{achieved / r32:.0%} of the fp32 matmul rate (target >= 85%)")


if __name__ == "__main__":
    main()
