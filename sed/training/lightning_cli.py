"""``sedkit fit|validate|test|predict`` through LightningCLI.

Lightning owns devices, precision, DDP, checkpointing and logging; sed links the data into the
model (number of classes, label names, multi-label), puts every run in one directory
(``trainer.default_root_dir``: ``config.yaml``, ``metrics.csv``, TensorBoard events,
``checkpoints/``, ``labels.json``, ``environment.json``, plots), seeds everything
(``seed_everything(seed, workers=True)``, ``seed_everything: 0`` by default) and writes
checkpoints atomically (:class:`~sed.training.checkpoint_io.AtomicCheckpointIO`).
"""

from __future__ import annotations

from collections.abc import Sequence

import pytorch_lightning as pl
from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

from sed.tasks.classification import ClassificationTask  # noqa: F401 - importable class paths
from sed.training.checkpoint_io import AtomicCheckpointIO

DEFAULT_ROOT = "runs/default"


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing ``metrics.csv``; a run directory keeps one history
    across fit, resumed fit and test, so this one appends (and keeps the existing columns)."""

    def _check_log_dir_exists(self) -> None:
        import csv
        import os

        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as f:
                self.metrics_keys = list(next(csv.reader(f), []))


class RunCSVLogger(CSVLogger):
    """A CSVLogger writing ``metrics.csv`` in the run directory itself, appending across sessions."""

    def __init__(self, root: str):
        super().__init__(root, name="", version="")

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


class SedLightningCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.label_names", "model.init_args.labels", apply_on="instantiate")
        parser.link_arguments("data.is_multi_label", "model.init_args.multi_label", apply_on="instantiate")

    def instantiate_trainer(self, **kwargs) -> pl.Trainer:
        cfg = self._get(self.config_init, "trainer", default={}) or {}
        root = cfg.get("default_root_dir") or DEFAULT_ROOT
        if cfg.get("logger") in (None, True):
            # both loggers write into the run directory itself (no name/version sub-folders)
            kwargs["logger"] = [RunCSVLogger(root), TensorBoardLogger(root, name="", version="")]
        kwargs.setdefault("default_root_dir", root)
        if not cfg.get("plugins"):  # checkpoints written atomically (a kill never leaves a partial one)
            kwargs["plugins"] = [AtomicCheckpointIO()]
        return super().instantiate_trainer(**kwargs)


def make_cli(argv: Sequence[str], run: bool = True) -> SedLightningCLI:
    """Build (and with ``run`` execute) the LightningCLI for ``argv`` (``fit --config X ...``)."""
    return SedLightningCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        trainer_defaults={"default_root_dir": DEFAULT_ROOT, "log_every_n_steps": 5},
        save_config_kwargs={"overwrite": True},
        args=list(argv),
        run=run,
        auto_configure_optimizers=False,
    )


def run_lightning(argv: Sequence[str]) -> int:
    make_cli(argv)
    return 0
