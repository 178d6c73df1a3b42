"""ClassificationTask: a registry model + augmentation + loss + metrics, as a LightningModule.

It holds no signal processing and no model internals: the model computes its own features
(``model.features``), the task may mask them (SpecAugment) and hands them back
(``model.forward_from_features``). Waveform mixup happens before the front end.

``transfer: probe`` fits a probe head on cached embeddings (:mod:`sed.tasks.probe`); ``semi`` adds
an unlabelled loss (:mod:`sed.tasks.semi`).
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn

from sed.tasks.optim import build_optimizer, build_scheduler
from sed.tasks.probe import PROBES, EmbeddingCache, fit_probe_head
from sed.tasks.semi import SEMI_MODES, MeanTeacher, consistency_loss, pseudo_label_loss, rampup
from sed.tasks.transfer import apply_transfer, backbone_modules


class ClassificationTask(pl.LightningModule):
    """Single-label (cross-entropy) or multi-label (BCE) audio classification.

    Args:
        model_name, model_kwargs, pretrained: the model, from ``sed.models.create_model``.
        num_classes, labels, multi_label: linked from the data module by ``sedkit fit``.
        label_smoothing: cross-entropy label smoothing (single-label).
        class_weights: None, a list, or ``"inverse_frequency"`` (weights proportional to
            1 / class count, normalised to sum 1, from the training data).
        optimizer, lr, weight_decay, betas: Adam / AdamW / SGD.
        scheduler: ``none``, ``multistep`` (AST: from ``lr_start`` every ``lr_step`` epochs by
            ``lr_gamma``) or ``cosine`` (to ``lr * min_lr_ratio``); ``warmup_steps`` as in AST.
        transfer, finetune_blocks: ``all``, ``head``, ``frozen``, ``last_n`` (see sed.tasks.transfer) or
            ``probe`` (cached embeddings + a fitted head: ``probe`` is ``logistic`` or ``linear``,
            ``probe_l2`` its L2 weight; see sed.tasks.probe).
        semi: None, ``pseudo_label`` or ``mean_teacher`` with ``semi_weight``, ``semi_rampup`` (steps),
            ``pseudo_threshold``, ``ema_decay`` (see sed.tasks.semi); needs unlabelled data.
        freqm, timem: SpecAugment mask widths on the features; masks fill with the front end's
            ``mask_value`` (AST masks to zero before normalisation).
        mixup, mixup_alpha: probability of waveform mixup per sample, lambda ~ Beta(alpha, alpha).
        monitor: metric for best checkpoints (``val_acc``, ``val_f1``, ``val_map`` or ``val_loss``); save_top_k.
    """

    def __init__(
        self,
        model_name: str = "cnn_small",
        num_classes: int = 2,
        labels: list[str] | None = None,
        multi_label: bool = False,
        pretrained: str | None = None,
        model_kwargs: dict[str, Any] | None = None,
        label_smoothing: float = 0.0,
        class_weights: list[float] | str | None = None,
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
        transfer: str = "all",
        finetune_blocks: int = 0,
        freqm: int = 0,
        timem: int = 0,
        mixup: float = 0.0,
        mixup_alpha: float = 10.0,
        monitor: str | None = None,
        save_top_k: int = 1,
        probe: str = "logistic",
        probe_l2: float = 1e-3,
        semi: str | None = None,
        semi_weight: float = 1.0,
        semi_rampup: int = 0,
        pseudo_threshold: float = 0.95,
        ema_decay: float = 0.999,
    ):
        super().__init__()
        self.save_hyperparameters()
        from sed.models import create_model

        kwargs = dict(model_kwargs or {})
        if labels:
            kwargs["labels"] = list(labels)
        self.model = create_model(model_name, num_classes=num_classes, pretrained=pretrained, **kwargs)
        self.model.multi_label = bool(multi_label)
        self.labels = list(labels) if labels else [str(i) for i in range(num_classes)]
        self.trainable = apply_transfer(self.model, "head" if transfer == "probe" else transfer, finetune_blocks)
        self.probe_cache = None
        if transfer == "probe":
            if probe not in PROBES:
                raise ValueError(f"probe must be one of {', '.join(PROBES)}, got {probe!r}")
            if freqm or timem or mixup or semi:
                raise ValueError("transfer 'probe' embeds each clip once: it takes no freqm/timem/mixup/semi")
            self.probe_cache = EmbeddingCache()
            self.automatic_optimization = False  # no optimiser steps: the head is fitted, not trained
        if semi is not None and semi not in SEMI_MODES:
            raise ValueError(f"semi must be one of {', '.join(SEMI_MODES)} or null, got {semi!r}")
        if not 0.0 < pseudo_threshold <= 1.0 or not 0.0 <= ema_decay < 1.0:
            raise ValueError("pseudo_threshold must be in (0, 1] and ema_decay in [0, 1)")
        self.teacher = MeanTeacher(self.model) if semi == "mean_teacher" else None
        self.specaugment = None
        if freqm or timem:
            from sed.augment.specaugment import SpecAugment

            mask_value = float(getattr(getattr(self.model, "frontend", None), "mask_value", 0.0))
            self.specaugment = SpecAugment(freqm=freqm, timem=timem, mask_value=mask_value)
        self.register_buffer("class_weight", torch.ones(num_classes), persistent=False)
        self._weighted = class_weights is not None
        if isinstance(class_weights, list | tuple):
            if len(class_weights) != num_classes:
                raise ValueError(f"class_weights has {len(class_weights)} entries for {num_classes} classes")
            self.class_weight = torch.tensor(class_weights, dtype=torch.float32)
        self.metrics = nn.ModuleDict({stage: self._make_metrics() for stage in ("val", "test")})
        self.train_acc = None if multi_label else torchmetrics.classification.MulticlassAccuracy(num_classes, average="micro")

    # ----------------------------------------------------------------------------- metrics
    def _make_metrics(self) -> nn.ModuleDict:
        c = self.hparams.num_classes
        tm = torchmetrics.classification
        if self.hparams.multi_label:
            return nn.ModuleDict({
                "map": tm.MultilabelAveragePrecision(c, average="macro"),
                "f1": tm.MultilabelF1Score(c, average="macro"),
                "recall": tm.MultilabelRecall(c, average=None),
            })
        return nn.ModuleDict({
            "acc": tm.MulticlassAccuracy(c, average="micro"),
            "f1": tm.MulticlassF1Score(c, average="macro"),
            "recall": tm.MulticlassRecall(c, average=None),
            "confusion": tm.MulticlassConfusionMatrix(c),
        })

    @property
    def monitor(self) -> tuple[str, str]:
        name = self.hparams.monitor or ("val_map" if self.hparams.multi_label else "val_acc")
        return name, "min" if name.endswith("loss") else "max"

    # ----------------------------------------------------------------------------- setup
    def setup(self, stage: str) -> None:
        if self.hparams.class_weights == "inverse_frequency":
            dm = getattr(self.trainer, "datamodule", None)
            if dm is None or not hasattr(dm, "class_counts"):
                raise ValueError("class_weights='inverse_frequency' needs a data module with class_counts()")
            counts = torch.as_tensor(dm.class_counts(), dtype=torch.float32).clamp_min(1)
            w = 1.0 / counts
            self.class_weight = (w / w.sum()).to(self.device)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.hparams.transfer in ("frozen", "probe"):
            for m in backbone_modules(self.model):
                m.eval()
        return self

    # ----------------------------------------------------------------------------- forward
    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(wave, lengths=lengths)

    def _logits(self, wave: torch.Tensor, lengths: torch.Tensor | None, augment: bool,
                model: nn.Module | None = None) -> torch.Tensor:
        model = self.model if model is None else model
        return self._from_features(model.features(wave, lengths), augment, model)

    def _from_features(self, feats: torch.Tensor, augment: bool, model: nn.Module) -> torch.Tensor:
        if augment and self.specaugment is not None:
            feats = self.specaugment(feats)
        if self.hparams.transfer in ("frozen", "probe"):
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
        return F.cross_entropy(logits, targets, weight=weight, label_smoothing=self.hparams.label_smoothing)

    # ----------------------------------------------------------------------------- steps
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor | None:
        unlabeled = None
        if "labeled" in batch:  # semi-supervised data: {"labeled": batch, "unlabeled": batch}
            batch, unlabeled = batch["labeled"], batch.get("unlabeled")
        if self.probe_cache is not None:
            y = batch["label"] if self.hparams.multi_label else batch["label"].long()
            new = self.probe_cache.add_batch(self.model.embed, batch["wave"], batch.get("lengths"), y)
            self.log("probe_embedded", float(new), on_step=False, on_epoch=True, reduce_fx="sum")
            if self._trainer is not None:  # changes nothing (no gradients); counts the step, so checkpoints are written
                self.optimizers().step()
            return None  # the head is fitted on the cache before validation (sed.tasks.probe)
        wave, lengths, targets = batch["wave"], batch.get("lengths"), self._targets(batch["label"])
        if self.hparams.mixup > 0:
            from sed.augment.mixup import mixup

            mixed = mixup(wave, targets, alpha=self.hparams.mixup_alpha, prob=self.hparams.mixup, lengths=lengths)
            wave, targets, lengths = mixed.wave, mixed.targets, mixed.lengths
        logits = self._logits(wave, lengths, augment=True)
        loss = self.loss_fn(logits, targets)
        if self.hparams.semi is not None:
            if unlabeled is None:
                raise ValueError("semi-supervised training needs unlabelled data: set data.init_args.unlabeled "
                                 "or data.init_args.labeled_fraction")
            loss = loss + self._semi_loss(batch, logits, unlabeled)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=wave.shape[0],
                 sync_dist=True)
        if self.train_acc is not None:
            self.train_acc(logits.argmax(-1), targets.argmax(-1))
            self.log("train_acc", self.train_acc, on_step=False, on_epoch=True, batch_size=wave.shape[0])
        return loss

    # ----------------------------------------------------------------------------- semi-supervised
    def _semi_loss(self, batch: dict, logits: torch.Tensor, unlabeled: dict) -> torch.Tensor:
        h = self.hparams
        uw, ul, labels = unlabeled["wave"], unlabeled.get("lengths"), unlabeled["label"]
        weight = h.semi_weight * rampup(self.global_step, h.semi_rampup)
        if h.semi == "pseudo_label":
            feats = self.model.features(uw, ul)  # once for the clean and the augmented view
            with torch.no_grad():
                clean = self._from_features(feats, False, self.model)
            term, stats = pseudo_label_loss(clean, self._from_features(feats, True, self.model), h.pseudo_threshold,
                                            h.multi_label, labels)
        else:
            teacher = self.teacher.model
            with torch.no_grad():
                t_u = self._logits(uw, ul, augment=True, model=teacher)
                t_l = self._logits(batch["wave"], batch.get("lengths"), augment=True, model=teacher)
            s_u = self._logits(uw, ul, augment=True)
            term = consistency_loss(s_u, t_u, h.multi_label) + consistency_loss(logits, t_l, h.multi_label)
            stats = {"used": torch.ones((), device=uw.device), **self.teacher.accuracy_stats(t_u, labels, h.multi_label)}
        n = uw.shape[0]
        self.log("semi_used", stats["used"], on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        self.log("semi_weight", weight, on_step=False, on_epoch=True, batch_size=n)
        if stats.get("counted", 0) > 0:
            self.log("pseudo_acc", stats["correct"] / stats["counted"], on_step=False, on_epoch=True,
                     batch_size=int(stats["counted"]), sync_dist=True)
        return weight * term

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.teacher is not None:
            self.teacher.update(self.model, min(self.hparams.ema_decay, 1.0 - 1.0 / (self.global_step + 1)))

    # ----------------------------------------------------------------------------- probe
    def _fit_probe(self) -> None:
        if self.probe_cache is None or not self.probe_cache.changed:
            return
        emb, targets = self.probe_cache.pooled()
        acc = fit_probe_head(self.model.head, emb, targets, self.hparams.probe, self.hparams.probe_l2,
                             bool(self.hparams.multi_label))
        self.probe_cache.fitted_size = len(self.probe_cache.rows)
        self.probe_train_acc, self.probe_clips = acc, int(emb.shape[0])

    def on_validation_epoch_start(self) -> None:
        if not self.trainer.sanity_checking:
            self._fit_probe()

    def on_train_end(self) -> None:
        self._fit_probe()

    def _eval_step(self, batch: dict, stage: str) -> None:
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

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _eval_epoch_end(self, stage: str) -> None:
        if stage == "val" and getattr(self, "probe_clips", 0):
            self.log("probe_train_acc", self.probe_train_acc)
            self.log("probe_clips", float(self.probe_clips))
        m = self.metrics[stage]
        for name, metric in m.items():
            value = metric.compute()
            if name == "recall":
                for label, r in zip(self.labels, value):
                    self.log(f"{stage}_recall/{label}", r, sync_dist=True)  # already global: averages equal values
            elif name == "confusion":
                log_dir = self.trainer.log_dir  # a collective under DDP: every rank must ask
                if self.trainer.is_global_zero and not self.trainer.sanity_checking and log_dir \
                        and self.trainer.logger is not None:  # no logger: no files (not into the cwd)
                    from sed.metrics.confusion import write_confusion_csv

                    write_confusion_csv(f"{log_dir}/confusion_{stage}.csv", value.cpu().numpy(), self.labels)
            else:
                self.log(f"{stage}_{name}", value, prog_bar=name in ("acc", "map"), sync_dist=True)
            metric.reset()

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        logits = self.model(batch["wave"], lengths=batch.get("lengths"))
        scores = torch.sigmoid(logits) if self.hparams.multi_label else torch.softmax(logits, -1)
        return {"path": batch.get("path"), "scores": scores.float().cpu(), "pad": batch.get("pad")}

    # ----------------------------------------------------------------------------- optimisation
    def configure_optimizers(self):
        h = self.hparams
        opt = build_optimizer(self.parameters(), h.optimizer, h.lr, h.weight_decay, h.betas)
        max_epochs = max(1, self.trainer.max_epochs or 1)
        steps = max(1, int(self.trainer.estimated_stepping_batches) // max_epochs)
        sched = build_scheduler(opt, h.scheduler, steps, max_epochs, warmup_steps=h.warmup_steps,
                                **({"start": h.lr_start, "step": h.lr_step, "gamma": h.lr_gamma} if h.scheduler == "multistep" else {}),
                                **({"min_lr_ratio": h.min_lr_ratio} if h.scheduler == "cosine" else {}))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ----------------------------------------------------------------------------- checkpoints
    def sed_description(self) -> dict:
        from sed.checkpoint import describe

        return describe(self.model, self.labels, multi_label=bool(self.hparams.multi_label), state_dict_prefix="model.")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["sed_meta"] = self.sed_description()

    def configure_callbacks(self):
        from sed.tasks.callbacks import default_callbacks

        name, mode = self.monitor
        return default_callbacks(monitor=name, mode=mode, save_top_k=self.hparams.save_top_k)
