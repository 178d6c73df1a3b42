"""``sedkit`` verbs of classification: classify (one checkpoint or an ensemble), embed, ensemble-eval."""

from __future__ import annotations

import argparse

from sed.cli.options import (
    TOP_K,
    add_batch_size,
    add_checkpoint,
    add_device,
    add_labels,
    add_precision,
    seconds,
    zero_shot,
)
from sed.errors import SedError, UsageError


def _classifiers(args: argparse.Namespace, need_classes: bool = True) -> list:
    """The Classifier of every --checkpoint; an unusable one is a usage error (one without classes too,
    unless ``need_classes`` is False: a model to embed with)."""
    from sed.inference.classifier import Classifier

    try:
        return [
            Classifier.from_pretrained(
                c, device=args.device, precision=args.precision, need_classes=need_classes
            )
            for c in args.checkpoint
        ]
    except (SedError, ValueError) as e:
        raise UsageError(e) from None


def _classifier(args: argparse.Namespace):
    """The one Classifier of --checkpoint, or with ``--ensemble`` the EnsembleClassifier of
    every --checkpoint; --labels name the classes of the CLAP ones (zero-shot)."""
    from sed.inference.predictor import load_predictor

    if args.ensemble is None and (len(args.checkpoint) > 1 or args.weights is not None):
        raise UsageError("several --checkpoint (or --weights) need --ensemble vote|average|weighted|rank")
    text = zero_shot(args)
    try:
        return load_predictor(
            args.checkpoint, args.ensemble, args.weights, args.device, args.precision, **text
        )
    except (SedError, ValueError) as e:  # a checkpoint, --weights, or members that do not fit together
        raise UsageError(e) from None


def _check_outputs(args: argparse.Namespace, outputs, files=()) -> None:
    """Refuse, before the work, ``outputs`` that cannot be written or that are one of the inputs
    (a checkpoint, the --weights file, an audio file or the --shards folder)."""
    from sed.fileio import check_output

    checkpoints = args.checkpoint if isinstance(args.checkpoint, list) else [args.checkpoint]
    inputs = [
        *checkpoints,
        getattr(args, "weights", None),
        getattr(args, "shards", None),
        *args.inputs,
        *files,
    ]
    for out in outputs:
        check_output(out, inputs)


def _inputs(args: argparse.Namespace, con, sample_rate: int, outputs=()):
    """(an iterable of source lists, failures so far): the files of ``inputs``, or with ``--shards``
    the samples of each shard in turn. ``outputs`` are checked against them first (:func:`_check_outputs`)."""
    if bool(args.shards) == bool(args.inputs):
        raise UsageError(
            "give audio inputs or --shards DIR, not both" if args.shards else "no audio inputs given"
        )
    if args.shards:
        from sed.inference.shards import shard_sources

        _check_outputs(args, outputs)
        try:
            return shard_sources(args.shards, sample_rate), 0
        except SedError as e:
            raise UsageError(e) from None
    files, failed = con.expand(args.inputs)
    _check_outputs(args, outputs, files)
    return [files], failed


def cmd_classify(args: argparse.Namespace, con) -> int:
    from sed.cli.report import emit, format_predictions
    from sed.inference.classifier import crop_notes

    if args.hop is not None and args.window is None:
        raise UsageError("--hop needs --window")
    clf = _classifier(args)
    batches, failed = _inputs(args, con, clf.sample_rate, [args.output] if args.output else [])
    kwargs = {
        "top_k": args.top_k,
        "window": args.window,
        "hop": args.hop,
        "aggregate": args.aggregate,
        "batch_size": args.batch_size,
        "multi_label": args.multi_label,
    }
    preds = []
    try:
        for (
            sources
        ) in batches:  # a bar of files: the scores come per (segment, scores), segment.item the file
            kwargs["progress"] = lambda it, n=len(sources): con.progress(
                it, total=n, desc="classify", done=lambda scored: scored[0].item
            )
            preds += clf.predict(sources, **kwargs)
    except ValueError as e:  # a bad --window
        raise UsageError(e) from None
    failed += getattr(batches, "failed", 0)  # --shards: members reported as they were read
    for p in preds:
        if "error" in p:
            con.error(p["error"])
            failed += 1
    for line in crop_notes((p.get("cropped") for p in preds), "--window scores all of a long file"):
        con.note(line)
    emit(format_predictions(preds, args.format, args.aggregate), args.output)
    return failed


