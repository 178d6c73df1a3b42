"""``sedkit`` verbs of the SELD road: seld-eval, seld-infer, plot-doa, prepare."""

from __future__ import annotations

import argparse
import json

from sed.cli.options import add_batch_size, add_checkpoint, add_device, count, seconds
from sed.errors import CheckpointError, SedError, UsageError


def cmd_seld_eval(args: argparse.Namespace, con) -> int:
    from sed.metrics.seld_eval import evaluate_dirs, format_results

    try:
        results, rep = evaluate_dirs(
            args.pred,
            args.ref,
            year=args.year,
            average=args.average,
            nb_classes=args.nb_classes,
            jackknife=args.jackknife,
        )
    except (SedError, ValueError) as e:
        raise UsageError(e) from None
    for name in rep.get("missing_predictions", []):
        con.note(f"no prediction for reference {name}; scored as an empty prediction")
    for err in rep.get("errors", []):
        con.error(err)
    if args.json:
        print(json.dumps(results, default=float))
    else:
        print(format_results(results, args.year))
        con.status(f"{rep['n_evaluated']} file(s), {rep['nb_classes']} classes, {args.average} average")
    return len(rep.get("errors", []))


def cmd_seld_infer(args: argparse.Namespace, con) -> int:
    from sed.fileio import check_output
    from sed.inference.seld import seld_infer

    check_output(args.out, [args.checkpoint], kind="folder")
    files, failed = con.expand(args.audio)
    if not files:
        if failed:
            return failed
        raise UsageError("no audio files to process")
    try:
        results = seld_infer(
            files,
            args.checkpoint,
            args.out,
            window=args.window,
            hop=args.hop,
            batch_size=args.batch_size,
            device=args.device,
            year=args.year,
            progress=True,
        )
    except (SedError, ValueError) as e:
        raise UsageError(e) from None
    for _, err in results:
        if err:
            con.error(err)
    written = sum(err is None for _, err in results)
    con.status(f"{written} prediction CSV(s) written to {args.out}")
    return failed + len(results) - written


def cmd_plot_doa(args: argparse.Namespace, con) -> int:
    from sed.fileio import check_output
    from sed.inference.seld import plot_doa

    check_output(args.out, [args.csv, args.ref, args.checkpoint])
    try:
        print(plot_doa(args.csv, args.out, ref_csv=args.ref, checkpoint=args.checkpoint))
    except CheckpointError as e:  # the job cannot start: the wrong kind of checkpoint
        raise UsageError(e) from None
    return 0


def cmd_prepare(args: argparse.Namespace, con) -> int:
    if args.corpus == "icbhi":
        from sed.data.corpora.icbhi_prepare import format_icbhi_report, prepare_icbhi

        rep = prepare_icbhi(args.root, strict=False)
        print(format_icbhi_report(rep))
        for line in rep["problems"]:
            con.error(line)
        return len(rep["problems"])
    from sed.data.corpora.starss import format_prepare_report, prepare_starss

    rep = prepare_starss(args.root, fmt=args.format, strict=False)
    print(format_prepare_report(rep))
    problems = rep.get("problems", [])
    for line in problems:
        con.error(line)
    if args.cache and not problems:
        from sed.audio.features import build_frontend
        from sed.data.modules.feature_cache import FeatureCache

        cache = FeatureCache(args.cache, build_frontend(args.format))
        problems = cache.warm(
            [f["audio"] for f in rep["files"]], progress=True, num_threads=1
        )  # reports bad files
        con.status(f"features cached under {cache.dir}")
    return len(problems)


def add_verbs(sub) -> None:
    p = sub.add_parser("seld-eval", help="DCASE SELD metrics of prediction CSVs against reference CSVs")
    p.add_argument("--pred", required=True, help="folder of prediction CSVs (searched recursively)")
    p.add_argument("--ref", required=True, help="folder of reference metadata CSVs (searched recursively)")
    p.add_argument(
        "--year",
        type=int,
        choices=[2023, 2024],
        default=2023,
        help="2023: segment-level ER/F/LE/LR/SELD; 2024: frame-level with distance",
    )
    p.add_argument(
        "--average", choices=["macro", "micro"], default="macro", help="over classes, or over events"
    )
    p.add_argument(
        "--nb-classes",
        type=count(1000),
        default=None,
        help="classes scored (default: 13 for STARSS names, else inferred)",
    )
    p.add_argument(
        "--jackknife", action="store_true", help="add leave-one-file-out 95%% confidence intervals"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object (F and LR as fractions)")
    p.set_defaults(run=cmd_seld_eval)

    p = sub.add_parser("seld-infer", help="SELD predictions (DCASE CSVs) of audio files of any length")
    p.add_argument("audio", nargs="+", help="4-channel audio files, folders or globs")
    add_checkpoint(p, "SELD checkpoint (.ckpt from sedkit fit, .pt, .safetensors)")
    p.add_argument("--out", required=True, help="folder for one <stem>.csv per file")
    p.add_argument("--window", type=seconds(600), default=5.0, help="window in seconds (multiple of 0.1)")
    p.add_argument(
        "--hop", type=seconds(600), default=5.0, help="hop in seconds (<= window; overlaps are averaged)"
    )
    add_batch_size(p, "windows")
    add_device(p)
    p.add_argument("--year", type=int, choices=[2023, 2024], default=2023, help="CSV format (2024: distance)")
    p.set_defaults(run=cmd_seld_infer)

    p = sub.add_parser("plot-doa", help="azimuth/elevation against time per class of a DCASE CSV")
    p.add_argument("csv", help="prediction CSV")
    p.add_argument("--ref", default=None, help="reference CSV drawn underneath")
    add_checkpoint(
        p,
        "the SELD checkpoint that made the CSV: named in the title, its class names in the legend "
        "(default: the STARSS names)",
        required=False,
    )
    p.add_argument("--out", required=True, help="PNG to write")
    p.set_defaults(run=cmd_plot_doa)

    p = sub.add_parser("prepare", help="validate a corpus and print its per-fold and per-class counts")
    p.add_argument("corpus", choices=["starss", "icbhi"])
    p.add_argument(
        "--root",
        required=True,
        help="corpus root (starss: foa_dev/ or mic_dev/ and metadata_dev/; "
        "icbhi: the recordings, their .txt and official_split.txt)",
    )
    p.add_argument("--format", choices=["foa", "mic"], default="foa", help="starss: audio format")
    p.add_argument(
        "--cache", default=None, help="starss: also extract every file's features into this cache folder"
    )
    p.set_defaults(run=cmd_prepare)
