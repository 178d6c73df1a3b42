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
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        report(f"{out}: folder is not empty (stale files would mix with the new corpus); use --overwrite")
        return EXIT_USAGE
    try:
        summary = SYNTH_CORPORA[args.corpus](out, seed=args.seed, **kwargs)
    except (ValueError, SedError) as e:
        report(e)
        return EXIT_USAGE
    print(json.dumps({k: v for k, v in summary.items() if isinstance(v, str | int | float | Path)}, default=str))
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
    from sed.output import format_table

    if args.json:
        for r in rows:
            print(json.dumps(r))
    else:
        print(format_table(rows, ["file", "sample_rate", "channels", "frames", "duration", "format", "subtype"]))
    return EXIT_FAILED if failed else code


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


# ---------------------------------------------------------------------------------- classify / embed
def _load_classifier(args: argparse.Namespace):
    """The checkpoint's Classifier, or None after reporting why it cannot be used (a usage error)."""
    from sed.inference import Classifier

    try:
        return Classifier.from_pretrained(args.checkpoint, device=args.device, precision=args.precision)
    except (SedError, ValueError) as e:
        report(e)
        return None


def _classify_ensemble(args: argparse.Namespace, files: list) -> list | None:
    """Rows of the ensemble of every --checkpoint, or None after reporting a usage error."""
    from sed.ensemble_cli import classify_ensemble, ensemble_options
    from sed.inference import Classifier

    try:
        opts = ensemble_options(args.ensemble, args.weights, len(args.checkpoint))
        clfs = [Classifier.from_pretrained(c, device=args.device, precision=args.precision) for c in args.checkpoint]
        return classify_ensemble(clfs, files, args.ensemble, top_k=args.top_k, window=args.window, hop=args.hop,
                                 aggregate=args.aggregate, batch_size=args.batch_size, multi_label=args.multi_label,
                                 progress=lambda it: progress(it, desc="classify"), **opts)
    except (SedError, ValueError) as e:
        report(e)
        return None


def cmd_classify(args: argparse.Namespace) -> int:
    from sed.output import emit, format_predictions

    if args.hop is not None and args.window is None:
        report("--hop needs --window")
        return EXIT_USAGE
    if args.ensemble is None and (len(args.checkpoint) > 1 or args.weights is not None):
        report("several --checkpoint (or --weights) need --ensemble vote|average|weighted|rank")
        return EXIT_USAGE
    if args.ensemble is not None:
        files, failed = _expand(args.inputs)
        preds = _classify_ensemble(args, files)
        if preds is None:
            return EXIT_USAGE
    else:
        args.checkpoint = args.checkpoint[0]
        clf = _load_classifier(args)
        if clf is None:
            return EXIT_USAGE
        files, failed = _expand(args.inputs)
        preds = clf.predict(files, top_k=args.top_k, window=args.window, hop=args.hop, aggregate=args.aggregate,
                            batch_size=args.batch_size, multi_label=args.multi_label,
                            progress=lambda it: progress(it, desc="classify"))
    for p in preds:
        if "error" in p:
            report(p["error"])
            failed += 1
        elif "note" in p:
            print(f"note: {p['note']}", file=sys.stderr)
    emit(format_predictions(preds, args.format, args.aggregate), args.output)
    return EXIT_FAILED if failed else EXIT_OK


def cmd_ensemble_eval(args: argparse.Namespace) -> int:
    import yaml

    from sed.ensemble_cli import ensemble_eval, format_ensemble_eval

    try:
        table = ensemble_eval(args.checkpoints, args.config, split=args.split, out=args.out, device=args.device)
    except (SedError, ValueError, OSError, yaml.YAMLError) as e:
        report(e)
        return EXIT_USAGE
    print(format_ensemble_eval(table))
    return EXIT_OK


