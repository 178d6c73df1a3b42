"""``sedkit`` verbs of deployment: export (a checkpoint as one ONNX graph with its front end), convert (a
training checkpoint as a self-describing model file)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sed.cli.options import add_checkpoint, add_labels, add_precision, bounded, count, zero_shot
from sed.errors import SedError, UsageError
from sed.fileio import check_output


def _files_of(source: str) -> list[Path]:
    """A checkpoint source and, for a folder (a Hugging Face model), the files in it: inputs no output may
    replace."""
    path = Path(source)
    return [path, *(p for p in path.iterdir() if p.is_file())] if path.is_dir() else [path]


def _diffs(report: dict) -> str:
    return "; ".join(
        f"{graph} graph vs PyTorch: max |logit difference| {diff:.2e}"
        for graph, diff in report["max_abs_diffs"].items()
    )


def cmd_export_triton(args: argparse.Namespace, con, zs: dict) -> int:
    from sed.export.triton import export_triton

    try:
        r = export_triton(
            args.checkpoint,
            args.out,
            name=args.name,
            precision=args.precision,
            opset=args.opset,
            dynamic_batch=args.dynamic_batch,
            max_batch_size=16 if args.max_batch_size is None else args.max_batch_size,
            max_queue_delay_us=100 if args.max_queue_delay_us is None else args.max_queue_delay_us,
            overwrite=args.overwrite,
            **zs,
        )
    except (SedError, ValueError) as e:  # the job cannot start: exit 2, as --format onnx
        raise UsageError(e) from None
    batching = (
        f"max_batch_size {r['max_batch_size']}, dynamic batching within {r['max_queue_delay_us']} us"
        if r["max_batch_size"]
        else "a fixed-batch graph: max_batch_size 0"
    )
    labels = (
        f", {r['labels'].name} ({len(r['description']['labels'])} labels)" if r["labels"] else ", no labels"
    )
    diffs = _diffs(r)
    con.status(
        f"wrote Triton model {r['name']!r} in {args.out} ({args.precision}, opset {r['opset']}): "
        f"config.pbtxt ({batching}, KIND_CPU), 1/model.onnx{labels}" + (f"; {diffs}" if diffs else "")
    )
    return 0


def cmd_export(args: argparse.Namespace, con) -> int:
    from sed.export.onnx import export_checkpoint

    zs = zero_shot(args)  # {} or the zero-shot labels and template: a bad labels file stops here
    if args.format == "triton":
        return cmd_export_triton(args, con, zs)
    triton = (args.name, args.max_batch_size, args.max_queue_delay_us)
    if args.overwrite or any(v is not None for v in triton):
        raise UsageError(
            "--name, --max-batch-size, --max-queue-delay-us and --overwrite are for --format triton"
        )
    check_output(args.out, _files_of(args.checkpoint))
    try:
        report = export_checkpoint(
            args.checkpoint,
            args.out,
            precision=args.precision,
            opset=args.opset,
            dynamic_batch=args.dynamic_batch is not False,
            int8_attention=args.int8_attention,
            **zs,
        )
    except (SedError, ValueError) as e:
        raise UsageError(e) from None
    desc = report["description"]
    diffs = _diffs(report)
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

    p = sub.add_parser(
        "export",
        help="a checkpoint as one ONNX graph, front end inside (fp32 or int8), or a Triton model repository",
    )
    add_checkpoint(p, "any checkpoint sedkit classify takes (triton: also an exported .onnx, packaged as is)")
    p.add_argument(
        "--format",
        choices=["onnx", "triton"],
        default="onnx",
        help="onnx: one .onnx file; triton: an NVIDIA Triton model repository entry (OUT/NAME/config.pbtxt, "
        "OUT/NAME/1/model.onnx, OUT/NAME/labels.txt)",
    )
    p.add_argument(
        "--out",
        required=True,
        help="output .onnx file (written atomically); triton: the model repository folder (the other "
        "models in it are kept)",
    )
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
        default=None,
        help="a dynamic batch dimension, the default (--no-dynamic-batch: batch 1; triton: max_batch_size 0)",
    )
    add_labels(p)  # a zero-shot classifier of a CLAP source: the text embeddings baked into the graph
    add_precision(p, ("fp32", "int8"), "int8: ONNX Runtime's dynamic quantisation of the linear layers")
    p.add_argument(
        "--int8-attention",
        choices=["fp32", "fused"],
        default="fp32",
        help="with --precision int8: fp32 leaves attention as exported, only its linear layers "
        "int8; fused rewrites each self-attention block of timm's form as one com.microsoft.Attention "
        "node, quantised as QAttention (opset 23 exports)",
    )
    triton = p.add_argument_group("--format triton")
    triton.add_argument(
        "--name", default=None, help="the model's name in the repository (default: the checkpoint's stem)"
    )
    triton.add_argument(
        "--max-batch-size",
        type=count(1024),
        default=None,
        help="the most clips Triton batches into one call (default: 16)",
    )
    triton.add_argument(
        "--max-queue-delay-us",
        type=bounded(int, 0, 10_000_000, "US"),
        default=None,
        help="how long Triton's dynamic batcher waits to fill a batch, in microseconds (default: 100)",
    )
    triton.add_argument(
        "--overwrite", action="store_true", help="replace a model of the same name in the repository"
    )
    p.set_defaults(run=cmd_export)
