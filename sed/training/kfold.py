"""``sedkit kfold``: one run per held-out fold, then every test metric per fold with mean and std.

For fold k the data module gets ``val_folds=[k]`` and ``test_folds=[k]`` (train on the other
folds), the run goes to ``ROOT/fold{k}``, and the held-out fold is tested with the checkpoint
chosen by ``--ckpt`` (``best``: best validation epoch, as the AST ESC-50 recipe does, which
selects on the held-out fold itself; ``last``: the final epoch, no selection on held-out data).
The table is written to ``ROOT/kfold.csv`` and ``ROOT/kfold.json`` and printed; the pictures
(:func:`sed.metrics.run_report.plot_kfold`) to ``ROOT/kfold_summary.png`` (the main metric per fold,
mean +- std) and ``ROOT/confusion_pooled.csv/.png`` (every held-out fold's test matrix summed).
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from sed.fileio import atomic_open
from sed.metrics.run_report import plot_kfold
from sed.training.lightning_cli import make_cli


def summarize(rows: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and sample standard deviation (n - 1; 0 for one fold) of every metric over folds."""
    keys = sorted({k for r in rows for k in r if k != "fold"})
    out: dict[str, dict[str, float]] = {}
    for k in keys:
        vals = [float(r[k]) for r in rows if k in r and r[k] is not None]
        if not vals:
            continue
        mean = sum(vals) / len(vals)
        var = sum((v - mean) ** 2 for v in vals) / (len(vals) - 1) if len(vals) > 1 else 0.0
        out[k] = {"mean": mean, "std": math.sqrt(var)}
    return out


def write_kfold(root: Path, rows: list[dict], summary: dict) -> None:
    keys = list(summary)
    with atomic_open(root / "kfold.csv", newline="") as f:
        w = csv.writer(f)
        w.writerow(["fold", *keys])
        for r in rows:
            w.writerow([r["fold"], *(r.get(k, "") for k in keys)])
        w.writerow(["mean", *(summary[k]["mean"] for k in keys)])
        w.writerow(["std", *(summary[k]["std"] for k in keys)])
    with atomic_open(root / "kfold.json") as f:
        json.dump({"folds": rows, "summary": summary}, f, indent=1)


def run_kfold(
    config_args: Sequence[str], folds: Sequence[int], root: str | Path, ckpt: str = "best"
) -> tuple[list, dict]:
    """Train and test one run per fold; ``config_args`` are LightningCLI arguments (``--config X ...``)."""
    root = Path(root)
    rows = []
    for k in folds:
        argv = [
            *config_args,
            f"--data.init_args.val_folds=[{k}]",
            f"--data.init_args.test_folds=[{k}]",
            f"--trainer.default_root_dir={root / f'fold{k}'}",
        ]
        cli = make_cli(argv, run=False)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        result = cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt)[0]
        rows.append({"fold": k, **{name: float(v) for name, v in result.items()}})
    summary = summarize(rows)
    write_kfold(root, rows, summary)
    for note in plot_kfold(root, rows, summary, checkpoint=ckpt)["notes"]:
        print(f"note: {note}", file=sys.stderr)
    return rows, summary
