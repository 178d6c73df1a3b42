"""``sedkit`` verbs of sound event detection: detect (events and timestamped scores), plot-events."""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

from sed.cli.options import add_batch_size, add_checkpoint, add_device, add_labels, bounded, seconds
from sed.errors import SedError, UsageError

THRESHOLD = bounded(float, 0.0, 1.0, "T")
GAP = bounded(float, 0.0, 3600.0, "SECONDS")


def _detector(args: argparse.Namespace):
    """A frame model's :class:`~sed.inference.detect.Detector`, or with ``--window`` a clip model's
    :class:`~sed.inference.detect_windows.WindowDetector` (zero-shot with ``--labels``)."""
    from sed.cli.options import zero_shot
    from sed.inference.detect_windows import load_detector

    window = getattr(args, "window", None)
    if window is None and getattr(args, "hop", None) is not None:
        raise UsageError("--hop needs --window")
    frame = {k: getattr(args, k, None) for k in ("block", "overlap", "stitch")}
    if window is not None and any(v is not None for v in frame.values()):
        given = next(k for k, v in frame.items() if v is not None)
        raise UsageError(
            f"--{given} sets the blocks of a frame model; with --window, --hop sets the timeline"
        )
    try:
        return load_detector(
            args.checkpoint,
            window=window,
            hop=getattr(args, "hop", None),
            device=args.device,
            batch_size=getattr(args, "batch_size", 4),
            **zero_shot(args),
            **({} if window is not None else {**frame, "stitch": frame["stitch"] or "mean"}),
        )
    except (SedError, ValueError) as e:
        raise UsageError(e) from None


def _per_class(args: argparse.Namespace, labels: list[str] | None):
    """(thresholds, median filter seconds): a number for every class or ``{label: value}`` from a file,
    checked against ``labels`` (None: the labels are not known yet)."""
    from sed.metrics.postprocess import class_values, read_class_values

    try:
        th = (
            args.threshold
            if args.thresholds is None
            else read_class_values(args.thresholds, "threshold", high=1)
        )
        med: float | dict = 0.0
        if args.median_filter is not None:
            try:
                med = float(args.median_filter)
            except ValueError:
                med = read_class_values(args.median_filter, "median filter length", high=60)
            else:
                if not 0 <= med <= 60:
                    raise ValueError(
                        f"--median-filter {args.median_filter} is out of range (0 <= SECONDS <= 60)"
                    )
        if labels is not None:
            class_values(th, labels, "threshold")
            class_values(med, labels, "median filter length")
    except (SedError, ValueError) as e:
        raise UsageError(e) from None
    return th, med


def _files_of(args) -> list:
    return [
        args.thresholds,
        args.median_filter if args.median_filter and Path(args.median_filter).exists() else None,
    ]


def cmd_detect(args: argparse.Namespace, con) -> int:
    from sed.cli.report import emit
    from sed.fileio import check_output
    from sed.inference.detect_output import format_events, score_file, write_scores

    if not args.inputs:
        raise UsageError("no audio inputs given")
    det = _detector(args)
    thresholds, median = _per_class(args, det.labels)
    files, failed = con.expand(args.inputs)
    inputs = [args.checkpoint, *_files_of(args), *files]
    if args.output:
        check_output(args.output, inputs)
    if args.scores_dir:
        check_output(args.scores_dir, inputs, kind="folder")
        stems = [score_file(args.scores_dir, f).name for f in files]
        twice = sorted({s for s in stems if stems.count(s) > 1})
        if twice:
            raise UsageError(
                f"several inputs would write the score file {twice[0]} (score files are named by file id)"
            )
        for f in files:
            check_output(score_file(args.scores_dir, f), inputs)
        Path(args.scores_dir).mkdir(parents=True, exist_ok=True)
    results = []
    progress = functools.partial(con.progress, total=len(files), desc="detect")
    kwargs = {"min_duration": args.min_duration, "merge_gap": args.merge_gap, "progress": progress}
    for d in det.detect(files, thresholds, median, **kwargs):
        if d.error:
            con.error(d.error)
            failed += 1
            continue
        if args.scores_dir:
            write_scores(score_file(args.scores_dir, d.name), d.probs, det.hop, det.labels, det.offset)
        d.probs = None  # the events stay, the frames go: memory flat in the number of files
        results.append(d)
    emit(format_events(results, args.format), args.output)
    events = sum(len(d.events) for d in results)
    where = f" to {args.output}" if args.output else ""
    scores = f"; score files in {args.scores_dir}" if args.scores_dir else ""
    con.status(f"{events} events in {len(results)} file{'s' if len(results) != 1 else ''}{where}{scores}")
    return failed


