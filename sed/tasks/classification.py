"""Clip classification: :class:`ClipTask` (what every clip regime shares) and :class:`ClassificationTask`
(supervised training).

A task holds no signal processing and no model internals: the model computes its own features
(``model.features``), the task may mask them (SpecAugment) and hands them back
(``model.forward_from_features``). Waveform mixup happens before the front end. The other clip regimes
build on :class:`ClipTask` / :class:`ClassificationTask`: :class:`~sed.tasks.probe.ProbeTask`,
:class:`~sed.tasks.semi.SemiSupervisedTask`, :class:`~sed.tasks.patchmix.PatchMixTask` and
:class:`~sed.tasks.distillation.DistillationTask`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn

from sed.tasks.base import Task
from sed.tasks.transfer import MODES, apply_transfer, backbone_modules

__all__ = ["ClassificationTask", "ClipTask"]


class ClipTask(Task):
    """Single-label (cross-entropy) or multi-label (BCE) clip classification: targets, loss, validation
    and test metrics (accuracy, macro F1, per-class recall and the confusion matrix; mAP for multi-label
    data), predictions. Training is the subclass's. Takes :class:`~sed.tasks.base.Task`'s arguments."""

    #: True when the backbone is a fixed feature extractor (eval mode, no autograd)
    frozen_backbone = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.model.multi_label = bool(self.hparams.multi_label)
        num_classes = self.hparams.num_classes
        self.specaugment = None
        self.label_smoothing = 0.0
        self.register_buffer("class_weight", torch.ones(num_classes), persistent=False)
        self._weighted = False
        self.metrics = nn.ModuleDict({stage: self._make_metrics() for stage in ("val", "test")})
        self.train_acc = (
            None
            if self.hparams.multi_label
            else torchmetrics.classification.MulticlassAccuracy(num_classes, average="micro")
        )

    @property
    def default_monitor(self) -> str:
        return "val_map" if self.hparams.multi_label else "val_acc"

    # ----------------------------------------------------------------------------- metrics
    def _make_metrics(self) -> nn.ModuleDict:
        c = self.hparams.num_classes
        tm = torchmetrics.classification
        if self.hparams.multi_label:
            return nn.ModuleDict(
                {
                    "map": tm.MultilabelAveragePrecision(c, average="macro"),
                    "f1": tm.MultilabelF1Score(c, average="macro"),
                    "recall": tm.MultilabelRecall(c, average=None),
                }
            )
        return nn.ModuleDict(
            {
                "acc": tm.MulticlassAccuracy(c, average="micro"),
                "f1": tm.MulticlassF1Score(c, average="macro"),
                "recall": tm.MulticlassRecall(c, average=None),
                "confusion": tm.MulticlassConfusionMatrix(c),
            }
        )

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen_backbone:
            for m in backbone_modules(self.model):
                m.eval()
        return self

    # ----------------------------------------------------------------------------- forward
    def _logits(
        self, wave: torch.Tensor, lengths: torch.Tensor | None, augment: bool, model: nn.Module | None = None
    ) -> torch.Tensor:
        model = self.model if model is None else model
        return self._from_features(model.features(wave, lengths), augment, model)

    def _from_features(self, feats: torch.Tensor, augment: bool, model: nn.Module) -> torch.Tensor:
        if augment and self.specaugment is not None:
            feats = self.specaugment(feats)
        if self.frozen_backbone:
            with torch.no_grad():
                pooled = model.forward_fbank_pooled(feats)
            return model.head(pooled)
        return model.forward_from_features(feats)

    def _targets(self, label: torch.Tensor) -> torch.Tensor:
        """Float targets [B, C] (one-hot or multi-hot)."""
        if label.dim() == 2:
            return label.float()
        return F.one_hot(label.long(), self.hparams.num_classes).float()

    def loss_fn(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        weight = self.class_weight if self._weighted else None
        if self.hparams.multi_label:
            return F.binary_cross_entropy_with_logits(logits, targets, pos_weight=None, weight=weight)
        return F.cross_entropy(logits, targets, weight=weight, label_smoothing=self.label_smoothing)

    def log_train(self, loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Log the training loss and (single-label) accuracy of a batch; ``targets`` [B, C] or class ids."""
        n = logits.shape[0]
        self.log(
            "train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=n, sync_dist=True
        )
        if self.train_acc is not None:
            self.train_acc(logits.argmax(-1), targets.argmax(-1) if targets.dim() == 2 else targets.long())
            self.log("train_acc", self.train_acc, on_step=False, on_epoch=True, batch_size=n)

    # ----------------------------------------------------------------------------- validation and test
    def eval_step(self, batch: dict, stage: str) -> None:
        logits = self._logits(batch["wave"], batch.get("lengths"), augment=False)
        labels = batch["label"]
        if "pad" in batch:  # repeats that keep DDP ranks in step (streamed shards): not scored
            logits, labels = logits[~batch["pad"]], labels[~batch["pad"]]
        n = logits.shape[0]
        targets = self._targets(labels)
        loss = self.loss_fn(logits, targets) if n else logits.sum()  # every rank logs (the epoch-end sync)
        self.log(f"{stage}_loss", loss, on_epoch=True, prog_bar=True, batch_size=n, sync_dist=True)
        if n == 0:
            return
        m = self.metrics[stage]
        if self.hparams.multi_label:
            probs, y = torch.sigmoid(logits), targets.long()
            for metric in m.values():
                metric.update(probs, y)
        else:
            pred, y = logits.argmax(-1), labels.long()
            for metric in m.values():
                metric.update(pred, y)

    def eval_epoch_end(self, stage: str) -> None:
        m = self.metrics[stage]
        for name, metric in m.items():
            value = metric.compute()
            if name == "recall":
                for label, r in zip(self.labels, value):
                    self.log(
                        f"{stage}_recall/{label}", r, sync_dist=True
                    )  # already global: averages equal values
            elif name == "confusion":
                log_dir = self.trainer.log_dir  # a collective under DDP: every rank must ask
                if (
                    self.trainer.is_global_zero
                    and not self.trainer.sanity_checking
                    and log_dir
                    and self.trainer.logger is not None
                ):  # no logger: no files (not into the cwd)
                    from sed.metrics.confusion import write_confusion_csv

                    write_confusion_csv(
                        f"{log_dir}/confusion_{stage}.csv",
                        value.cpu().numpy(),
                        self.labels,
                        meta={
                            "split": stage,
                            "epoch": self.current_epoch,
                            "checkpoint": self.trainer.ckpt_path,
                        },
                    )
            else:
                self.log(f"{stage}_{name}", value, prog_bar=name in ("acc", "map"), sync_dist=True)
            metric.reset()

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        logits = self.model(batch["wave"], lengths=batch.get("lengths"))
        scores = torch.sigmoid(logits) if self.hparams.multi_label else torch.softmax(logits, -1)
        return {"path": batch.get("path"), "scores": scores.float().cpu(), "pad": batch.get("pad")}


