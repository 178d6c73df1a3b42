"""``sedkit sed-eval``: PSDS1/2 and the intersection, collar and segment F1 of detections (DCASE Task 4)."""

from __future__ import annotations

import argparse
import json

from sed.errors import SedError, UsageError

METRICS = ("psds1", "psds2", "intersection_f1", "collar_f1", "segment_f1")


def cmd_sed_eval(args: argparse.Namespace, con) -> int:
    from sed.cli.report import format_table
    from sed.metrics.detection_eval import evaluate_files, read_thresholds

    try:
        thresholds = None if args.thresholds is None else read_thresholds(args.thresholds)
        rep = evaluate_files(args.predictions, args.ground_truth, args.durations, thresholds)
    except (SedError, ImportError) as e:
        raise UsageError(e) from None
    for err in rep["errors"]:
        con.error(err)
    if rep["errors"]:
        con.note(f"{len(rep['errors'])} score file(s) left out of the evaluation with their ground truth")
    for key in rep["silent"]:
        con.note(f"no scores for {key}; scored as silent")
    if rep.get("unannotated"):
        con.note(f"no ground-truth events of {', '.join(rep['unannotated'])}: left out of every metric")
    if rep["kind"] == "events":
        con.note("PSDS needs scores (a folder from sedkit detect --scores-dir); events give the F1s only")
    columns = [m for m in METRICS if m in rep["macro"]]
    if args.json:
        print(json.dumps({**rep["macro"], "classes": rep["classes"], "files": rep["files"]}))
    else:
        rows = [{"class": "macro", **rep["macro"]}]
        if args.per_class:
            rows += [{"class": label, **values} for label, values in rep["classes"].items()]
        print(format_table(rows, ["class", *columns]))
        con.status(f"{rep['files']} file(s), {len(rep['classes'])} classes")
    return len(rep["errors"])


def add_verbs(sub) -> None:
    p = sub.add_parser(
        "sed-eval",
        help="PSDS1/2 and intersection, collar, segment F1 of detections against a DCASE ground truth",
    )
    p.add_argument(
        "--predictions",
        required=True,
        help="folder of score files (sedkit detect --scores-dir): PSDS and F1s; or a DCASE events TSV: F1s",
    )
    p.add_argument(
        "--ground-truth", required=True, help="DCASE strong TSV: filename onset offset event_label"
    )
    p.add_argument(
        "--durations",
        default=None,
        help="TSV filename duration: the files evaluated (a file without scores is scored silent); "
        "default: each score file's length, or each file's last event",
    )
    p.add_argument(
        "--thresholds",
        default=None,
        metavar="T|FILE",
        help="decision threshold of the F1s on scores: a number (default 0.5) or per class, "
        "a JSON object or an event_label<TAB>threshold TSV",
    )
    p.add_argument("--per-class", action="store_true", help="a row per class under the macro averages")
    p.add_argument("--json", action="store_true", help="print one JSON object (macro values, classes, files)")
    p.set_defaults(run=cmd_sed_eval)
