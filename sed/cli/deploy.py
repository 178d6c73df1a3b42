"""``sedkit`` verbs of deployment: export (a checkpoint as one ONNX graph with its front end), convert (a
training checkpoint as a self-describing model file)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sed.cli.options import add_checkpoint, add_precision
from sed.errors import SedError, UsageError
from sed.fileio import check_output


def _files_of(source: str) -> list[Path]:
    """A checkpoint source and, for a folder (a Hugging Face model), the files in it: inputs no output may
    replace."""
    path = Path(source)
    return [path, *(p for p in path.iterdir() if p.is_file())] if path.is_dir() else [path]


def cmd_export(args: argparse.Namespace, con) -> int:
    from sed.export.onnx import export_checkpoint

    check_output(args.out, _files_of(args.checkpoint))
    try:
        report = export_checkpoint(
            args.checkpoint,
            args.out,
            precision=args.precision,
            opset=args.opset,
            dynamic_batch=args.dynamic_batch,
            int8_attention=args.int8_attention,
        )
    except (SedError, ValueError) as e:
        raise UsageError(e) from None
    desc = report["description"]
    diffs = "; ".join(
        f"{graph} graph vs PyTorch: max |logit difference| {diff:.2e}"
        for graph, diff in report["max_abs_diffs"].items()
    )
    if args.precision == "int8":
        diffs += (
            f"; int8: {desc.get('int8_nodes', 0)} linear layers, "
            f"{desc.get('int8_attention', 0)} attention blocks fused (QAttention)"
        )
    con.status(
        f"wrote {report['path']} ({args.precision}, opset {report['opset']}): waveform [batch, samples] at "
        f"{desc['sample_rate']} Hz -> logits [batch, {len(desc['labels']) or '?'}], embedding; {diffs}"
    )
    return 0


def cmd_convert(args: argparse.Namespace, con) -> int:
    from sed.checkpoint import convert_checkpoint

    check_output(args.out, [args.checkpoint])
    path, desc = convert_checkpoint(args.checkpoint, args.out)
    con.status(
        f"wrote {path}: {desc['model_name']}, {len(desc.get('labels') or [])} labels, "
        f"{desc.get('sample_rate')} Hz (load it with --checkpoint or sed.load_model)"
    )
    return 0


def add_verbs(sub) -> None:
    p = sub.add_parser(
        "convert", help="a training checkpoint (.ckpt) as a self-describing model file (.pt, .safetensors)"
    )
    add_checkpoint(p, "a sed checkpoint: a .ckpt written by sed training, .pt or .safetensors")
    p.add_argument(
        "--out",
        required=True,
        help="output file (written atomically): .safetensors by extension, else a torch .pt file; "
        "the model's weights and description only, no optimiser state",
    )
    p.set_defaults(run=cmd_convert)

    p = sub.add_parser("export", help="a checkpoint as one ONNX graph, front end inside (fp32 or int8)")
    add_checkpoint(p, "any checkpoint sedkit classify takes")
    p.add_argument("--format", choices=["onnx"], default="onnx", help="the graph's format")
    p.add_argument("--out", required=True, help="output .onnx file (written atomically)")
    p.add_argument(
        "--opset",
        type=int,
        default=None,
        help="ONNX opset, one torch's exporter writes: 18 (older runtimes) to 23 (the default, "
        "which has the Attention op)",
    )
    p.add_argument(
        "--dynamic-batch",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="a dynamic batch dimension (--no-dynamic-batch: batch 1)",
    )
    add_precision(p, ("fp32", "int8"), "int8: ONNX Runtime's dynamic quantisation of the linear layers")
    p.add_argument(
        "--int8-attention",
        choices=["fused", "fp32"],
        default="fused",
        help="with --precision int8: fused (the default) rewrites each self-attention block of timm's form "
        "as one com.microsoft.Attention node, quantised as QAttention (opset 23 exports); fp32 leaves "
        "attention as exported, only its linear layers int8",
    )
    p.set_defaults(run=cmd_export)