def cmd_embed(args: argparse.Namespace) -> int:
    import numpy as np

    from sed.fileio import atomic_open, atomic_save

    clf = _load_classifier(args)
    if clf is None:
        return EXIT_USAGE
    files, failed = _expand(args.inputs)
    emb, results = clf.embed(files, batch_size=args.batch_size)
    ok = []
    for r in results:
        if r.error:
            report(r.error)
            failed += 1
        else:
            ok.append(r.name)
    out = Path(args.out)
    atomic_save(out, lambda tmp: np.save(tmp, emb.astype(np.float32)))
    with atomic_open(out.with_suffix(".files.txt")) as f:
        f.write("".join(f"{name}\n" for name in ok))
    print(f"wrote {emb.shape[0]} x {emb.shape[1] if emb.ndim == 2 else 0} embeddings to {out} "
          f"(row order in {out.with_suffix('.files.txt')})", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


def _add_model_options(p: argparse.ArgumentParser, several: bool = False) -> None:
    p.add_argument("--checkpoint", required=True, action="append" if several else "store",
                   help="sed checkpoint, Lightning .ckpt, AST .pth, HF dir/hub id or short name"
                        + ("; repeat it with --ensemble" if several else ""))
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")


# ---------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    from sed import __version__, cli_seld, cli_train

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
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out folder")
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

    p = sub.add_parser("classify", help="label audio files with a checkpoint (or an ensemble of several)")
    p.add_argument("inputs", nargs="+", help="files, folders or globs")
    _add_model_options(p, several=True)
    p.add_argument("--ensemble", choices=["vote", "average", "weighted", "rank"], default=None,
                   help="combine the scores of several --checkpoint (sed.ensemble.combine)")
    p.add_argument("--weights", default=None,
                   help="weighted: the members' weights, rank: their validation metrics ('0.3,0.7'), "
                        "or the JSON file of sedkit ensemble-eval --out")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--window", type=float, default=None, help="window length in seconds (window mode)")
    p.add_argument("--hop", type=float, default=None, help="hop between windows in seconds (default: --window)")
    p.add_argument("--aggregate", choices=["mean", "max"], default="mean", help="window mode: per-file aggregate")
    p.add_argument("--format", choices=["table", "json", "csv"], default="table")
    p.add_argument("--output", default=None, help="write here (atomically) instead of stdout")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--multi-label", dest="multi_label", action="store_true", default=None, help="sigmoid scores")
    g.add_argument("--single-label", dest="multi_label", action="store_false", help="softmax scores")
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("ensemble-eval", help="each checkpoint and each ensemble method on a data split; "
                                             "writes the ensemble weights")
    p.add_argument("--checkpoints", nargs="+", required=True, help="the ensemble members")
    p.add_argument("--config", required=True,
                   help="data YAML: a sedkit fit config (its data: section) or AudioDataModule init args")
    p.add_argument("--split", choices=["val", "test"], default="val")
    p.add_argument("--out", default=None, help="write the table, member metrics and weights here (JSON)")
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N")
    p.set_defaults(func=cmd_ensemble_eval)

    p = sub.add_parser("embed", help="pooled embeddings of audio files to a .npy")
    p.add_argument("inputs", nargs="+", help="files, folders or globs")
    _add_model_options(p)
    p.add_argument("--out", required=True, help="output .npy ([N, D]); row order in OUT.files.txt")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("seld-eval", help="DCASE SELD metrics of prediction CSVs against reference CSVs")
    p.add_argument("--pred", required=True, help="folder of prediction CSVs (searched recursively)")
    p.add_argument("--ref", required=True, help="folder of reference metadata CSVs (searched recursively)")
    p.add_argument("--year", type=int, choices=[2023, 2024], default=2023,
                   help="2023: segment-level ER/F/LE/LR/SELD; 2024: frame-level with distance")
    p.add_argument("--average", choices=["macro", "micro"], default="macro")
    p.add_argument("--nb-classes", type=int, default=None, help="default: 13 for STARSS names, else inferred")
    p.add_argument("--jackknife", action="store_true", help="add leave-one-file-out 95%% confidence intervals")
    p.add_argument("--json", action="store_true", help="print one JSON object (F and LR as fractions)")
    p.set_defaults(func=cli_seld.cmd_seld_eval)
    p = sub.add_parser("seld-infer", help="SELD predictions (DCASE CSVs) of audio files of any length")
    p.add_argument("audio", nargs="+", help="4-channel audio files, folders or globs")
    p.add_argument("--checkpoint", required=True, help="SELD checkpoint (.ckpt from sedkit fit, .pt, .safetensors)")
    p.add_argument("--out", required=True, help="folder for one <stem>.csv per file")
    p.add_argument("--window", type=float, default=5.0, help="window in seconds (multiple of 0.1)")
    p.add_argument("--hop", type=float, default=5.0, help="hop in seconds (<= window; overlaps are averaged)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto")
    p.add_argument("--year", type=int, choices=[2023, 2024], default=2023, help="CSV format (2024: distance)")
    p.set_defaults(func=cli_seld.cmd_seld_infer)

    p = sub.add_parser("plot-doa", help="azimuth/elevation against time per class of a DCASE CSV")
    p.add_argument("csv", help="prediction CSV")
    p.add_argument("--ref", default=None, help="reference CSV drawn underneath")
    p.add_argument("--out", required=True, help="PNG to write")
    p.set_defaults(func=cli_seld.cmd_plot_doa)

    p = sub.add_parser("prepare", help="validate a corpus and print its per-fold and per-class counts")
    p.add_argument("corpus", choices=["starss", "icbhi"])
    p.add_argument("--root", required=True, help="corpus root (starss: foa_dev/ or mic_dev/ and metadata_dev/; "
                                                 "icbhi: the recordings, their .txt and official_split.txt)")
    p.add_argument("--format", choices=["foa", "mic"], default="foa", help="starss: audio format")
    p.add_argument("--cache", default=None, help="starss: also extract every file's features into this cache folder")
    p.set_defaults(func=cli_seld.cmd_prepare)

    for verb in cli_train.LIGHTNING_VERBS:
        sub.add_parser(verb, add_help=False, help=f"LightningCLI {verb}: sedkit {verb} --config YAML [--section.key value ...]")
    sub.add_parser("kfold", add_help=False, help="k-fold cross-validation: sedkit kfold --config YAML --folds 1,2,3,4,5")
    sub.add_parser("finetune", add_help=False, help="fit from a pretrained source: sedkit finetune --from SRC --config YAML")

    p = sub.add_parser("plot", help="learning curves, diagnosis, confusion matrix of a run directory")
    p.add_argument("run_dir")
    p.set_defaults(func=cli_train.cmd_plot)

    p = sub.add_parser("demo", help="the whole road on synthetic data: synth, train, evaluate, plot, classify")
    p.add_argument("--workdir", default="work/demo")
    p.add_argument("--size", choices=["ci", "full"], default="full", help="ci: a smaller, faster run")
    p.set_defaults(func=cli_train.cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from sed import cli_train

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in cli_train.LIGHTNING_VERBS:
        return cli_train.lightning(argv)
    if argv and argv[0] == "kfold":
        return cli_train.cmd_kfold(argv[1:])
    if argv and argv[0] == "finetune":
        return cli_train.cmd_finetune(argv[1:])
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