def cmd_plot_events(args: argparse.Namespace, con) -> int:
    from sed.fileio import check_output
    from sed.inference.detect_plot import plot_detection

    if bool(args.checkpoint) == bool(args.scores):
        raise UsageError(
            "give either --checkpoint (to score the audio) or --scores (a score file of sedkit detect)"
        )
    if args.checkpoint and not args.audio:
        raise UsageError("--checkpoint scores an audio file: give it")
    if args.scores and (args.window is not None or args.hop is not None or args.labels or args.labels_file):
        raise UsageError(
            "--window and --labels score audio with --checkpoint; a score file is already scored"
        )
    check_output(args.out, [args.audio, args.scores, args.ground_truth, args.checkpoint, *_files_of(args)])
    det = _detector(args) if args.checkpoint else None
    thresholds, median = _per_class(args, det.labels if det else None)
    try:
        out = plot_detection(
            args.out,
            audio=args.audio,
            detector=det,
            scores=args.scores,
            truth=args.ground_truth,
            thresholds=thresholds,
            median=median,
            start=args.start,
            duration=args.duration,
        )
    except ValueError as e:  # per-class values that do not fit the score file's classes
        raise UsageError(e) from None
    con.status(f"wrote {out}")
    return 0


def _add_postprocess(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--threshold", type=THRESHOLD, default=0.5, help="one threshold for every class (active: p > T)"
    )
    g.add_argument(
        "--thresholds", default=None, help="per-class thresholds: a file of 'label threshold' lines"
    )
    p.add_argument(
        "--median-filter",
        default=None,
        metavar="SECONDS|FILE",
        help="median filter length in seconds for every class (0 <= SECONDS <= 60), or a file of "
        "'label seconds' lines (default: none)",
    )


def _add_windows(p: argparse.ArgumentParser) -> None:
    """``--window``/``--hop`` (a clip model's window scores as the timeline) and the zero-shot labels."""
    p.add_argument(
        "--window",
        type=seconds(600),
        default=None,
        help="a clip model: score windows of this many seconds; their scores are the timeline",
    )
    p.add_argument(
        "--hop", type=seconds(3600), default=None, help="seconds between windows (default: --window)"
    )
    add_labels(p)


def add_verbs(sub) -> None:
    p = sub.add_parser("detect", help="timestamped events (DCASE TSV) and frame scores of audio files")
    p.add_argument("inputs", nargs="*", help="files, folders or globs")
    add_checkpoint(p, "a frame (detection) model's checkpoint, or with --window any clip model's")
    _add_windows(p)
    _add_postprocess(p)
    p.add_argument("--min-duration", type=GAP, default=0.0, help="drop events shorter than this (seconds)")
    p.add_argument("--merge-gap", type=GAP, default=0.0, help="merge events of a class this close (seconds)")
    p.add_argument("--format", choices=["tsv", "csv", "json"], default="tsv", help="how events are written")
    p.add_argument("--output", default=None, help="write the events here (atomically) instead of stdout")
    p.add_argument(
        "--scores-dir", default=None, help="also write each file's frame scores here (sed_scores_eval TSV)"
    )
    p.add_argument(
        "--block", type=seconds(3600), default=None, help="seconds per block (default: the model's clip)"
    )
    p.add_argument(
        "--overlap",
        type=bounded(float, 0.0, 3600.0, "SECONDS"),
        default=None,
        help="block overlap (default: half)",
    )
    p.add_argument(
        "--stitch",
        choices=["mean", "centre"],
        default=None,
        help="how overlapping blocks combine (default: mean)",
    )
    add_batch_size(p, "blocks (or windows)")
    add_device(p)
    p.set_defaults(run=cmd_detect)

    p = sub.add_parser("plot-events", help="picture of one file: spectrogram, class scores, event boxes")
    p.add_argument("audio", nargs="?", default=None, help="the audio file (with --scores: its spectrogram)")
    add_checkpoint(
        p,
        "a frame model's checkpoint that scores the audio (or with --window a clip model's)",
        required=False,
    )
    _add_windows(p)
    p.add_argument(
        "--scores", default=None, help="instead: a score file written by sedkit detect --scores-dir"
    )
    p.add_argument("--ground-truth", default=None, help="a DCASE TSV whose events of this file are drawn")
    p.add_argument("--out", required=True, help="PNG to write")
    _add_postprocess(p)
    p.add_argument("--start", type=bounded(float, 0.0, 1e6, "SECONDS"), default=0.0, help="from this second")
    p.add_argument("--duration", type=seconds(3600), default=None, help="seconds drawn (default: to the end)")
    add_device(p)
    p.set_defaults(run=cmd_plot_events)
