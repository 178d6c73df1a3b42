"""``sedkit`` verbs of the audio road: synth, info, features."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sed.cli.options import RATE, SEED, count, seconds
from sed.errors import SedError, UsageError

_SYNTH_OPTIONS = {
    "esc50": {"num_classes": int, "clips_per_class": int, "duration": float},
    "icbhi": {"num_patients": int, "recordings_per_patient": int, "duration": float},
    "starss": {"files_per_split": int, "duration": float, "num_classes": int, "format": str},
    "desed": {"num_classes": int, "clips": int, "duration": float},
}


def cmd_synth(args: argparse.Namespace, con) -> int:
    from sed.data.synth.corpora import SYNTH_CORPORA
    from sed.data.synth.desed import make_desed

    allowed = _SYNTH_OPTIONS[args.corpus]
    kwargs = {}
    for name in (
        "num_classes",
        "clips_per_class",
        "duration",
        "num_patients",
        "recordings_per_patient",
        "files_per_split",
        "clips",
        "format",
    ):
        value = getattr(args, name)
        if value is None:
            continue
        if name not in allowed:
            raise UsageError(f"--{name.replace('_', '-')} does not apply to {args.corpus}")
        kwargs["fmt" if name == "format" else name] = value
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise UsageError(
            f"{out}: folder is not empty (stale files would mix with the new corpus); use --overwrite"
        )
    try:
        summary = {**SYNTH_CORPORA, "desed": make_desed}[args.corpus](out, seed=args.seed, **kwargs)
    except (ValueError, SedError) as e:
        raise UsageError(e) from None
    print(
        json.dumps({k: v for k, v in summary.items() if isinstance(v, str | int | float | Path)}, default=str)
    )
    return 0


def cmd_info(args: argparse.Namespace, con) -> int:
    from sed.audio.io import info
    from sed.cli.report import format_table

    files, failed = con.expand(args.inputs)
    rows = []

    def work(path: Path) -> None:
        i = info(path)
        rows.append(
            {
                "file": str(path),
                "sample_rate": i.sample_rate,
                "channels": i.channels,
                "frames": i.frames,
                "duration": round(i.duration, 6),
                "format": i.format,
                "subtype": i.subtype,
            }
        )

    failed += con.batch(files, work, "info")
    if args.json:
        for r in rows:
            print(json.dumps(r))
    else:
        print(
            format_table(rows, ["file", "sample_rate", "channels", "frames", "duration", "format", "subtype"])
        )
    return failed


def cmd_features(args: argparse.Namespace, con) -> int:
    from sed.audio.extract import extract_to_files
    from sed.fileio import check_output

    check_output(args.out, kind="folder")
    files, failed = con.expand(args.inputs)
    written, errors = extract_to_files(
        files,
        args.out,
        kind=args.kind,
        target_length=args.target_length,
        sample_rate=args.sample_rate,
        n_mels=args.n_mels,
        progress=lambda it: con.progress(it, total=len(files), desc=f"features ({args.kind})"),
    )
    for err in errors:
        con.error(err)
    con.status(f"wrote {len(written)} feature file(s) to {args.out}")
    return failed + len(errors)


def add_verbs(sub) -> None:
    p = sub.add_parser("synth", help="write a synthetic corpus in a real dataset's layout")
    p.add_argument("corpus", choices=sorted(_SYNTH_OPTIONS))
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=SEED, default=0, help="the corpus drawn")
    for name, (typ, text) in {
        "num_classes": (count(1000), "esc50, starss, desed: sound classes"),
        "clips_per_class": (count(10_000), "esc50: clips per class (a multiple of 5)"),
        "duration": (seconds(600), "seconds per clip or recording"),
        "num_patients": (count(1000), "icbhi: patients"),
        "recordings_per_patient": (count(100), "icbhi: recordings per patient"),
        "files_per_split": (count(10_000), "starss: recordings per split"),
        "clips": (count(100_000), "desed: clips per set (strong, weak, unlabelled, validation, test)"),
    }.items():
        p.add_argument(
            f"--{name.replace('_', '-')}", type=typ, default=None, help=f"{text} (default: the corpus's)"
        )
    p.add_argument("--format", choices=["foa", "mic", "both"], default=None, help="starss: audio format(s)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out folder")
    p.set_defaults(run=cmd_synth)

    p = sub.add_parser("info", help="sample rate, channels and duration of audio files")
    p.add_argument("inputs", nargs="+", help="files, folders or globs")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(run=cmd_info)

    p = sub.add_parser("features", help="extract features to one .npy per file")
    p.add_argument("inputs", nargs="+", help="files, folders or globs")
    p.add_argument(
        "--kind",
        choices=["fbank", "logmel", "foa", "mic"],
        default="fbank",
        help="fbank: AST's Kaldi fbank; logmel; foa/mic: the SELD features of 4-channel audio",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--target-length",
        type=count(100_000, metavar="FRAMES"),
        default=None,
        help="fbank: pad/crop to this many frames",
    )
    p.add_argument("--sample-rate", type=RATE, default=None, help="logmel: sample rate (default: 16000)")
    p.add_argument("--n-mels", type=count(512), default=None, help="logmel: mel bands (default: 64)")
    p.set_defaults(run=cmd_features)