class ClassificationTask(ClipTask):
    """Supervised clip classification.

    Args (besides :class:`~sed.tasks.base.Task`'s):
        label_smoothing: cross-entropy label smoothing (single-label).
        class_weights: None, a list, or ``"inverse_frequency"`` (weights proportional to
            1 / class count, normalised to sum 1, from the training data).
        transfer, finetune_blocks: ``all``, ``head``, ``frozen``, ``last_n`` (see :mod:`sed.tasks.transfer`).
            A probe fitted on cached embeddings is :class:`~sed.tasks.probe.ProbeTask`.
        freqm, timem: SpecAugment mask widths on the features; masks fill with the front end's
            ``mask_value`` (AST masks to zero before normalisation).
        mixup, mixup_alpha: probability of waveform mixup per sample, lambda ~ Beta(alpha, alpha).
    """

    def __init__(
        self,
        label_smoothing: float = 0.0,
        class_weights: list[float] | str | None = None,
        transfer: str = "all",
        finetune_blocks: int = 0,
        freqm: int = 0,
        timem: int = 0,
        mixup: float = 0.0,
        mixup_alpha: float = 10.0,
        **kwargs,
    ):
        if transfer == "probe":
            raise ValueError(
                "transfer: 'probe' is its own task now: class_path sed.tasks.ProbeTask "
                "(with probe and probe_l2)"
            )
        if transfer not in MODES:
            raise ValueError(f"transfer must be one of {', '.join(MODES)}, got {transfer!r}")
        if isinstance(class_weights, str) and class_weights != "inverse_frequency":
            raise ValueError(
                f"class_weights must be a list, 'inverse_frequency' or null, got {class_weights!r}"
            )
        super().__init__(**kwargs)
        num_classes = self.hparams.num_classes
        self.frozen_backbone = transfer == "frozen"
        self.trainable = apply_transfer(self.model, transfer, finetune_blocks)
        self.label_smoothing = float(label_smoothing)
        if freqm or timem:
            from sed.augment.specaugment import SpecAugment

            mask_value = float(getattr(getattr(self.model, "frontend", None), "mask_value", 0.0))
            self.specaugment = SpecAugment(freqm=freqm, timem=timem, mask_value=mask_value)
        self._weighted = class_weights is not None
        if isinstance(class_weights, list | tuple):
            if len(class_weights) != num_classes:
                raise ValueError(f"class_weights has {len(class_weights)} entries for {num_classes} classes")
            self.class_weight = torch.tensor(class_weights, dtype=torch.float32)

    def setup(self, stage: str) -> None:
        if self.hparams.class_weights == "inverse_frequency":
            dm = getattr(self.trainer, "datamodule", None)
            if dm is None or not hasattr(dm, "class_counts"):
                raise ValueError("class_weights='inverse_frequency' needs a data module with class_counts()")
            counts = torch.as_tensor(dm.class_counts(), dtype=torch.float32).clamp_min(1)
            w = 1.0 / counts
            self.class_weight = (w / w.sum()).to(self.device)

    def mixed(self, batch: dict) -> dict:
        """The batch with float ``targets`` [B, C], its waveforms mixed when ``mixup`` is on."""
        wave, lengths, targets = batch["wave"], batch.get("lengths"), self._targets(batch["label"])
        if self.hparams.mixup > 0:
            from sed.augment.mixup import mixup

            m = mixup(wave, targets, alpha=self.hparams.mixup_alpha, prob=self.hparams.mixup, lengths=lengths)
            wave, targets, lengths = m.wave, m.targets, m.lengths
        return {**batch, "wave": wave, "lengths": lengths, "targets": targets}

    def supervised_loss(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(loss, logits, targets)`` of one labelled batch (mixup and SpecAugment applied)."""
        batch = self.mixed(batch)
        logits = self._logits(batch["wave"], batch["lengths"], augment=True)
        return self.loss_fn(logits, batch["targets"]), logits, batch["targets"]

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if "labeled" in batch:  # data with unlabelled clips: supervised training uses the labelled part
            batch = batch["labeled"]
        loss, logits, targets = self.supervised_loss(batch)
        self.log_train(loss, logits, targets)
        return loss
