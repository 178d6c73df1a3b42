"""``sedkit fit|validate|test|predict`` through LightningCLI.

Lightning owns devices, precision, DDP, checkpointing and logging; sed links the data into the
model (number of classes, label names, multi-label), puts every run in one directory
(``trainer.default_root_dir``: ``config.yaml``, ``metrics.csv``, TensorBoard events,
``checkpoints/``, ``labels.json``, ``environment.json``, plots), seeds everything
(``seed_everything(seed, workers=True)``, ``seed_everything: 0`` by default) and writes
checkpoints atomically (:class:`~sed.training.checkpoint_io.AtomicCheckpointIO`).

A ``validate`` or ``test`` outside ``fit`` logs to ``validate_metrics.csv`` / ``test_metrics.csv``, so a
finished run's ``metrics.csv`` (its learning curves) stays as ``fit`` wrote it. A ``fit`` that took no
training step is an error (:class:`TrainingRan`). An error while reading the configuration or building
its objects is one line (:func:`root_cause`: sed's error naming the file, else the innermost message),
as are Lightning's configuration errors (:func:`lightning_errors`). What a run prints is set in
:mod:`sed.training.progress`.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelSummary, ProgressBar
from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from sed.errors import DatasetError, SedError, UsageError, one_line
from sed.tasks.classification import ClassificationTask  # noqa: F401 - importable class paths
from sed.training.checkpoint_io import AtomicCheckpointIO
from sed.training.progress import EpochLines, Summary, quiet_lightning

DEFAULT_ROOT = "runs/default"
FIT_METRICS = "metrics.csv"
_KEY = re.compile(r'Parser key "([^"]+)"')


# ------------------------------------------------------------------------------------- one-line errors
def _chain(err: BaseException) -> list[BaseException]:
    """``err`` and the exceptions it was raised from or during, outermost first."""
    chain: list[BaseException] = []
    while err is not None and err not in chain:
        chain.append(err)
        err = err.__cause__ or (None if err.__suppress_context__ else err.__context__)
    return chain


def root_cause(err: BaseException) -> str:
    """The line that says what went wrong in a chain of wrapped errors (jsonargparse wraps each error of a
    class's construction in two or three others): sed's error (it names the file), else the innermost
    message, prefixed with the configuration key it belongs to."""
    chain = _chain(err)
    sed = next((e for e in chain if isinstance(e, SedError)), None)
    if sed is not None:
        return str(sed)
    key = next((m.group(1) for e in chain if (m := _KEY.match(str(e)))), None)
    reason = one_line(chain[-1])
    return f"{key}: {reason}" if key and key not in reason else reason


@contextmanager
def config_errors() -> Iterator[None]:
    """The job cannot start: an error while reading the configuration or building its objects is one
    :class:`~sed.errors.UsageError` line (exit 2)."""
    try:
        yield
    except UsageError:
        raise
    except Exception as err:  # noqa: BLE001 - jsonargparse wraps every error of a construction
        raise UsageError(root_cause(err)) from err


@contextmanager
def lightning_errors() -> Iterator[None]:
    """Lightning's configuration errors during a run (``MisconfigurationException``) as one usage line."""
    try:
        yield
    except MisconfigurationException as err:
        raise UsageError(root_cause(err)) from err


# ----------------------------------------------------------------------------------------- callbacks
class TrainingRan(pl.Callback):
    """A ``fit`` that took no training step fails instead of ending with exit 0 and no checkpoint: a
    resumed run that had already reached ``max_epochs`` is a usage error, a training set that gave no
    batch (every file or shard unreadable) a :class:`~sed.errors.DatasetError`."""

    def __init__(self):
        self.steps = 0

    def on_fit_start(self, trainer, pl_module) -> None:
        self.steps = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps += 1

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.steps or trainer.max_steps == 0 or trainer.limit_train_batches == 0:
            return
        if trainer.ckpt_path:
            limit = f"--trainer.max_epochs is {trainer.max_epochs}" + (
                f", --trainer.max_steps {trainer.max_steps}" if trainer.max_steps > 0 else ""
            )
            raise UsageError(
                f"{trainer.ckpt_path}: nothing to train: it has done {trainer.current_epoch} epoch(s) "
                f"({trainer.global_step} steps) and {limit}; give a larger one to go on"
            )
        raise DatasetError(
            _data_name(trainer),
            "no training step ran: the training data gave no batch "
            "(every training file or shard unreadable or empty)",
        )


def _data_name(trainer) -> str:
    """How a message names the training data: the data module's shards, manifest or root."""
    hp = getattr(getattr(trainer, "datamodule", None), "hparams", {}) or {}
    for key in ("shards", "manifest", "root"):
        value = hp.get(key)
        if value:
            return ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    return "training data"


class StageFiles(pl.Callback):
    """``fit`` logs to ``metrics.csv``; a validation or test outside fit to ``validate_metrics.csv`` /
    ``test_metrics.csv`` (its rows carry epoch 0: they would corrupt fit's learning curves)."""

    @staticmethod
    def _use(trainer, file: str) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, RunCSVLogger):
                logger.use(file)

    def on_fit_start(self, trainer, pl_module) -> None:
        self._use(trainer, FIT_METRICS)

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:
            self._use(trainer, "validate_metrics.csv")

    def on_test_start(self, trainer, pl_module) -> None:
        self._use(trainer, "test_metrics.csv")


