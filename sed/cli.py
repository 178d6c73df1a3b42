"""The ``sedkit`` command (also ``python -m sed``).

Exit codes: 0 when everything succeeded, 1 when any input failed (each failure is one line on
stderr and the rest of the batch goes on), 2 for usage errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from sed.errors import SedError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def report(err: Exception | str) -> None:
    """One line on stderr for a user error; no traceback."""
    print(f"error: {err}", file=sys.stderr)


def progress(iterable, total: int | None = None, desc: str = ""):
    """A progress bar on stderr (silent when stderr is not a terminal)."""
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="file", file=sys.stderr, disable=None, leave=False)


def run_batch(items: Sequence, work: Callable, desc: str) -> int:
    """Apply ``work`` to every item; user errors are reported and the batch goes on."""
    failed = 0
    for item in progress(items, total=len(items), desc=desc):
        try:
            work(item)
        except SedError as e:
            report(e)
            failed += 1
    return EXIT_FAILED if failed else EXIT_OK


def _expand(inputs: Sequence[str]) -> tuple[list[Path], int]:
    from sed.audio.io import find_audio_files

    files, failed = [], 0
    for item in inputs:
        try:
            files.extend(find_audio_files([item]))
        except SedError as e:
            report(e)
            failed += 1
    return files, failed


# ---------------------------------------------------------------------------------- synth
_SYNTH_OPTIONS = {
    "esc50": {"num_classes": int, "clips_per_class": int, "duration": float},
    "icbhi": {"num_patients": int, "recordings_per_patient": int, "duration": float},
    "starss": {"files_per_split": int, "duration": float, "num_classes": int, "format": str},
}


def cmd_synth(args: argparse.Namespace) -> int:
    from sed.data.synth import SYNTH_CORPORA

    allowed = _SYNTH_OPTIONS[args.corpus]
    kwargs = {}
    for name in ("num_classes", "clips_per_class", "duration", "num_patients", "recordings_per_patient",
                 "files_per_split", "format"):
        value = getattr(args, name)
        if value is None:
            continue
        if name not in allowed:
            report(f"--{name.replace('_', '-')} does not apply to {args.corpus}")
            return EXIT_USAGE
        kwargs["fmt" if name == "format" else name] = value
    try:
        summary = SYNTH_CORPORA[args.corpus](args.out, seed=args.seed, **kwargs)
    except (ValueError, SedError) as e:
        report(e)
        return EXIT_USAGE
    print(json.dumps(summary, default=str, indent=2))
    return EXIT_OK


# ---------------------------------------------------------------------------------- info
def cmd_info(args: argparse.Namespace) -> int:
    from sed.audio.io import info

    files, failed = _expand(args.inputs)
    rows = []

    def work(path: Path) -> None:
        i = info(path)
        rows.append({"file": str(path), "sample_rate": i.sample_rate, "channels": i.channels,
                     "frames": i.frames, "duration": round(i.duration, 6), "format": i.format, "subtype": i.subtype})

    code = run_batch(files, work, "info")
    if args.json:
        for r in rows:
            print(json.dumps(r))
    else:
        print(format_table(rows, ["file", "sample_rate", "channels", "frames", "duration", "format", "subtype"]))
    return EXIT_FAILED if failed else code


def format_table(rows: list[dict], columns: Sequence[str]) -> str:
    """An aligned plain-text table (numbers right-aligned)."""
    def cell(v) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    cells = [[cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    numeric = [all(isinstance(r.get(c), int | float) for r in rows) and rows for c in columns]
    def line(vals):
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(vals, widths, numeric)).rstrip()
    return "\n".join([line(list(columns))] + [line(r) for r in cells])


# ---------------------------------------------------------------------------------- features
def cmd_features(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from sed.audio.features import build_frontend
    from sed.audio.io import load_audio
    from sed.fileio import atomic_save

    kw: dict = {}
    if args.kind == "fbank":
        kw["target_length"] = args.target_length
        sr, channels, need = 16000, "mono", None
    elif args.kind == "logmel":
        sr, channels, need = args.sample_rate or 16000, None, None
        kw.update(sample_rate=sr, n_mels=args.n_mels or 64)
    else:
        sr, channels, need = 24000, None, 4
    frontend = build_frontend(args.kind, **kw)
    files, failed = _expand(args.inputs)
    out_dir = Path(args.out)
    written: dict[Path, Path] = {}

    def work(path: Path) -> None:
        target = out_dir / f"{path.stem}.npy"
        if target in written:
            raise SedError(path, f"output {target} already written for {written[target]}; rename one of them")
        wave, _ = load_audio(path, sample_rate=sr, channels=channels, num_channels=need)
        with torch.inference_mode():
            feats = frontend(wave[None])[0].numpy().astype(np.float32)
        atomic_save(target, lambda tmp: np.save(tmp, feats))
        written[target] = path

    code = run_batch(files, work, f"features ({args.kind})")
    print(f"wrote {len(written)} feature file(s) to {out_dir}", file=sys.stderr)
    return EXIT_FAILED if failed else code


# ---------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    from sed import __version__

    parser = argparse.ArgumentParser(prog="sedkit", description="Audio sound-event classification and SELD.")
    parser.add_argument("--version", action="version", version=f"sedkit {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True

    p = sub.add_parser("synth", help="write a synthetic corpus in a real dataset's layout")
    p.add_argument("corpus", choices=sorted(_SYNTH_OPTIONS))
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    for name, typ in {"num_classes": int, "clips_per_class": int, "duration": float, "num_patients": int,
                      "recordings_per_patient": int, "files_per_split": int}.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=typ, default=None)
    p.add_argument("--format", choices=["foa", "mic", "both"], default=None, help="starss: audio format(s)")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("info", help="sample rate, channels and duration of audio files")
    p.add_argument("inputs", nargs="+", help="files, folders or globs")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("features", help="extract features to one .npy per file")
    p.add_argument("inputs", nargs="+", help="files, folders or globs")
    p.add_argument("--kind", choices=["fbank", "logmel", "foa", "mic"], default="fbank")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--target-length", type=int, default=None, help="fbank: pad/crop to this many frames")
    p.add_argument("--sample-rate", type=int, default=None, help="logmel: sample rate (default 16000)")
    p.add_argument("--n-mels", type=int, default=None, help="logmel: mel bands (default 64)")
    p.set_defaults(func=cmd_features)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except SedError as e:
        report(e)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