def cmd_embed(args: argparse.Namespace, con) -> int:
    import numpy as np

    from sed.cli.report import embedding_names, write_embeddings
    from sed.fileio import check_output
    from sed.inference.classifier import crop_notes

    args.checkpoint = [args.checkpoint]
    outputs = [check_output(args.out), embedding_names(args.out)]  # the name first: "" has no .files.txt
    clf = _classifiers(args, need_classes=False)[0]
    batches, failed = _inputs(args, con, clf.sample_rate, outputs)
    parts, results = [], []
    for sources in batches:
        emb, res = clf.embed(
            sources,
            batch_size=args.batch_size,  # a bar of files: (segment, embedding) come
            progress=lambda it, n=len(sources): con.progress(
                it, total=n, desc="embed", done=lambda pair: pair[0].item
            ),
        )
        parts.append(emb)
        results += res
    failed += getattr(batches, "failed", 0)  # --shards: members reported as they were read
    emb = np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
    for r in results:
        if r.error:
            con.error(r.error)
            failed += 1
    for line in crop_notes(r.cropped for r in results):
        con.note(line)
    out, names = write_embeddings(args.out, emb, [r.name for r in results if not r.error])
    con.status(
        f"wrote {emb.shape[0]} x {emb.shape[1] if emb.ndim == 2 else 0} embeddings to {out} (row order in "
        f"{names})"
    )
    return failed


def cmd_ensemble_eval(args: argparse.Namespace, con) -> int:
    from sed.cli.report import format_ensemble_eval
    from sed.fileio import check_output
    from sed.training.ensemble_eval import ensemble_eval

    if args.out:
        check_output(args.out, [*args.checkpoints, args.config])
    try:
        table = ensemble_eval(
            args.checkpoints,
            args.config,
            split=args.split,
            out=args.out,
            device=args.device,
            overrides=args.overrides,
        )
    except (SedError, ValueError, OSError) as e:
        raise UsageError(e) from None
    print(format_ensemble_eval(table))
    return 0


def _add_model_options(p: argparse.ArgumentParser, several: bool = False) -> None:
    add_checkpoint(
        p,
        "sed checkpoint, Lightning .ckpt, exported .onnx, AST .pth, HF dir/hub id or short name"
        + ("; repeat it with --ensemble" if several else ""),
        several=several,
    )
    add_batch_size(p, "clips (or windows)")
    add_device(p)
    add_precision(p)


def add_verbs(sub) -> None:
    p = sub.add_parser("classify", help="label audio files with a checkpoint (or an ensemble of several)")
    p.add_argument("inputs", nargs="*", help="files, folders or globs")
    p.add_argument(
        "--shards",
        default=None,
        help="instead of files: the samples of sedkit shard's shards (a folder, brace pattern or URL)",
    )
    _add_model_options(p, several=True)
    p.add_argument(
        "--ensemble",
        choices=["vote", "average", "weighted", "rank"],
        default=None,
        help="combine the scores of several --checkpoint (sed.inference.ensemble.combine)",
    )
    add_labels(p)
    p.add_argument(
        "--weights",
        default=None,
        help="weighted: the members' weights, rank: their validation metrics ('0.3,0.7'), "
        "or the JSON file of sedkit ensemble-eval --out",
    )
    p.add_argument("--top-k", type=TOP_K, default=5, help="the best-scoring labels per file (and window)")
    p.add_argument("--window", type=seconds(600), default=None, help="window length in seconds (window mode)")
    p.add_argument(
        "--hop", type=seconds(3600), default=None, help="hop between windows in seconds (default: --window)"
    )
    p.add_argument(
        "--aggregate", choices=["mean", "max"], default="mean", help="window mode: per-file aggregate"
    )
    p.add_argument(
        "--format", choices=["table", "json", "csv"], default="table", help="how results are printed"
    )
    p.add_argument("--output", default=None, help="write here (atomically) instead of stdout")
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--multi-label", dest="multi_label", action="store_true", default=None, help="sigmoid scores"
    )
    g.add_argument("--single-label", dest="multi_label", action="store_false", help="softmax scores")
    p.set_defaults(run=cmd_classify)

    p = sub.add_parser(
        "ensemble-eval",
        help="each checkpoint and each ensemble method on a data split; writes the ensemble weights",
    )
    p.add_argument("--checkpoints", nargs="+", required=True, help="the ensemble members")
    p.add_argument(
        "--config",
        required=True,
        help="data YAML: a sedkit fit config (its data: section) or AudioDataModule init args; "
        "--data.init_args.KEY=VALUE overrides it as in sedkit fit",
    )
    p.add_argument("--split", choices=["val", "test"], default="val", help="the data split scored")
    p.add_argument("--out", default=None, help="write the table, member metrics and weights here (JSON)")
    add_device(p)
    p.set_defaults(run=cmd_ensemble_eval, config_overrides=True)

    p = sub.add_parser("embed", help="pooled embeddings of audio files to a .npy")
    p.add_argument("inputs", nargs="*", help="files, folders or globs")
    p.add_argument("--shards", default=None, help="instead of files: the samples of sedkit shard's shards")
    _add_model_options(p)
    p.add_argument("--out", required=True, help="output .npy ([N, D]); row order in OUT.files.txt")
    p.set_defaults(run=cmd_embed)
