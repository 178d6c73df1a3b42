"""``sedkit`` verbs of few-shot learning: enroll (class prototypes from a support set), fewshot-eval
(episodes)."""

from __future__ import annotations

import argparse

from sed.cli.options import SEED, add_batch_size, add_checkpoint, add_device, bounded, count
from sed.errors import SedError, UsageError, one_line


def cmd_enroll(args: argparse.Namespace, con) -> int:
    from sed.checkpoint import save_model
    from sed.fileio import check_output
    from sed.inference.fewshot import enroll, support_items

    source = {"add_to": args.checkpoint} if args.add else {"backbone_source": args.checkpoint}
    try:
        support, _ = support_items(args.support)
    except (SedError, ValueError) as e:
        raise UsageError(e) from None
    check_output(args.out, [args.checkpoint, args.support, *(item.path for item in support)])
    try:
        model, report = enroll(
            args.support,
            metric=args.metric,
            shots=args.shots,
            open_set=args.open_set,
            seed=args.seed,
            scale=args.scale,
            batch_size=args.batch_size,
            device=args.device,
            progress=lambda it: con.progress(it, desc="enroll"),
            on_error=con.error,
            **source,
        )
    except (SedError, ValueError) as e:  # an unusable checkpoint or support set: nothing was enrolled
        raise UsageError(e) from None
    out = save_model(args.out, model, fewshot=report.summary(args.support, args.shots, args.seed))
    counts = ", ".join(f"{c} {len(f)}" for c, f in report.files.items())
    kept = f"{len(report.kept)} kept + " if report.kept else ""
    unknown = f", open set below {report.open_set}" if report.open_set is not None else ""
    con.status(
        f"enrolled {len(report.classes)} class(es) ({counts} file(s)) on a {report.embed_dim}-d embedding; "
        f"wrote {out}: {kept}{len(report.classes)} class(es), {report.metric}{unknown}; "
        f"{len(report.skipped)} file(s) left out"
    )
    return len(report.skipped)


def cmd_fewshot_eval(args: argparse.Namespace, con) -> int:
    import json

    from sed.cli.report import format_fewshot_eval
    from sed.fileio import atomic_open, check_output
    from sed.training.fewshot_eval import fewshot_eval, split_embeddings

    if args.out:
        check_output(args.out, [args.checkpoint, args.data])
    bad: list[str] = []

    def report(line: str) -> None:
        bad.append(line)
        con.error(line)

    try:
        data = split_embeddings(
            args.data,
            args.checkpoint,
            split=args.split,
            batch_size=args.batch_size,
            device=args.device,
            progress=con.progress,
            on_error=report,
            ways=args.ways,
            shots=args.shots,
            queries=args.queries,  # checked before embedding
            overrides=args.overrides,
        )
        table = fewshot_eval(
            data.embeddings,
            data.labels,
            ways=args.ways,
            shots=args.shots,
            queries=args.queries,
            episodes=args.episodes,
            seed=args.seed,
            methods=args.methods,
            progress=con.progress,
        )
    except OSError as e:  # the data YAML, or a file it names: the file first
        raise UsageError(f"{e.filename}: {e.strerror}" if e.filename else one_line(e)) from None
    except (SedError, ValueError) as e:
        raise UsageError(e) from None
    table.update(split=args.split, checkpoint=str(args.checkpoint), data=str(args.data), skipped=bad)
    print(format_fewshot_eval(table))
    if args.out:
        with atomic_open(args.out, "w") as f:
            json.dump(table, f, indent=2)
        con.status(f"wrote the table and every episode's accuracy to {args.out}")
    return len(bad)


def add_verbs(sub) -> None:
    p = sub.add_parser(
        "enroll", help="new classes from a few examples: class prototypes on a checkpoint's embedding"
    )
    p.add_argument(
        "support", metavar="SUPPORT", help="a folder with one sub-folder per class, or a .csv/.jsonl manifest"
    )
    add_checkpoint(
        p, "the backbone: any checkpoint sedkit embed takes but .onnx (with --add: a prototype checkpoint)"
    )
    p.add_argument("--out", required=True, help="the prototype checkpoint to write (.pt or .safetensors)")
    p.add_argument(
        "--metric",
        choices=["cosine", "euclidean"],
        default=None,
        help="cosine (default) or euclidean; with --add, the checkpoint's",
    )
    p.add_argument(
        "--shots",
        type=count(100_000),
        default=None,
        help="N files per class, chosen at random (default: all)",
    )
    p.add_argument("--seed", type=SEED, default=0, help="the choice of --shots files")
    p.add_argument(
        "--open-set",
        type=bounded(float, -1, 1e6, "THRESH"),
        default=None,
        help="answer 'unknown' when the cosine similarity to every class is below THRESH "
        "(euclidean: the squared distance to every class above THRESH)",
    )
    p.add_argument(
        "--scale",
        type=bounded(float, 0, 1000, "SCALE", open_low=True),
        default=None,
        help="cosine logits = scale * cos (default: 10)",
    )
    p.add_argument(
        "--add",
        action="store_true",
        help="--checkpoint is a prototype checkpoint: keep its classes and append SUPPORT's",
    )
    add_batch_size(p)
    add_device(p)
    p.set_defaults(run=cmd_enroll)

    p = sub.add_parser(
        "fewshot-eval",
        help="episodic k-way n-shot accuracy of a checkpoint's embedding (prototypes and a logistic probe)",
    )
    add_checkpoint(p, "the backbone: any checkpoint sedkit embed takes")
    p.add_argument(
        "--data",
        required=True,
        help="data YAML: a sedkit fit config (its data: section) or AudioDataModule init args; "
        "--data.init_args.KEY=VALUE overrides it as in sedkit fit",
    )
    p.add_argument(
        "--split",
        choices=["train", "val", "test", "all"],
        default="test",
        help="the clips episodes are drawn from",
    )
    p.add_argument("--ways", type=count(1000), default=5, help="classes per episode")
    p.add_argument("--shots", type=count(10_000), default=5, help="support clips per class")
    p.add_argument("--queries", type=count(10_000), default=15, help="query clips per class")
    p.add_argument("--episodes", type=count(1_000_000), default=600, help="episodes")
    p.add_argument("--seed", type=SEED, default=0, help="the episodes drawn")
    p.add_argument(
        "--methods",
        nargs="+",
        choices=["prototype_cosine", "prototype_euclidean", "logistic"],
        default=["prototype_cosine", "prototype_euclidean", "logistic"],
        help="the classifiers compared",
    )
    p.add_argument("--out", default=None, help="write the table and per-episode accuracies here (JSON)")
    add_batch_size(p)
    add_device(p)
    p.set_defaults(run=cmd_fewshot_eval, config_overrides=True)
