"""The task base: what every training regime shares, whatever its data and loss.

:class:`Task` owns the model build (``sed.models.create_model``), the optimiser and scheduler
(:mod:`sed.tasks.optim`), the metric that picks the best checkpoint (``monitor``), the callbacks, the
self-description written into every checkpoint (``sed_meta``) and the validation/test dispatch
(``validation_step``/``test_step`` -> :meth:`Task.eval_step`, epoch ends -> :meth:`Task.eval_epoch_end`).

One subclass per regime, each taking only the arguments it honours (a regime's constructor lists them;
anything else is a configuration error naming the argument):

========================================================  ===========================================
:class:`~sed.tasks.classification.ClassificationTask`     supervised clip classification
:class:`~sed.tasks.probe.ProbeTask`                       a probe head fitted on cached embeddings
:class:`~sed.tasks.semi.SemiSupervisedTask`               supervised + pseudo-label / mean-teacher loss
:class:`~sed.tasks.patchmix.PatchMixTask`                 Patch-Mix (ICBHI)
:class:`~sed.tasks.distillation.DistillationTask`         knowledge distillation from teachers
:class:`~sed.tasks.seld.SELDTask`                         SELD (multi-ACCDOA)
:class:`~sed.tasks.detection.DetectionTask`               sound event detection (strong/weak/unlabelled)
========================================================  ===========================================
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch

from sed.tasks.optim import build_optimizer, build_scheduler

__all__ = ["Task"]


class Task(pl.LightningModule):
    """A registry model trained by a regime (the subclass): model, optimiser, monitor, callbacks, checkpoints.

    Args:
        model_name, model_kwargs, pretrained: the model, from ``sed.models.create_model``.
        num_classes, labels, multi_label: linked from the data module by ``sedkit fit``.
        optimizer, lr, weight_decay, betas: Adam / AdamW / SGD.
        scheduler: ``none``, ``multistep`` (AST: from ``lr_start`` every ``lr_step`` epochs by
            ``lr_gamma``) or ``cosine`` (to ``lr * min_lr_ratio``); ``warmup_steps`` as in AST.
        monitor: the metric that picks the best checkpoints (the regime's default when None); save_top_k.
    """

    #: the metric that picks the best checkpoint when ``monitor`` is not set (a regime may override it)
    default_monitor = "val_loss"

    def __init__(
        self,
        model_name: str = "cnn_small",
        num_classes: int = 2,
        labels: list[str] | None = None,
        multi_label: bool = False,
        pretrained: str | None = None,
        model_kwargs: dict[str, Any] | None = None,
        optimizer: str = "adam",
        lr: float = 1e-4,
        weight_decay: float = 5e-7,
        betas: tuple[float, float] = (0.95, 0.999),
        scheduler: str = "none",
        warmup_steps: int = 0,
        lr_start: int = 5,
        lr_step: int = 1,
        lr_gamma: float = 0.85,
        min_lr_ratio: float = 1e-3,
        monitor: str | None = None,
        save_top_k: int = 1,
    ):
        super().__init__()
        self.save_hyperparameters()  # the subclass's arguments too (Lightning collects every __init__ frame)
        from sed.models import create_model

        kwargs = dict(model_kwargs or {})
        if labels:
            kwargs["labels"] = list(labels)
        self.model = create_model(model_name, num_classes=num_classes, pretrained=pretrained, **kwargs)
        self.labels = list(labels) if labels else self.default_labels(num_classes)

    @staticmethod
    def default_labels(num_classes: int) -> list[str]:
        return [str(i) for i in range(num_classes)]

    # ----------------------------------------------------------------------------- best checkpoints
    def monitor_mode(self, name: str) -> str:
        """``min`` or ``max``: which way ``name`` gets better (losses go down)."""
        return "min" if name.endswith("loss") else "max"

    @property
    def monitor(self) -> tuple[str, str]:
        name = self.hparams.monitor or self.default_monitor
        return name, self.monitor_mode(name)

    def configure_callbacks(self):
        from sed.tasks.callbacks import default_callbacks

        name, mode = self.monitor
        return default_callbacks(monitor=name, mode=mode, save_top_k=self.hparams.save_top_k)

    # ----------------------------------------------------------------------------- optimisation
    def configure_optimizers(self):
        h = self.hparams
        opt = build_optimizer(self.parameters(), h.optimizer, h.lr, h.weight_decay, h.betas)
        max_epochs = max(1, self.trainer.max_epochs or 1)
        steps = max(1, int(self.trainer.estimated_stepping_batches) // max_epochs)
        extra = {}
        if h.scheduler == "multistep":
            extra = {"start": h.lr_start, "step": h.lr_step, "gamma": h.lr_gamma}
        elif h.scheduler == "cosine":
            extra = {"min_lr_ratio": h.min_lr_ratio}
        sched = build_scheduler(opt, h.scheduler, steps, max_epochs, warmup_steps=h.warmup_steps, **extra)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ----------------------------------------------------------------------------- validation and test
    def eval_step(self, batch: dict, stage: str) -> None:
        """Score one validation (``stage="val"``) or test batch."""
        raise NotImplementedError

    def eval_epoch_end(self, stage: str) -> None:
        """Log the epoch's metrics of ``stage``."""
        raise NotImplementedError

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.eval_step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self.eval_step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self.eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self.eval_epoch_end("test")

    # ----------------------------------------------------------------------------- checkpoints
    def sed_description(self) -> dict:
        """The model's self-description (``sed.checkpoint.describe``) written into every checkpoint."""
        from sed.checkpoint import describe

        return describe(
            self.model, self.labels, multi_label=bool(self.hparams.multi_label), state_dict_prefix="model."
        )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["sed_meta"] = self.sed_description()

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return self.model(*args, **kwargs)
