"""Fit + test one recipe config over several seeds; print and save test Sp / Se / Score mean and std.

Usage::

    python recipes/icbhi_ast_patchmix/multi_seed.py --config recipes/icbhi_ast_patchmix/patchmix_cl.yaml \\
        --seeds 1,2,3,4,5 --root runs/icbhi_ast_patchmix/patchmix_cl [--ckpt best|last] [LightningCLI
        overrides...]

Seed ``s`` sets ``seed_everything`` and the run directory ``ROOT/seed{s}``; the test split is
evaluated with the checkpoint chosen by ``--ckpt`` (``best``: best ``val_score`` epoch). The
table goes to ``ROOT/seeds.csv`` and ``ROOT/seeds.json`` (mean and sample std from
:func:`sed.training.kfold.summarize`, n - 1 in the denominator).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from sed.fileio import atomic_open
from sed.training.kfold import summarize

METRICS = ("test_sp", "test_se", "test_score")


def run_seeds(
    config_args: Sequence[str], seeds: Sequence[int], root: str | Path, ckpt: str = "best"
) -> tuple[list[dict], dict]:
    from sed.training.lightning_cli import make_cli

    root = Path(root)
    rows = []
    for s in seeds:
        argv = [*config_args, f"--seed_everything={s}", f"--trainer.default_root_dir={root / f'seed{s}'}"]
        cli = make_cli(argv, run=False)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        result = cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt)[0]
        rows.append({"seed": s, **{k: float(result[k]) for k in METRICS if k in result}})
    summary = summarize([{k: v for k, v in r.items() if k != "seed"} for r in rows])
    write(root, rows, summary)
    return rows, summary


def write(root: Path, rows: list[dict], summary: dict) -> None:
    root.mkdir(parents=True, exist_ok=True)
    with atomic_open(root / "seeds.csv", newline="") as f:
        w = csv.writer(f)
        w.writerow(["seed", *METRICS])
        for r in rows:
            w.writerow([r["seed"], *(r.get(k, "") for k in METRICS)])
        for stat in ("mean", "std"):
            w.writerow([stat, *(summary[k][stat] if k in summary else "" for k in METRICS)])
    with atomic_open(root / "seeds.json") as f:
        json.dump({"seeds": rows, "summary": summary}, f, indent=1)


def format_rows(rows: list[dict], summary: dict) -> str:
    lines = [f"{'seed':>6}  {'Sp':>7}  {'Se':>7}  {'Score':>7}"]
    lines += [
        f"{r['seed']:>6}  " + "  ".join(f"{r.get(k, float('nan')):7.2f}" for k in METRICS) for r in rows
    ]
    lines.append(
        f"{'mean':>6}  " + "  ".join(f"{summary.get(k, {}).get('mean', float('nan')):7.2f}" for k in METRICS)
    )
    lines.append(
        f"{'std':>6}  " + "  ".join(f"{summary.get(k, {}).get('std', float('nan')):7.2f}" for k in METRICS)
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, action="append", help="recipe YAML (repeatable)")
    p.add_argument("--seeds", default="1,2,3,4,5", help="comma-separated seeds (default 1,2,3,4,5)")
    p.add_argument("--root", required=True, help="output folder: ROOT/seed{s}/, seeds.csv, seeds.json")
    p.add_argument("--ckpt", default="best", choices=("best", "last"), help="checkpoint tested per seed")
    args, overrides = p.parse_known_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    config_args = [a for c in args.config for a in ("--config", c)] + list(overrides)
    rows, summary = run_seeds(config_args, seeds, args.root, args.ckpt)
    print(format_rows(rows, summary))
    print(f"written {Path(args.root) / 'seeds.csv'} and seeds.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
