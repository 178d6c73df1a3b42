"""`sedkit` verbs of training: fit/validate/test/predict (LightningCLI), kfold, finetune, plot, demo."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from sed.cli import EXIT_FAILED, EXIT_OK, report
from sed.errors import SedError

# ---------------------------------------------------------------------------------- training
LIGHTNING_VERBS = ("fit", "validate", "test", "predict")


def lightning(argv: Sequence[str]) -> int:
    from sed.training import run_lightning

    try:
        return run_lightning(argv)
    except SedError as e:
        report(e)
        return EXIT_FAILED


def cmd_kfold(argv: Sequence[str]) -> int:
    from sed.kfold import format_kfold, run_kfold

    p = argparse.ArgumentParser(prog="sedkit kfold", description="one run per held-out fold; metrics with mean and std")
    p.add_argument("--config", action="append", required=True, help="LightningCLI config YAML (repeatable)")
    p.add_argument("--folds", required=True, help="comma-separated fold numbers, e.g. 1,2,3,4,5")
    p.add_argument("--root", default=None, help="output folder (default: runs/kfold-<config name>)")
    p.add_argument("--ckpt", choices=["best", "last"], default="best", help="checkpoint tested on the held-out fold")
    args, rest = p.parse_known_args(argv)
    try:
        folds = [int(f) for f in args.folds.split(",") if f.strip()]
    except ValueError:
        p.error(f"--folds must be comma-separated integers, got {args.folds!r}")
    root = Path(args.root or f"runs/kfold-{Path(args.config[-1]).stem}")
    config_args = [a for c in args.config for a in ("--config", c)] + rest
    try:
        rows, summary = run_kfold(config_args, folds, root, ckpt=args.ckpt)
    except SedError as e:
        report(e)
        return EXIT_FAILED
    print(format_kfold(rows, summary))
    print(f"per-fold runs and kfold.csv / kfold.json in {root}", file=sys.stderr)
    return EXIT_OK


def cmd_finetune(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="sedkit finetune", description="fit from a pretrained source with a new head")
    p.add_argument("--from", dest="source", required=True,
                   help="sed checkpoint, AST .pth, HF dir/hub id, short name or timm DeiT name")
    args, rest = p.parse_known_args(argv)
    return lightning(["fit", *rest, f"--model.init_args.pretrained={args.source}"])


def cmd_plot(args: argparse.Namespace) -> int:
    from sed.plots import plot_run

    try:
        out = plot_run(args.run_dir)
    except SedError as e:
        report(e)
        return EXIT_FAILED
    diag = out.get("diagnosis")
    if diag is not None:
        print(f"diagnosis: {diag.kind}: {diag.message}")
    for path in out["files"].values():
        print(path)
    for note in out.get("notes", []):
        print(f"note: {note}", file=sys.stderr)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from sed.demo import run_demo

    try:
        return run_demo(args.workdir, size=args.size)
    except SedError as e:
        report(e)
        return EXIT_FAILED
