"""``sedkit`` verbs of few-shot learning: enroll (class prototypes from a support set), fewshot-eval
(episodes)."""

from __future__ import annotations

import argparse

from sed.cli.options import SEED, add_batch_size, add_checkpoint, add_device, bounded, count
from sed.errors import SedError, UsageError, one_line


def _text_options(args: argparse.Namespace) -> dict:
    """``enroll``'s text keywords: ``{"text", "text_weight", "text_source"}`` (``{}`` without ``--text``);
    a text option without ``--text``, or a malformed ``--text``, is one UsageError line."""
    from sed.inference.fewshot_text import parse_text
    from sed.models.zeroshot import DEFAULT_TEMPLATE, DEFAULT_TEXT_WEIGHT

    if not args.text:
        given = [o for o, v in (("--template", args.template), ("--text-weight", args.text_weight)) if v]
        given += ["--text-from"] if args.text_from is not None else []
        if given:
            raise UsageError(f"{given[0]} needs --text")
        return {}
    try:
        text = parse_text(args.text, args.template or DEFAULT_TEMPLATE)
    except ValueError as e:
        raise UsageError(f"--text: {e}") from None
    weight = DEFAULT_TEXT_WEIGHT if args.text_weight is None else args.text_weight
    return {"text": text, "text_weight": weight, "text_source": args.text_from}


def cmd_enroll(args: argparse.Namespace, con) -> int:
    from sed.checkpoint import save_model
    from sed.fileio import check_output
    from sed.inference.fewshot import enroll, support_items

    text = _text_options(args)
    if args.support is None and not text:
        raise UsageError("give SUPPORT (a folder or manifest of examples), --text, or both")
    source = {"add_to": args.checkpoint} if args.add else {"backbone_source": args.checkpoint}
    support = []
    if args.support is not None:
        try:
            support, _ = support_items(args.support)
        except (SedError, ValueError) as e:
            raise UsageError(e) from None
    inputs = [args.checkpoint, args.support, args.text_from, *(item.path for item in support)]
    check_output(args.out, [p for p in inputs if p is not None])
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
            **text,
        )
    except (SedError, ValueError) as e:  # an unusable checkpoint, support set or text: nothing was enrolled
        raise UsageError(e) from None
    out = save_model(args.out, model, fewshot=report.summary(args.support, args.shots, args.seed))
    counts = ", ".join(
        f"{c} {len(report.files[c])} file(s)" + (" + text" if report.sources.get(c) == "text+audio" else "")
        if c in report.files
        else f"{c} text"
        for c in report.classes
    )
    kept = f"{len(report.kept)} kept + " if report.kept else ""
    unknown = f", open set below {report.open_set}" if report.open_set is not None else ""
    weight = f", text weight {report.text_weight:g}" if "text+audio" in report.sources.values() else ""
    con.status(
        f"enrolled {len(report.classes)} class(es) ({counts}) on a {report.embed_dim}-d embedding; "
        f"wrote {out}: {kept}{len(report.classes)} class(es), {report.metric} at scale "
        f"{model.head.scale:.4g}{weight}{unknown}; {len(report.skipped)} file(s) left out"
    )
    return len(report.skipped)


