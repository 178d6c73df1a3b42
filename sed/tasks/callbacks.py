"""Callbacks every sed training run gets: checkpoints (best-k and last), learning-rate logging,
the run's labels and environment, plots at the end of fit and test, prediction files, and a
per-epoch seed (so that a resumed run draws what the uninterrupted one would)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter, LearningRateMonitor, ModelCheckpoint

from sed.fileio import atomic_open


def git_hash() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except Exception:  # noqa: BLE001 - no git, not a checkout
        return None


def environment() -> dict:
    from sed.checkpoint import versions

    return {"versions": versions(), "git": git_hash(), "argv": sys.argv}


class RunInfo(pl.Callback):
    """Writes ``labels.json`` and ``environment.json`` (versions, git hash, command) into the run directory."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        log_dir = trainer.log_dir  # a collective under DDP: every rank must ask
        if not trainer.is_global_zero or not log_dir:
            return
        root = Path(log_dir)
        with atomic_open(root / "labels.json") as f:
            json.dump(list(getattr(pl_module, "labels", [])), f, indent=1)
        with atomic_open(root / "environment.json") as f:
            json.dump(environment(), f, indent=1)


class Plots(pl.Callback):
    """Learning curves with their diagnosis, confusion matrices and per-class tables (sed.metrics.run_report)."""

    def _plot(self, trainer: pl.Trainer) -> None:
        log_dir = trainer.log_dir  # a collective under DDP: every rank must ask
        if trainer.is_global_zero and log_dir and not trainer.sanity_checking:
            from sed.metrics.run_report import plot_run

            for logger in trainer.loggers:
                logger.save()
            try:
                plot_run(log_dir)
            except Exception as e:  # noqa: BLE001 - plots must never fail a training run
                print(f"note: plots not written: {e}", file=sys.stderr)

    def on_fit_end(self, trainer, pl_module) -> None:
        self._plot(trainer)

    def on_test_end(self, trainer, pl_module) -> None:
        self._plot(trainer)


class PredictionWriter(BasePredictionWriter):
    """``predictions.jsonl`` in the run directory: one line per clip with its scores and top label."""

    def __init__(self):
        super().__init__(write_interval="epoch")

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        labels = list(getattr(pl_module, "labels", []))
        rank = trainer.global_rank
        path = Path(trainer.log_dir or ".") / (f"predictions.rank{rank}.jsonl" if trainer.world_size > 1 else "predictions.jsonl")
        with atomic_open(path) as f:
            for batch in predictions:
                for p, s in zip(batch["path"] or [None] * len(batch["scores"]), batch["scores"].tolist()):
                    top = max(range(len(s)), key=s.__getitem__)
                    f.write(json.dumps({"file": p, "label": labels[top] if top < len(labels) else top,
                                        "score": s[top], "scores": dict(zip(labels, s))}) + "\n")
        print(f"predictions written to {path}", file=sys.stderr)


class EpochSeed(pl.Callback):
    """Seeds Python's, NumPy's and torch's (CPU and CUDA) global generators at the start of each training
    epoch from the run's seed and the epoch number alone. Crops, SpecAugment, mixup and dropout in
    epoch ``e`` then draw the same numbers whether the run got there in one go or resumed from a
    checkpoint (whatever the sanity check or Lightning's loader setup drew before). The run's seed
    is ``seed_everything``'s (``PL_GLOBAL_SEED``); without one, nothing is reseeded. A training
    dataset with ``set_epoch`` (streamed shards) is told the epoch here too."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        dataset = getattr(trainer.train_dataloader, "dataset", None)
        if callable(getattr(dataset, "set_epoch", None)):  # streamed shards deal themselves by epoch
            dataset.set_epoch(trainer.current_epoch)
        base = os.environ.get("PL_GLOBAL_SEED")
        if base is None:
            return
        seed = int(np.random.SeedSequence([int(base) % 2**32, trainer.current_epoch]).generate_state(1)[0])
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)  # every CUDA device too


def default_callbacks(monitor: str, mode: str, save_top_k: int = 1) -> list[pl.Callback]:
    """Best-k checkpoints on ``monitor`` (first: ``trainer.checkpoint_callback``, ``ckpt_path="best"``) and
    ``last.ckpt`` rewritten after every epoch (Lightning's ``save_last`` only follows top-k saves, so a
    run whose metric stopped improving would resume from a stale epoch)."""
    best = ModelCheckpoint(filename="best-{epoch:03d}", monitor=monitor, mode=mode, save_top_k=save_top_k)
    last = ModelCheckpoint(filename="last", monitor=None, save_top_k=1, enable_version_counter=False)
    return [best, last, LearningRateMonitor(logging_interval="epoch"), RunInfo(), Plots(), PredictionWriter(),
            EpochSeed()]
