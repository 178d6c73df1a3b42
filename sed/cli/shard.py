"""``sedkit`` verbs of data at scale: shard (a corpus as WebDataset tar shards)."""

from __future__ import annotations

import argparse

from sed.cli.options import RATE, count
from sed.errors import SedError, UsageError


def cmd_shard(args: argparse.Namespace, con) -> int:
    from sed.data.shards.writer import read_source, write_shards
    from sed.fileio import check_output

    check_output(args.out, [args.source_path], kind="folder")
    try:
        src = read_source(args.source_path, args.source)
    except (SedError, ValueError) as e:
        raise UsageError(e) from None
    try:
        index = write_shards(
            src,
            args.out,
            shard_size=args.shard_size,
            shard_bytes=args.shard_bytes,
            fmt=args.format,
            rate=args.rate,
            command=["sedkit", *args.argv],
            overwrite=args.overwrite,
            progress=lambda it: con.progress(it, desc="shard"),
        )
    except ValueError as e:
        raise UsageError(e) from None
    for s in index["skipped"]:
        con.error(f"{s['source']}: {s['error']}")
    con.status(
        f"wrote {index['count']} samples ({index['duration']:.0f} s of audio) in {len(index['shards'])} "
        f"shard(s) to {args.out}; {len(index['skipped'])} file(s) left out; index: {args.out}/index.json"
    )
    return len(index["skipped"])


def add_verbs(sub) -> None:
    p = sub.add_parser("shard", help="a corpus (folder, manifest, ESC-50, ICBHI) as WebDataset tar shards")
    p.add_argument(
        "source_path", metavar="SRC", help="class-folder root, .csv/.jsonl manifest, ESC-50 or ICBHI folder"
    )
    p.add_argument("--out", required=True, help="output folder: shard-000000.tar ... and index.json")
    p.add_argument(
        "--source",
        choices=["auto", "folder", "manifest", "esc50", "icbhi"],
        default="auto",
        help="how to read SRC (auto: by its layout)",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument("--shard-size", type=count(10_000_000), default=1000, help="samples per shard")
    size.add_argument(
        "--shard-bytes", default=None, help="about this much 16-bit audio per shard (1GB, 500MB)"
    )
    p.add_argument("--format", choices=["flac", "wav"], default="flac", help="audio inside the shards")
    p.add_argument(
        "--rate", type=RATE, default=None, help="resample to this rate (default: keep each file's)"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the shards of another job in --out (by default such a folder is refused)",
    )
    p.set_defaults(run=cmd_shard)