def run_callbacks(trainer_cfg: dict, given: list) -> list[pl.Callback]:
    """The callbacks every sed trainer gets besides the task's (:meth:`configure_callbacks`)."""
    out: list[pl.Callback] = [TrainingRan(), StageFiles()]
    if (
        trainer_cfg.get("enable_progress_bar") is not False
        and not sys.stderr.isatty()
        and not any(isinstance(c, ProgressBar) for c in given)
    ):
        out.append(
            EpochLines()
        )  # a log, not a terminal: a line per epoch instead of a carriage-return stream
    if trainer_cfg.get("enable_model_summary") is not False and not any(
        isinstance(c, ModelSummary) for c in given
    ):
        out.append(Summary())
    return out


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing ``metrics.csv``; a run directory keeps one history
    across fit and resumed fit (and one per evaluation file), so this one appends (and keeps the existing
    columns)."""

    def __init__(self, log_dir: str, file: str = FIT_METRICS):
        self.NAME_METRICS_FILE = file
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        import csv
        import os

        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as f:
                self.metrics_keys = list(next(csv.reader(f), []))


class RunCSVLogger(CSVLogger):
    """A CSVLogger writing in the run directory itself, appending across sessions: ``metrics.csv``, or
    the file :class:`StageFiles` switches it to."""

    def __init__(self, root: str):
        super().__init__(root, name="", version="")
        self.file = FIT_METRICS

    def use(self, file: str) -> None:
        """Log to ``file`` in the run directory from now on (what was logged before is written first)."""
        if file != self.file:
            if self._experiment is not None:
                self.save()
                self._experiment = None
            self.file = file

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir, file=self.file)
        return self._experiment


class SedLightningCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.label_names", "model.init_args.labels", apply_on="instantiate")
        parser.link_arguments("data.is_multi_label", "model.init_args.multi_label", apply_on="instantiate")

    def parse_arguments(self, parser, args) -> None:
        with config_errors():
            super().parse_arguments(parser, args)

    def instantiate_classes(self) -> None:
        with config_errors():
            super().instantiate_classes()

    def instantiate_trainer(self, **kwargs) -> pl.Trainer:
        cfg = self._get(self.config_init, "trainer", default={}) or {}
        root = cfg.get("default_root_dir") or DEFAULT_ROOT
        if cfg.get("logger") in (None, True):
            # both loggers write into the run directory itself (no name/version sub-folders)
            kwargs["logger"] = [RunCSVLogger(root), TensorBoardLogger(root, name="", version="")]
        kwargs.setdefault("default_root_dir", root)
        if not cfg.get("plugins"):  # checkpoints written atomically (a kill never leaves a partial one)
            kwargs["plugins"] = [AtomicCheckpointIO()]
        given = cfg.get("callbacks") or []
        given = list(given) if isinstance(given, list) else [given]
        kwargs["callbacks"] = given + run_callbacks(cfg, given)
        return super().instantiate_trainer(**kwargs)


def make_cli(argv: Sequence[str], run: bool = True) -> SedLightningCLI:
    """Build (and with ``run`` execute) the LightningCLI for ``argv`` (``fit --config X ...``)."""
    quiet_lightning()
    return SedLightningCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        trainer_defaults={"default_root_dir": DEFAULT_ROOT, "log_every_n_steps": 5},
        save_config_kwargs={"overwrite": True},
        args=list(argv),
        parser_kwargs={"prog": "sedkit", "exit_on_error": False},  # errors are one line (config_errors)
        run=run,
        auto_configure_optimizers=False,
    )


def run_lightning(argv: Sequence[str]) -> int:
    """Run ``argv``; returns the inputs that failed (predict from shards: bad members, keys, counts)."""
    from sed.tasks.callbacks import PredictionWriter

    cli = make_cli(argv)
    trainer = getattr(cli, "trainer", None)
    return sum(cb.failed for cb in getattr(trainer, "callbacks", []) if isinstance(cb, PredictionWriter))


# ------------------------------------------------------------------------------- a data module alone
class _DataCLI(SedLightningCLI):
    """fit's parser (sections, links, defaults, ``--data.init_args.x=y`` overrides), building only the data
    module: a config's model is optional and parsed, not built; its trainer is parsed, never built."""

    def add_core_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(self.trainer_class, "trainer")
        parser.add_lightning_class_args(self._model_class, "model", subclass_mode=True, required=False)
        parser.add_lightning_class_args(self._datamodule_class, "data", subclass_mode=True)

    def instantiate_classes(self) -> None:
        config = self.config.clone()
        config.model = None
        with config_errors():
            self.datamodule = self.parser.instantiate(config).data


def build_datamodule(config_args: Sequence[str]) -> pl.LightningDataModule:
    """The data module of LightningCLI arguments (``--config FILE``, ``--data.init_args.x=y``...) read as fit
    reads them (seeded as fit seeds); an error in them is one :class:`~sed.errors.UsageError` line."""
    quiet_lightning()
    return _DataCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        args=list(config_args),
        run=False,
        auto_configure_optimizers=False,
        parser_kwargs={"prog": "sedkit", "exit_on_error": False},
    ).datamodule


#: the data module a YAML of bare init args configures
DEFAULT_DATAMODULE = "sed.data.modules.audio.AudioDataModule"


def datamodule_of(config: str | os.PathLike, overrides: Sequence[str] = ()) -> pl.LightningDataModule:
    """:func:`build_datamodule` of ``--config CONFIG`` and ``overrides`` (``--data.init_args.x=y``); a YAML
    that is not a LightningCLI config but the init args of :class:`~sed.data.modules.audio.AudioDataModule` is
    read as
    those (``--data=AudioDataModule --data=CONFIG``). A config neither reads as is the first one's error."""
    try:
        open(config, "rb").close()
    except OSError as e:
        raise UsageError(f"{config}: {e.strerror}") from None
    try:
        return build_datamodule(["--config", str(config), *overrides])
    except UsageError as first:
        try:
            return build_datamodule([f"--data={DEFAULT_DATAMODULE}", f"--data={config}", *overrides])
        except UsageError:
            raise first from None
