"""What a training run prints, in one place: Lightning's noise filtered, progress kept.

:func:`quiet_lightning` sets the warning filters and logging filters once (the LightningCLI ``args``
warning, Lightning's tips, deprecation warnings of Lightning's own code, notes about its internals);
:class:`EpochLines` is the progress of a run whose stderr is not a terminal (a log file, CI, a pipe):
one line per epoch with the epoch's metrics, where Lightning's bar would write a carriage-return
stream; :class:`Summary` is Lightning's model summary without the FLOPs column and total, which are
0 unless the model declares an example input.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings

from pytorch_lightning.callbacks import ModelSummary, ProgressBar
from pytorch_lightning.utilities.model_summary.model_summary import _format_summary_table

__all__ = ["EpochLines", "Summary", "quiet_lightning"]

#: log messages of Lightning that say nothing about the run (prefixes)
NOISE = (
    "💡 Tip",
    "The following callbacks returned in `LightningModule.configure_callbacks` will override",  # sed's design
    "Loading `train_dataloader` to estimate number of stepping batches",
    "Trainer already configured with model summary callbacks",  # sed's Summary replaces Lightning's
)
#: warnings of Lightning that say nothing about the run (message regexes)
NOISY_WARNINGS = (
    r"LightningCLI's args parameter is intended",  # sedkit passes its argv on purpose
    r"Your `IterableDataset` has `__len__` defined",  # shards deal samples to ranks and workers themselves
    # a mean teacher and frozen embedding models (the CRNN's BEATs) stay in eval mode by design
    r"Found \d+ module\(s\) in eval mode at the start of training",
)
LIGHTNING_MODULES = r"(pytorch_lightning|lightning_fabric|lightning_utilities|torchmetrics)(\.|$)"


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(NOISE)


_FILTER = _DropNoise()


def quiet_lightning() -> None:
    """Filter Lightning's noise (idempotent; called before every LightningCLI)."""
    for message in NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    for category in (DeprecationWarning, FutureWarning):  # Lightning's calls of deprecated torch APIs
        warnings.filterwarnings("ignore", category=category, module=LIGHTNING_MODULES)
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def _value(v) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError, RuntimeError):  # a tensor with several values
        return None


class EpochLines(ProgressBar):
    """One line per training epoch on stderr:
    ``epoch 3/8  train_loss 0.412  val_acc 0.917  val_loss 0.38  (12 s)``."""

    def __init__(self):
        super().__init__()
        self._enabled = True
        self._start = 0.0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.monotonic()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not self._enabled or not trainer.is_global_zero or trainer.sanity_checking:
            return
        metrics = {}
        for key, value in trainer.callback_metrics.items():
            if key.endswith("_step") or (x := _value(value)) is None:
                continue
            metrics[key.removesuffix("_epoch")] = x
        total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        parts = [f"epoch {trainer.current_epoch + 1}/{total}"]
        parts += [
            f"{k} {v:.4g}"
            for k, v in sorted(metrics.items(), key=lambda kv: (not kv[0].startswith("train"), kv[0]))
        ]
        parts.append(f"({time.monotonic() - self._start:.0f} s)")
        print("  ".join(parts), file=sys.stderr, flush=True)


class Summary(ModelSummary):
    """Lightning's model summary; the FLOPs column and total only when counted (else they read 0)."""

    @staticmethod
    def summarize(
        summary_data,
        total_parameters,
        trainable_parameters,
        model_size,
        total_training_modes,
        total_flops,
        **summarize_kwargs,
    ) -> None:
        if not total_flops:
            summary_data = [column for column in summary_data if column[0] != "FLOPs"]
        table = _format_summary_table(
            total_parameters,
            trainable_parameters,
            model_size,
            total_training_modes,
            total_flops,
            *summary_data,
        )
        lines = [
            line for line in table.splitlines() if total_flops or not line.rstrip().endswith("Total Flops")
        ]
        logging.getLogger("pytorch_lightning.callbacks.model_summary").info("\n" + "\n".join(lines))