def cmd_fewshot_eval(args: argparse.Namespace, con) -> int:
    import json

    from sed.cli.report import format_fewshot_eval
    from sed.fileio import atomic_open, check_output
    from sed.models.zeroshot import DEFAULT_TEMPLATE, DEFAULT_TEXT_WEIGHT, clap_text
    from sed.training.fewshot_eval import (
        TEXT_METHODS,
        class_prompts,
        class_text_prototypes,
        fewshot_eval,
        split_embeddings,
    )

    methods = list(dict.fromkeys([*args.methods, *(TEXT_METHODS if args.zero_shot else ())]))
    encoder, template = None, args.template or DEFAULT_TEMPLATE
    weight = DEFAULT_TEXT_WEIGHT if args.text_weight is None else args.text_weight
    if not any(m in TEXT_METHODS for m in methods):
        if args.template is not None or args.text_weight is not None:
            raise UsageError(
                f"{'--template' if args.template is not None else '--text-weight'} needs --zero-shot"
            )
    else:
        try:
            class_prompts(["x"], template)  # a bad template fails before anything is loaded
            encoder = clap_text(args.checkpoint)  # a checkpoint with no text tower fails before embedding
        except (SedError, ValueError) as e:
            raise UsageError(f"--zero-shot: {e}") from None
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
        text = None if encoder is None else class_text_prototypes(encoder, data.label_names, template)
        table = fewshot_eval(
            data.embeddings,
            data.labels,
            ways=args.ways,
            shots=args.shots,
            queries=args.queries,
            episodes=args.episodes,
            seed=args.seed,
            methods=methods,
            progress=con.progress,
            text=text,
            text_weight=weight,
        )
    except OSError as e:  # the data YAML, or a file it names: the file first
        raise UsageError(f"{e.filename}: {e.strerror}" if e.filename else one_line(e)) from None
    except (SedError, ValueError) as e:
        raise UsageError(e) from None
    table.update(split=args.split, checkpoint=str(args.checkpoint), data=str(args.data), skipped=bad)
    if encoder is not None:
        table.update(
            template=template, prompts=dict(zip(data.label_names, class_prompts(data.label_names, template)))
        )
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
        "support",
        metavar="SUPPORT",
        nargs="?",
        default=None,
        help="a folder with one sub-folder per class, or a .csv/.jsonl manifest (optional with --text)",
    )
    add_checkpoint(
        p,
        "the backbone: any checkpoint sedkit embed takes but .onnx (with --add: a prototype checkpoint; "
        "with --text: a CLAP model, clap-* short name, hub id or directory)",
    )
    p.add_argument(
        "--text",
        action="append",
        metavar="LABEL[=DESCRIPTION]",
        default=None,
        help="a class named by a sentence (CLAP): 'dog=a dog barking in a yard'; repeat a label for several "
        "descriptions (averaged); a LABEL alone is the --template of it. A class also in SUPPORT combines "
        "text and audio (--text-weight)",
    )
    p.add_argument(
        "--text-weight",
        type=bounded(float, 0, 1, "W"),
        default=None,
        help="a class with text and audio: W * text + (1 - W) * audio, of the unit text prototype and the "
        "unit mean audio embedding (default: 0.5)",
    )
    p.add_argument(
        "--template",
        default=None,
        help="the prompt of a --text LABEL without description, {} standing for the label "
        "(default: 'This is a sound of {}.')",
    )
    p.add_argument(
        "--text-from",
        metavar="CLAP",
        default=None,
        help="the CLAP model whose text tower embeds --text (default: --checkpoint; needed with --add); "
        "the backbone must be its audio tower",
    )
    p.add_argument("--out", required=True, help="the prototype checkpoint to write (.pt or .safetensors)")
    p.add_argument(
        "--metric",
        choices=["cosine", "euclidean"],
        default=None,
        help="cosine (default; the only one with --text) or euclidean; with --add, the checkpoint's",
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
        help="cosine logits = scale * cos (default: 10; with --text, the CLAP model's exp(logit_scale_a))",
    )
    p.add_argument(
        "--add",
        action="store_true",
        help="--checkpoint is a prototype checkpoint: keep its classes, metric and scale; append "
        "SUPPORT's and --text's",
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
        choices=["prototype_cosine", "prototype_euclidean", "logistic", "zero_shot", "combined"],
        default=["prototype_cosine", "prototype_euclidean", "logistic"],
        help="the classifiers compared (zero_shot and combined: a CLAP --checkpoint)",
    )
    p.add_argument(
        "--zero-shot",
        action="store_true",
        help="also zero_shot (the nearest text prototype of the class names, underscores read as spaces, "
        "prompted with --template; no support clip) and combined (text and support mean, --text-weight); "
        "--checkpoint is then a CLAP model",
    )
    p.add_argument(
        "--template",
        default=None,
        help="the prompt of each class name, {} standing for the name (default: 'This is a sound of {}.')",
    )
    p.add_argument(
        "--text-weight",
        type=bounded(float, 0, 1, "W"),
        default=None,
        help="combined: W * text + (1 - W) * support mean, of the unit prototypes (default: 0.5)",
    )
    p.add_argument("--out", default=None, help="write the table and per-episode accuracies here (JSON)")
    add_batch_size(p)
    add_device(p)
    p.set_defaults(run=cmd_fewshot_eval, config_overrides=True)
