"""``sedkit`` verbs of search: index (embed recordings window by window into an index folder) and search
(rank them by a sentence or an example file); thin over :mod:`sed.inference.search`."""

from __future__ import annotations

import argparse
import csv
import io
import json

from sed.cli.options import TOP_K, add_batch_size, add_device, add_precision, seconds
from sed.errors import SedError, UsageError, printable


def cmd_index(args: argparse.Namespace, con) -> int:
    from sed.inference.search import build_index

    files, failed = con.expand(args.inputs)
    run = build_index(
        files,
        args.out,
        args.checkpoint,
        window=args.window,
        hop=args.hop,
        batch_size=args.batch_size,
        device=args.device,
        precision=args.precision,
        progress=lambda stream, n: con.progress(
            stream, total=n, desc="index", done=lambda pair: pair[0].item
        ),
    )
    for line in run.errors:
        con.error(line)
    con.status(
        f"indexed {run.indexed} file{'s' if run.indexed != 1 else ''} ({run.entries} windows), "
        f"{run.skipped} unchanged skipped: {run.count} windows in {run.out}"
    )
    return failed + len(run.errors)


def format_hits(hits, fmt: str) -> str:
    """``table``: rank, score, file, start-end; ``json``: an object per line; ``csv``: header, rows."""
    from sed.cli.report import format_table

    rows = [
        {"rank": h.rank, "score": round(h.score, 6), "file": h.file, "start": h.start, "end": h.end}
        for h in hits
    ]
    if fmt == "json":
        return "\n".join(
            json.dumps({**r, "start": round(r["start"], 3), "end": round(r["end"], 3)}) for r in rows
        )
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=["rank", "score", "file", "start", "end"], lineterminator="\n")
        w.writeheader()
        w.writerows({**r, "file": printable(r["file"])} for r in rows)  # each row one line
        return buf.getvalue().rstrip("\n")
    table = [{**r, "span": f"{r['start']:.2f}-{r['end']:.2f}"} for r in rows]
    return format_table(table, ["rank", "score", "file", "span"]) if table else ""


def cmd_search(args: argparse.Namespace, con) -> int:
    from sed.cli.report import emit
    from sed.fileio import check_output
    from sed.inference.search import Index

    if (args.query is None) == (args.audio is None):
        raise UsageError("give a text query or --audio FILE, not both" if args.audio else "give a text query")
    if args.output:
        check_output(args.output, [args.index, args.audio])
    try:
        index = Index.load(args.index)
    except SedError as e:
        raise UsageError(e) from None
    if not len(index):
        con.note(f"{args.index} holds no entries yet (sedkit index adds them)")
    try:
        query = (
            args.query
            if args.audio is None
            else index.audio_embedding(args.audio, args.checkpoint, device=args.device)
        )
        hits = index.search(query, top_k=args.top_k, all_windows=args.all_windows, checkpoint=args.checkpoint)
    except (SedError, ValueError) as e:
        raise UsageError(e) from None
    emit(format_hits(hits, args.format), args.output)
    return 0


def add_verbs(sub) -> None:
    p = sub.add_parser("index", help="embed audio files window by window into a search index folder")
    p.add_argument("inputs", nargs="+", help="files, folders or globs")
    p.add_argument(
        "--checkpoint",
        required=True,
        help="the audio tower: a CLAP short name, hub id or directory (text queries need CLAP)",
    )
    p.add_argument(
        "--out", required=True, help="the index folder: made, or resumed (files indexed already are skipped)"
    )
    p.add_argument(
        "--window",
        type=seconds(600),
        default=None,
        help="window length in seconds (default: the model's clip)",
    )
    p.add_argument("--hop", type=seconds(3600), default=None, help="hop between windows (default: --window)")
    add_batch_size(p, "windows")
    add_device(p)
    add_precision(p)
    p.set_defaults(run=cmd_index)

    p = sub.add_parser("search", help="rank the files of a search index by a text (or an example file)")
    p.add_argument("query", nargs="?", default=None, help="what to find, in words ('glass breaking')")
    p.add_argument("--index", required=True, help="the folder sedkit index wrote")
    p.add_argument("--top-k", type=TOP_K, default=10, help="the best files (or windows) listed")
    p.add_argument(
        "--checkpoint", default=None, help="the CLAP model of the query (default: the index's own)"
    )
    p.add_argument("--audio", default=None, help="query by example: the audio file to find the like of")
    p.add_argument("--all-windows", action="store_true", help="list windows, not each file once at its best")
    p.add_argument(
        "--format", choices=["table", "json", "csv"], default="table", help="how results are printed"
    )
    p.add_argument("--output", default=None, help="write here (atomically) instead of stdout")
    add_device(p)
    p.set_defaults(run=cmd_search)
