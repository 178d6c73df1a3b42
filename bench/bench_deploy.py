"""Deployment paths side by side: the transformers pipeline, sed in fp32 / bf16 / int8, and the exported
ONNX graph (fp32 and int8) in ONNX Runtime.

The same random AST-base weights (written by this script in Hugging Face format; the classifier
head is scaled by ``--head-scale`` so that the logits spread like a trained model's instead of
near-ties) score the same clips (``--clips`` ten-second synthetic clips: tones, chirps, noises,
clicks, harmonic stacks) through:

- ``transformers pipe``: ``transformers.pipeline("audio-classification")`` (its feature extractor + model)
- ``sed fp32`` / ``sed bf16`` / ``sed int8``: ``sed.Classifier`` (int8: dynamic int8 linear layers)
- ``ort fp32`` / ``ort int8`` / ``ort int8 fused``: ``sed.Classifier`` on the file ``sedkit export`` writes
  (the front end inside the graph), run by ONNX Runtime; ``ort int8`` quantises the linear layers only
  (the default ``sedkit export --precision int8``), ``ort int8 fused`` first fuses each self-attention
  block into ONNX Runtime's ``Attention`` and quantises it as ``QAttention`` (``--int8-attention fused``)

Every method runs once per round, the methods interleaved, ``--rounds`` rounds after a one-batch
warm-up each; each is reported by its best round. Per method: time, clips/s, the ratio to the
pipeline, max |logit difference| to sed fp32 and top-1 agreement with sed fp32, on all clips and on
the clips whose fp32 top-1 logit leads the second by more than ``--margin`` x the clip's logit
range (max - min): the "not near-tie" clips, where a different top-1 is a real disagreement.

``--stream-minutes M`` adds ``bench/bench_stream.py``'s measurement of ``sedkit stream`` (per-hop
latency and resident memory over M minutes of input).

    python bench/bench_deploy.py                 # AST-base, 32 x 10 s clips (about 30 minutes on 2 cores)
    python bench/bench_deploy.py --quick         # a tiny AST, seconds
    python bench/bench_deploy.py --clips 8 --rounds 3 --methods "sed fp32,ort int8,ort int8 fused"
                                                 # the int8 rows only (AST-base, 8 clips: ~5 minutes idle)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_classify import hf_ast  # the same transformers baseline


def synthetic_clips(n: int, seconds: float, seed: int = 0) -> list[torch.Tensor]:
    from sed.data.synth import signals as s

    kinds = [
        s.tone,
        s.chirp,
        s.noise_burst,
        s.click_train,
        s.harmonic_stack,
        s.am_tone,
        s.fm_tone,
        s.hiss,
        s.plucks,
        s.beeps,
        s.rumble,
        s.bandpass_noise,
    ]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        x = kinds[i % len(kinds)](rng, int(16000 * seconds), 16000)
        out.append(torch.from_numpy((0.5 * x / max(np.abs(x).max(), 1e-6)).astype(np.float32)))
    return out


def logits_of(model, waves: list[torch.Tensor], bs: int) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate(
            [model(torch.stack(waves[i : i + bs])).float().numpy() for i in range(0, len(waves), bs)]
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--head-scale", type=float, default=30.0)
    ap.add_argument(
        "--margin", type=float, default=0.02, help="near-tie threshold, a share of the logit range"
    )
    ap.add_argument("--stream-minutes", type=float, default=0.0)
    ap.add_argument("--quick", action="store_true", help="tiny AST and 4 short clips")
    ap.add_argument(
        "--methods", default="", help="comma-separated rows to run (default all); sed fp32 always runs"
    )
    args = ap.parse_args()

    from transformers import ASTFeatureExtractor, pipeline

    from sed.export.onnx import export_onnx
    from sed.export.quantize import quantize_onnx
    from sed.inference.classifier import Classifier

    if args.quick:
        args.clips, args.seconds = 4, 2.0
    hf = hf_ast(args.quick)
    cfg = hf.config
    with torch.no_grad():
        hf.classifier.dense.weight.mul_(args.head_scale)
    waves = synthetic_clips(args.clips, args.seconds)
    clips = [w.numpy() for w in waves]
    bs = args.batch_size

    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        hf.save_pretrained(d / "hf")
        ASTFeatureExtractor(max_length=cfg.max_length).save_pretrained(d / "hf")
        sed32 = Classifier.from_pretrained(d / "hf", device="cpu")
        t = time.perf_counter()
        report = export_onnx(sed32.model, d / "fp32.onnx", source=d / "hf")
        t_export = time.perf_counter() - t
        quantize_onnx(d / "fp32.onnx", d / "int8.onnx", attention="fp32")
        quantize_onnx(d / "fp32.onnx", d / "int8_fused.onnx", attention="fused")
        methods = {
            "transformers pipe": pipeline("audio-classification", model=str(d / "hf"), device=-1),
            "sed fp32": sed32,
            "sed bf16": Classifier(sed32.model, sed32.meta, device="cpu", precision="bf16"),
            "sed int8": Classifier(sed32.model, sed32.meta, device="cpu", precision="int8"),
            "ort fp32": Classifier.from_pretrained(d / "fp32.onnx"),
            "ort int8": Classifier.from_pretrained(d / "int8.onnx"),
            "ort int8 fused": Classifier.from_pretrained(d / "int8_fused.onnx"),
        }
        if args.methods:
            keep = {m.strip() for m in args.methods.split(",")} | {"sed fp32"}
            if keep - set(methods):
                ap.error(f"unknown methods: {', '.join(sorted(keep - set(methods)))}")
            methods = {k: v for k, v in methods.items() if k in keep}

        def run(name, n=args.clips):
            m = methods[name]
            if name == "transformers pipe":
                return m([c.copy() for c in clips[:n]], batch_size=bs, top_k=1)
            return m.score(waves[:n], batch_size=bs)

        times = {k: [] for k in methods}
        for name in methods:
            run(name, min(bs, args.clips))  # warm-up: one batch
        for _ in range(args.rounds):
            for name in methods:
                t = time.perf_counter()
                run(name)
                times[name].append(time.perf_counter() - t)

        fx = ASTFeatureExtractor(max_length=cfg.max_length)
        logits = {}
        with torch.inference_mode():
            feats = fx(clips, sampling_rate=16000, return_tensors="pt")["input_values"]
            if "transformers pipe" in methods:
                logits["transformers pipe"] = torch.cat(
                    [hf(feats[i : i + bs]).logits for i in range(0, len(clips), bs)]
                ).numpy()
        for name, m in methods.items():
            if name != "transformers pipe":
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=name == "sed bf16"):
                    logits[name] = logits_of(m.model, waves, bs)

    ref = logits["sed fp32"]
    top2 = np.sort(ref, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > args.margin * (ref.max(1) - ref.min(1))
    best = {k: min(v) for k, v in times.items()}
    n = args.clips
    print(
        f"AST width {cfg.hidden_size}, {cfg.num_hidden_layers} layers, {cfg.max_length} frames, "
        f"{cfg.num_labels} classes "
        f"(random weights, head x{args.head_scale:g}); {n} clips x {args.seconds:g} s, batch {bs}, "
        f"torch threads {torch.get_num_threads()}, best of {args.rounds} interleaved rounds"
    )
    print(
        f"export: {t_export:.0f} s; the fp32 graph vs PyTorch on 2 random clips: max |logit difference| "
        f"{report['max_abs_diff']:.1e}"
    )
    print(f"not-near-tie clips (top-1 lead > {args.margin:g} x logit range): {int(clear.sum())} of {n}")
    print(
        f"{'method':18s} {'time':>8s} {'clips/s':>8s} {'vs sed32':>8s} {'vs pipe':>8s} {'max|dlogit|':>12s} "
        f"{'top-1 agree':>12s} {'(not near-tie)':>14s}"
    )
    t_pipe, t_sed = best.get("transformers pipe", float("nan")), best["sed fp32"]
    for name in methods:
        diff = np.abs(logits[name] - ref).max()
        agree = logits[name].argmax(1) == ref.argmax(1)
        clear_agree = agree[clear].mean() if clear.any() else float("nan")
        print(
            f"{name:18s} {best[name]:7.2f}s {n / best[name]:8.2f} {t_sed / best[name]:7.2f}x "
            f"{t_pipe / best[name]:7.2f}x {diff:12.2e} {agree.mean():12.1%} {clear_agree:14.1%}"
        )
    targets = []
    if "ort fp32" in methods:
        targets.append(
            f"ort fp32 / sed fp32 speed {t_sed / best['ort fp32']:.2f}x (>= 1.0), "
            f"|dlogit| {np.abs(logits['ort fp32'] - ref).max():.1e} (<= 1e-4)"
        )
    int8 = [k for k in methods if "int8" in k]
    if int8:
        top = min(int8, key=best.get)
        targets.append(f"best int8 ({top}) vs sed fp32 {t_sed / best[top]:.2f}x (>= 3)")
    print("targets: " + "; ".join(targets))
    if args.stream_minutes:
        from bench_stream import main as stream_main

        stream_main(["--minutes", str(args.stream_minutes)])


if __name__ == "__main__":
    main()
