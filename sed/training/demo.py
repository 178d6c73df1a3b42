"""``sedkit demo``: the whole road on synthetic data in a few CPU minutes.

Synthesises the demo corpus (ESC-50 layout), trains the demo recipe (recipes/demo/config.yaml) on
folds 1-3, selects its best epoch on fold 4, tests that checkpoint on fold 5 (selection and score on
different folds), writes the plots, classifies a few held-out files with the saved checkpoint alone
(what ``sedkit classify`` runs) and prints where everything is; training prints a line per epoch (or
Lightning's bar on a terminal). Exit code 0 when the held-out accuracy reaches the 90 % check, else 1.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from sed.data.synth.corpora import make_esc50
from sed.errors import DatasetError
from sed.inference.classifier import Classifier
from sed.training.lightning_cli import make_cli

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "demo" / "config.yaml"
SIZES = {  # corpus and training budget: "full" for the README, "ci" for the test suite
    "full": {"num_classes": 10, "clips_per_class": 20, "duration": 5.0, "max_epochs": 8, "batch_size": 16},
    "ci": {"num_classes": 4, "clips_per_class": 15, "duration": 3.0, "max_epochs": 10, "batch_size": 8},
}
ACCURACY_CHECK = 0.90


def _json_lines(rows: list[dict]) -> str:
    return "\n".join(json.dumps(r) for r in rows)


def run_demo(
    workdir: str | Path = "work/demo", size: str = "full", present: Callable[[list[dict]], str] = _json_lines
) -> int:
    """The demo in ``workdir``; ``present`` lays out the rows of :meth:`Classifier.predict` it prints (sedkit
    demo: classify's table). Returns 0 when the held-out accuracy passes the check."""
    if not RECIPE.is_file():
        raise DatasetError(
            RECIPE, "the demo recipe is missing: sedkit demo runs from a source checkout (pip install -e .)"
        )
    cfg = SIZES[size]
    workdir = Path(workdir)
    corpus, run = workdir / "esc50", workdir / "run"
    t0 = time.perf_counter()
    if not (corpus / "meta" / "esc50.csv").is_file():
        make_esc50(
            corpus,
            seed=0,
            num_classes=cfg["num_classes"],
            clips_per_class=cfg["clips_per_class"],
            duration=cfg["duration"],
            sample_rate=16000,
        )
    print(
        f"[1/4] corpus: {corpus} ({cfg['num_classes']} classes x {cfg['clips_per_class']} clips)",
        file=sys.stderr,
    )

    cli = make_cli(
        [
            "--config",
            str(RECIPE),
            f"--data.init_args.root={corpus}",
            f"--trainer.default_root_dir={run}",
            f"--trainer.max_epochs={cfg['max_epochs']}",
            f"--data.init_args.batch_size={cfg['batch_size']}",
        ],
        run=False,
    )
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    print(f"[2/4] trained in {time.perf_counter() - t0:.0f} s: {run}", file=sys.stderr)
    result = cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="best", verbose=False)[0]
    acc = float(result["test_acc"])
    best = Path(cli.trainer.checkpoint_callback.best_model_path)
    print(f"[3/4] held-out fold 5: accuracy {acc:.1%}, macro F1 {result['test_f1']:.3f}", file=sys.stderr)

    held_out = sorted((corpus / "audio").glob("5-*.wav"))[:4]
    print(
        f"[4/4] sedkit classify {corpus / 'audio'}/5-*.wav --checkpoint {best} --top-k 2 (first 4 files):",
        file=sys.stderr,
    )
    print(present(Classifier.from_pretrained(best).predict(held_out, top_k=2)))
    print(
        f"\nrun directory   {run}\n  checkpoints   {best.parent}\n  metrics       {run / 'metrics.csv'}"
        f"\n  plots         {run / 'learning_curves.png'}, {run / 'confusion_test.png'}"
        f"\n  config        {run / 'config.yaml'}\nheld-out accuracy {acc:.1%} "
        f"({'ok' if acc >= ACCURACY_CHECK else 'below'} the {ACCURACY_CHECK:.0%} check); "
        f"total {time.perf_counter() - t0:.0f} s"
    )
    return 0 if acc >= ACCURACY_CHECK else 1
