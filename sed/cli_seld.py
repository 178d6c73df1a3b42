"""`sedkit` verbs of the SELD road: seld-eval, seld-infer, plot-doa, prepare."""

from __future__ import annotations

import argparse
import json
import sys

from sed.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, _expand, report
from sed.errors import SedError


# ---------------------------------------------------------------------------------- SELD
def cmd_seld_eval(args: argparse.Namespace) -> int:
    from sed.metrics.seld_eval import evaluate_dirs, format_results

    try:
        results, rep = evaluate_dirs(args.pred, args.ref, year=args.year, average=args.average,
                                     nb_classes=args.nb_classes, jackknife=args.jackknife)
    except (SedError, ValueError) as e:
        report(e)
        return EXIT_USAGE
    for name in rep.get("missing_predictions", []):
        print(f"note: no prediction for reference {name}; scored as an empty prediction", file=sys.stderr)
    for err in rep.get("errors", []):
        report(err)
    if args.json:
        print(json.dumps(results, default=float))
    else:
        print(format_results(results, args.year))
        print(f"{rep['n_evaluated']} file(s), {rep['nb_classes']} classes, {args.average} average", file=sys.stderr)
    return EXIT_FAILED if rep.get("errors") else EXIT_OK


def cmd_seld_infer(args: argparse.Namespace) -> int:
    from sed.seld_infer import seld_infer

    files, failed = _expand(args.audio)
    if not files:
        return EXIT_FAILED if failed else EXIT_USAGE
    try:
        results = seld_infer(files, args.checkpoint, args.out, window=args.window, hop=args.hop,
                             batch_size=args.batch_size, device=args.device, year=args.year, progress=True)
    except (SedError, ValueError) as e:
        report(e)
        return EXIT_USAGE
    for _, err in results:
        if err:
            report(err)
    written = sum(err is None for _, err in results)
    print(f"{written} prediction CSV(s) written to {args.out}", file=sys.stderr)
    return EXIT_FAILED if failed or written < len(results) else EXIT_OK


def cmd_plot_doa(args: argparse.Namespace) -> int:
    from sed.seld_infer import plot_doa

    try:
        print(plot_doa(args.csv, args.out, ref_csv=args.ref))
    except SedError as e:
        report(e)
        return EXIT_FAILED
    return EXIT_OK


# ---------------------------------------------------------------------------------- prepare
def cmd_prepare(args: argparse.Namespace) -> int:
    if args.corpus == "icbhi":
        from sed.data.icbhi_prepare import format_icbhi_report, prepare_icbhi

        try:
            rep = prepare_icbhi(args.root, strict=False)
        except SedError as e:
            report(e)
            return EXIT_FAILED
        print(format_icbhi_report(rep))
        for line in rep["problems"]:
            report(line)
        return EXIT_FAILED if rep["problems"] else EXIT_OK
    from sed.data.starss import format_prepare_report, prepare_starss

    try:
        rep = prepare_starss(args.root, fmt=args.format, strict=False)
    except SedError as e:
        report(e)
        return EXIT_FAILED
    print(format_prepare_report(rep))
    problems = rep.get("problems", [])
    for line in problems:
        report(line)
    if args.cache and not problems:
        from sed.audio.features import build_frontend
        from sed.data.feature_cache import FeatureCache

        cache = FeatureCache(args.cache, build_frontend(args.format))
        failures = cache.warm([f["audio"] for f in rep["files"]], progress=True, num_threads=1)  # reports bad files
        problems = problems + failures
        print(f"features cached under {cache.dir}", file=sys.stderr)
    return EXIT_FAILED if problems else EXIT_OK
