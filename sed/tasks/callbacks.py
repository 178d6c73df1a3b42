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

from sed.errors import printable
from sed.fileio import atomic_open


def git_hash() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip() or None
    except Exception:  # noqa: BLE001 - no git, not a checkout
        return None


def environment() -> dict:
    from sed.checkpoint import versions

    return {"versions": versions(), "git": git_hash(), "argv": sys.argv}


class RunInfo(pl.Callback):
    """Writes ``labels.json`` and ``environment.json`` (versions, git hash, command) into the run
    directory."""

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
    """Learning curves with their diagnosis, confusion matrices and per-class tables
    (sed.metrics.run_report)."""

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


def _row(path, scores: list[float], labels: list[str]) -> dict:
    """A clip's answer in the schema of ``sedkit classify --format json``: ``{"file", "top_k":
    [{"label", "score"}, ...]}``, here every class, best first."""
    names = [labels[i] if i < len(labels) else str(i) for i in range(len(scores))]
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    return {"file": path, "top_k": [{"label": names[i], "score": scores[i]} for i in order]}


def _report(line: str) -> None:
    print(f"error: {printable(line)}", file=sys.stderr, flush=True)


class PredictionWriter(BasePredictionWriter):
    """``predictions.jsonl`` in the run directory: one line per clip, ``{"file", "top_k": [{"label",
    "score"}, ...]}`` (every class, best first: the schema of ``sedkit classify --format json``).

    From files, each rank writes its own (``predictions.rank{R}.jsonl`` under DDP). From streamed
    shards (:class:`~sed.data.shards.reader.ShardClips`), each shard's rows are written to
    ``predictions/<shard>.jsonl`` (atomically, in key order) as soon as all of them have come, padding
    left out, and its failures to ``predictions/<shard>.errors`` (one line each); a shard's part is
    written once: a row that comes later (a key the index did not count) is a failure, never a
    rewrite. A rerun skips the shards already written (a killed run resumes without losing or
    repeating rows); at the end rank 0 merges every shard's file, in the index's shard order, into
    ``predictions.jsonl``, and :attr:`failed` counts the failures of every shard (bad members, keys met
    twice, counts that differ from ``index.json``, shards that gave nothing) for the exit code."""

    def __init__(self):
        super().__init__(write_interval="batch_and_epoch")
        self._shards = None  # the predict ShardClips, when predicting from shards
        self._root = Path(".")
        self._pending: dict[str, dict[str, dict]] = {}
        self._errors: dict[str, list[str]] = {}
        self._written: set[str] = set()
        #: failures of the run (rank 0, after predict from shards: every rank's)
        self.failed = 0

    def _folder(self, trainer=None) -> Path:
        return self._root / "predictions"

    def _part(self, url: str, suffix: str = ".jsonl") -> Path:
        return self._folder() / f"{url.rsplit('/', 1)[-1]}{suffix}"

    def setup(self, trainer, pl_module, stage: str) -> None:
        from sed.data.shards.reader import ShardClips

        self._root = Path(trainer.log_dir or ".")  # a collective under DDP: asked here, by every rank at once
        dm = getattr(trainer, "datamodule", None)
        ds = getattr(dm, "datasets", {}).get("predict") if stage == "predict" and dm is not None else None
        self._shards = ds if isinstance(ds, ShardClips) else None
        self._pending, self._errors, self._written, self.failed = {}, {}, set(), 0
        if self._shards is not None:  # resume: shards whose rows are written are not read again
            self._shards.skip = {u for u in self._shards.urls if self._part(u).is_file()}
            self._resumed = set(self._shards.skip)

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0
    ):
        if self._shards is None:
            return
        labels = list(getattr(pl_module, "labels", []))
        pad = prediction.get("pad")
        errors = batch.get("error") if isinstance(batch, dict) else None
        for i, (path, scores) in enumerate(zip(prediction["path"], prediction["scores"].tolist())):
            if errors is not None and errors[i] is not None:  # reported by the reader: counted here
                self._fail(trainer, batch["shard"][i], f"{path}: {errors[i]}", report=False)
            elif pad is None or not bool(pad[i]):
                self._add(trainer, path, _row(path, scores, labels))

    def _add(self, trainer, path: str, row: dict) -> None:
        url, _, key = path.rpartition("/")
        count = self._shards.counts.get(url)
        if count is None:
            self._fail(trainer, url, f"{path}: not a sample of a shard of index.json")
        elif url in self._written:  # never rewritten by a later batch
            self._fail(trainer, url, f"{path}: the shard holds more samples than index.json counts ({count})")
        elif key in self._pending.setdefault(url, {}):
            self._fail(trainer, url, f"{path}: key appears twice in the shard")
        else:
            self._pending[url][key] = row
            if len(self._pending[url]) == count:
                self._write_shard(url)

    def _fail(self, trainer, url: str, line: str, report: bool = True) -> None:
        if report:
            _report(line)
        self._errors.setdefault(url, []).append(line)
        if url in self._written:  # a failure after the shard's part: its errors file grows
            self._write_errors(url)

    def _write_errors(self, url: str) -> None:
        with atomic_open(self._part(url, ".errors")) as f:
            f.write("".join(f"{printable(line)}\n" for line in self._errors.get(url, [])))

    def _write_shard(self, url: str) -> None:
        rows = self._pending.pop(url, {})
        self._written.add(url)
        if self._errors.get(url):  # before the part: a part on disk means its errors are too
            self._write_errors(url)
        with atomic_open(self._part(url)) as f:
            for key in sorted(rows):
                f.write(json.dumps(rows[key]) + "\n")

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        if self._shards is not None:
            for url in sorted(set(self._pending) | (set(self._errors) - self._written)):
                got, failed = len(self._pending.get(url, {})), len(self._errors.get(url, []))
                count = self._shards.counts.get(url)
                if count is not None and got + failed < count:  # fewer samples than the index counts
                    self._fail(trainer, url, f"{url}: index.json counts {count} samples, {got} were read")
                if count is not None:
                    self._write_shard(url)
            return
        labels = list(getattr(pl_module, "labels", []))
        rank = trainer.global_rank
        path = self._root / (
            f"predictions.rank{rank}.jsonl" if trainer.world_size > 1 else "predictions.jsonl"
        )
        with atomic_open(path) as f:
            for batch in predictions:
                for p, s in zip(batch["path"] or [None] * len(batch["scores"]), batch["scores"].tolist()):
                    f.write(json.dumps(_row(p, s, labels)) + "\n")
        print(f"predictions written to {path}", file=sys.stderr)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if stage == "predict" and self._shards is not None:  # also when every shard was done before
            trainer.strategy.barrier()
            if trainer.is_global_zero:
                self._merge(trainer)

    def _merge(self, trainer) -> None:
        path = self._root / "predictions.jsonl"
        failed = 0
        with atomic_open(path) as out:
            for url in self._shards.urls:
                part, errors = self._part(url), self._part(url, ".errors")
                if not part.is_file():
                    _report(
                        f"{url}: no rows were written (index.json counts {self._shards.counts[url]} samples)"
                    )
                    failed += 1
                    continue
                out.write(part.read_text())
                if errors.is_file():
                    lines = errors.read_text().splitlines()
                    failed += len(lines)
                    if url in self._resumed:  # written by an earlier run: reported again, counted again
                        for line in lines:
                            _report(line)
        self.failed = failed
        print(f"predictions written to {path} (per shard: {self._folder(trainer)})", file=sys.stderr)


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
    return [
        best,
        last,
        LearningRateMonitor(logging_interval="epoch"),
        RunInfo(),
        Plots(),
        PredictionWriter(),
        EpochSeed(),
    ]


def event_task_callbacks(
    trainer: pl.Trainer, monitor: str, mode: str, save_top_k: int = 1
) -> list[pl.Callback]:
    """:func:`default_callbacks` for a task whose outputs are not clip rows (SELD, detection): without the
    clip-level :class:`PredictionWriter`, and without checkpoints / run files when ``trainer`` was built
    without them (no logger: nothing is written into the working directory)."""
    keep = (
        (EpochSeed,)
        + ((ModelCheckpoint,) if trainer.checkpoint_callbacks else ())
        + ((LearningRateMonitor, RunInfo, Plots) if trainer.loggers else ())
    )
    return [
        c for c in default_callbacks(monitor=monitor, mode=mode, save_top_k=save_top_k) if isinstance(c, keep)
    ]
