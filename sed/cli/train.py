"""``sedkit`` verbs of training: fit/validate/test/predict (LightningCLI), kfold, finetune, plot, demo."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from sed.cli.options import Parser
from sed.errors import SedError

LIGHTNING_VERBS = ("fit", "validate", "test", "predict")
TRACEBACK_ENV = "SED_TRACEBACK"


def training_verb(run: Callable[[list[str], object], int]) -> Callable[[Sequence[str], object], int]:
    """A training verb whose user and configuration errors are one ``error:`` line (the cause found in the
    exception chain: sed's error naming the file, else the innermost message; exit 2 when the job cannot
    start), with ``--traceback`` (or ``SED_TRACEBACK=1``) printing the whole chain before it."""

    def verb(argv: Sequence[str], con) -> int:
        from sed.training.lightning_cli import lightning_errors

        argv = list(argv)
        trace = "--traceback" in argv or os.environ.get(TRACEBACK_ENV, "") not in ("", "0")
        argv = [a for a in argv if a != "--traceback"]
        try:
            with lightning_errors():
                return run(argv, con)
        except SedError:
            if trace:
                traceback.print_exc(file=sys.stderr)
            raise

    verb.__name__ = run.__name__
    return verb


def lightning(argv: Sequence[str], con) -> int:
    from sed.training.lightning_cli import run_lightning

    return run_lightning(argv)


def kfold(argv: Sequence[str], con) -> int:
    from sed.cli.report import format_kfold
    from sed.training.kfold import run_kfold

    p = Parser(prog="sedkit kfold", description="one run per held-out fold; metrics with mean and std")
    p.add_argument("--config", action="append", required=True, help="LightningCLI config YAML (repeatable)")
    p.add_argument("--folds", required=True, help="comma-separated fold numbers, e.g. 1,2,3,4,5")
    p.add_argument("--root", default=None, help="output folder (default: runs/kfold-<config name>)")
    p.add_argument(
        "--ckpt", choices=["best", "last"], default="best", help="checkpoint tested on the held-out fold"
    )
    args, rest = p.parse_known_args(argv[1:])
    try:
        folds = [int(f) for f in args.folds.split(",") if f.strip()]
    except ValueError:
        p.error(f"--folds must be comma-separated integers, got {args.folds!r}")
    root = Path(args.root or f"runs/kfold-{Path(args.config[-1]).stem}")
    config_args = [a for c in args.config for a in ("--config", c)] + rest
    rows, summary = run_kfold(config_args, folds, root, ckpt=args.ckpt)
    print(format_kfold(rows, summary))
    con.status(f"per-fold runs and kfold.csv / kfold.json in {root}")
    return 0


def pretrained_families() -> str:
    """The model families that take pretrained weights (``finetune --from``), comma-separated."""
    import sed.models  # noqa: F401 - registers the families
    from sed.models.family import families

    return ", ".join(f.name for f in families() if f.importer)


def finetune(argv: Sequence[str], con) -> int:
    from sed.errors import UsageError

    p = argparse.ArgumentParser(
        prog="sedkit finetune",
        add_help=False,
        description="fit from a pretrained source with a new head: sedkit finetune --from SRC "
        "takes every option of sedkit fit (below) and sets "
        "--model.init_args.pretrained=SRC",
    )
    p.add_argument(
        "--from",
        dest="source",
        metavar="SRC",
        help="sed checkpoint, AST .pth, HF dir/hub id, short name or timm DeiT name, of a family with "
        f"pretrained weights ({pretrained_families()}); the config's model_name is of that family",
    )
    p.add_argument("-h", "--help", action="store_true", help="this help, then sedkit fit's")
    args, rest = p.parse_known_args(argv[1:])
    if args.help:
        print(p.format_help())
        return lightning(["fit", "--help"], con)
    if not args.source:
        raise UsageError("sedkit finetune needs --from SRC (sedkit finetune --help)")
    return lightning(["fit", *rest, f"--model.init_args.pretrained={args.source}"], con)


#: verbs that parse their own arguments: ``sedkit VERB ARGV...`` calls ``RAW_VERBS[VERB](argv, console)``
RAW_VERBS = {
    verb: training_verb(run)
    for verb, run in {
        **dict.fromkeys(LIGHTNING_VERBS, lightning),
        "kfold": kfold,
        "finetune": finetune,
    }.items()
}


def cmd_plot(args: argparse.Namespace, con) -> int:
    from sed.metrics.run_report import plot_run

    out = plot_run(args.run_dir)
    diag = out.get("diagnosis")
    if diag is not None:
        print(f"diagnosis: {diag.kind}: {diag.message}")
    for path in out["files"].values():
        print(path)
    for note in out.get("notes", []):
        con.note(note)
    return 0


def cmd_demo(args: argparse.Namespace, con) -> int:
    from sed.cli.report import format_predictions
    from sed.training.demo import run_demo

    return run_demo(args.workdir, size=args.size, present=lambda rows: format_predictions(rows, "table"))


def add_verbs(sub) -> None:
    for verb in LIGHTNING_VERBS:
        sub.add_parser(
            verb,
            add_help=False,
            help=f"LightningCLI {verb}: sedkit {verb} --config YAML [--section.key value ...]",
        )
    sub.add_parser(
        "kfold", add_help=False, help="k-fold cross-validation: sedkit kfold --config YAML --folds 1,2,3,4,5"
    )
    sub.add_parser(
        "finetune",
        add_help=False,
        help="fit from a pretrained source: sedkit finetune --from SRC --config YAML",
    )

    p = sub.add_parser("plot", help="learning curves, diagnosis, confusion matrix of a run directory")
    p.add_argument("run_dir")
    p.set_defaults(run=cmd_plot)

    p = sub.add_parser(
        "demo", help="the whole road on synthetic data: synth, train, evaluate, plot, classify"
    )
    p.add_argument("--workdir", default="work/demo", help="folder of the corpus, runs and pictures")
    p.add_argument("--size", choices=["ci", "full"], default="full", help="ci: a smaller, faster run")
    p.set_defaults(run=cmd_demo)
