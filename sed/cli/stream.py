"""``sedkit stream``: one JSON line of top-k scores per hop over a file or a live raw PCM stream (stdin)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from sed.cli.options import RATE, TOP_K, add_checkpoint, add_device, add_precision, count, seconds
from sed.errors import SedError, UsageError


def cmd_stream(args: argparse.Namespace, con) -> int:
    from sed.inference.classifier import Classifier
    from sed.inference.stream import Streamer, open_input

    raw = args.input == "-" or args.format is not None
    if not raw and (args.rate is not None or args.channels is not None):
        raise UsageError("--rate and --channels describe raw PCM input (--input -, or a file with --format)")
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    try:
        clf = Classifier.from_pretrained(args.checkpoint, device=args.device, precision=args.precision)
    except (SedError, ValueError) as e:
        raise UsageError(e) from None
    try:
        streamer = Streamer(clf, args.hop, multi_label=args.multi_label, window=args.window)
    except ValueError as e:
        raise UsageError(f"--hop/--window: {e}") from None
    in_rate = (
        (args.rate or clf.sample_rate) if raw else clf.sample_rate
    )  # a file's blocks are at the model rate
    chunks = open_input(
        args.input,
        clf.sample_rate,
        fmt=args.format,
        rate=args.rate,
        channels=args.channels or 1,
        block_frames=max(1, min(round(args.hop * in_rate), 1 << 16)),
    )
    try:
        for hop in streamer.run(chunks):
            line = {"time": round(hop.time, 6), "top_k": clf.top_k(hop.scores, args.top_k)}
            if args.timing:
                line["ms"] = round(hop.cost * 1000, 3)
            sys.stdout.write(json.dumps(line) + "\n")
            sys.stdout.flush()
    except BrokenPipeError:  # the reader went away (| head): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def add_verbs(sub) -> None:
    p = sub.add_parser(
        "stream",
        help="top-k scores every --hop seconds of a file or a live raw PCM stream "
        "(one JSON line each; constant memory)",
    )
    add_checkpoint(p, "sed checkpoint, Lightning .ckpt, AST .pth, HF dir/hub id or short name")
    p.add_argument("--input", default="-", metavar="FILE", help="an audio file, or - for raw PCM on stdin")
    p.add_argument("--hop", type=seconds(3600), default=0.5, help="seconds between results")
    p.add_argument(
        "--format",
        choices=["f32", "s16"],
        default=None,
        help="raw PCM sample format: little-endian float32 (default for stdin) or 16-bit; "
        "with a file path, read it as headerless PCM (e.g. a named pipe)",
    )
    p.add_argument(
        "--rate", type=RATE, default=None, help="raw PCM: sample rate in Hz (default: the model's)"
    )
    p.add_argument(
        "--channels",
        type=count(256),
        default=None,
        help="raw PCM: interleaved channels, averaged (default: 1)",
    )
    p.add_argument(
        "--window",
        type=seconds(600),
        default=None,
        help="score a sliding window of this many seconds (default: the model's clip; a causal "
        "model then runs as a windowed one)",
    )
    p.add_argument("--top-k", type=TOP_K, default=5, help="the best-scoring labels in each line")
    p.add_argument(
        "--timing",
        action="store_true",
        help='add "ms" to each line: the milliseconds computed for that hop (not waiting for input)',
    )
    p.add_argument(
        "--threads",
        type=count(1024),
        default=None,
        help="CPU threads of the model (default: torch's); 1 keeps per-hop times steady on a busy machine",
    )
    add_device(p)
    add_precision(p)
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--multi-label", dest="multi_label", action="store_true", default=None, help="sigmoid scores"
    )
    g.add_argument("--single-label", dest="multi_label", action="store_false", help="softmax scores")
    p.set_defaults(run=cmd_stream)
