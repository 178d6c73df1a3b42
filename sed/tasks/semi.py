"""Semi-supervised clip classification: confidence-thresholded pseudo-labels, or a mean teacher.

:class:`SemiSupervisedTask` (``semi``: the mode) trains on ``{"labeled": batch, "unlabeled": batch}``
(:class:`~sed.data.modules.audio.AudioDataModule` with ``unlabeled`` or ``labeled_fraction``). The loss
is the supervised loss of the labelled batch plus ``semi_weight * ramp(step)`` times an unlabelled
term; ``ramp`` is the sigmoid-shaped ramp-up of Laine & Aila / Tarvainen & Valpola,
``exp(-5 (1 - t)^2)`` with ``t = min(1, step / semi_rampup)`` (``semi_rampup`` optimiser steps; 0: no ramp).

- ``pseudo_label`` (Lee 2013, with FixMatch's confidence threshold): the model's own prediction on
  the clean unlabelled clip (no augmentation, no gradient) is the target of its prediction on the
  augmented clip (the task's SpecAugment), kept where the confidence reaches ``pseudo_threshold``
  (single-label: the top probability; multi-label: each class whose probability is >= the threshold
  or <= 1 - threshold).
- ``mean_teacher`` (Tarvainen & Valpola 2017): a copy of the model whose weights are the exponential
  moving average of the student's (decay ``min(ema_decay, 1 - 1 / (step + 1))``), run on the same clips
  under another augmentation draw; the consistency loss is the mean squared difference of the two
  models' probabilities (softmax, or sigmoid for multi-label) on the unlabelled and labelled clips.

Logged per epoch: ``semi_used`` (the share of unlabelled clips, or class decisions, that entered the
loss), ``pseudo_acc`` (how often the pseudo-labels -- the teacher's predictions for the mean teacher --
are right on the unlabelled clips whose labels are secretly known; absent when none are) and
``semi_weight``. Validation, test and the checkpoint are the student's.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from sed.tasks.classification import ClassificationTask

__all__ = [
    "SEMI_MODES",
    "MeanTeacher",
    "SemiSupervisedTask",
    "consistency_loss",
    "pseudo_label_loss",
    "rampup",
]

SEMI_MODES = ("pseudo_label", "mean_teacher")


def rampup(step: int, length: int) -> float:
    """``exp(-5 (1 - t)^2)``, ``t = min(1, step / length)``; 1 when ``length`` is 0."""
    if length <= 0:
        return 1.0
    t = min(1.0, max(0.0, step / length))
    return math.exp(-5.0 * (1.0 - t) ** 2)


def _known(labels: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """Which unlabelled clips carry a secretly known label (label -1 / all -1: unknown)."""
    return (labels >= 0).all(-1) if multi_label else labels >= 0


def pseudo_label_loss(
    clean: torch.Tensor,
    augmented: torch.Tensor,
    threshold: float,
    multi_label: bool,
    labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(loss, stats) of pseudo-labels from ``clean`` logits (detached) as targets of ``augmented`` logits.
    ``stats``: ``used`` (share of clips or class decisions kept) and, where ``labels`` are known,
    ``correct``/``counted`` of the kept pseudo-labels."""
    clean = clean.detach().float()
    augmented = augmented.float()
    if multi_label:
        p = torch.sigmoid(clean)
        mask = ((p >= threshold) | (p <= 1 - threshold)).float()
        target = (p >= 0.5).float()
        per = F.binary_cross_entropy_with_logits(augmented, target, reduction="none")
        loss = (per * mask).sum() / mask.numel()
    else:
        conf, target = torch.softmax(clean, -1).max(-1)
        mask = (conf >= threshold).float()
        loss = (F.cross_entropy(augmented, target, reduction="none") * mask).sum() / mask.numel()
    stats = {"used": mask.mean()}
    if labels is not None:
        known = _known(labels, multi_label)
        if multi_label:
            keep = mask.bool() & known[:, None]
            stats["correct"] = ((target == labels.float()) & keep).sum().float()
        else:
            keep = mask.bool() & known
            stats["correct"] = ((target == labels) & keep).sum().float()
        stats["counted"] = keep.sum().float()
    return loss, stats


def consistency_loss(student: torch.Tensor, teacher: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """Mean squared difference of the probabilities (teacher detached)."""
    act = torch.sigmoid if multi_label else (lambda z: torch.softmax(z, -1))
    return F.mse_loss(act(student.float()), act(teacher.detach().float()))


class MeanTeacher(nn.Module):
    """The exponential moving average of a model (a frozen copy, always in eval mode)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = copy.deepcopy(model)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.model.eval()

    def train(self, mode: bool = True):  # noqa: ARG002 - the teacher never trains
        return super().train(False)

    @torch.no_grad()
    def update(self, student: nn.Module, decay: float) -> None:
        for t, s in zip(self.model.parameters(), student.parameters()):
            t.lerp_(s.detach().to(t.dtype), 1.0 - decay)
        for t, s in zip(self.model.buffers(), student.buffers()):
            t.copy_(s)

    def accuracy_stats(
        self, logits: torch.Tensor, labels: torch.Tensor, multi_label: bool
    ) -> dict[str, torch.Tensor]:
        known = _known(labels, multi_label)
        if multi_label:
            pred = (logits >= 0).float()
            return {
                "correct": ((pred == labels.float()) & known[:, None]).sum().float(),
                "counted": (known[:, None].expand_as(pred)).sum().float(),
            }
        return {
            "correct": ((logits.argmax(-1) == labels) & known).sum().float(),
            "counted": known.sum().float(),
        }


class SemiSupervisedTask(ClassificationTask):
    """Supervised classification plus an unlabelled loss (see the module docstring).

    Args (besides :class:`~sed.tasks.classification.ClassificationTask`'s):
        semi: ``pseudo_label`` or ``mean_teacher``.
        semi_weight, semi_rampup: the weight of the unlabelled term and its ramp-up (optimiser steps).
        pseudo_threshold: the confidence a pseudo-label needs (``pseudo_label``).
        ema_decay: the teacher's moving-average decay (``mean_teacher``).
    """

    def __init__(
        self,
        semi: str = "pseudo_label",
        semi_weight: float = 1.0,
        semi_rampup: int = 0,
        pseudo_threshold: float = 0.95,
        ema_decay: float = 0.999,
        **kwargs,
    ):
        if semi not in SEMI_MODES:
            raise ValueError(f"semi must be one of {', '.join(SEMI_MODES)}, got {semi!r}")
        if not 0.0 < pseudo_threshold <= 1.0 or not 0.0 <= ema_decay < 1.0:
            raise ValueError("pseudo_threshold must be in (0, 1] and ema_decay in [0, 1)")
        super().__init__(**kwargs)
        self.teacher = MeanTeacher(self.model) if semi == "mean_teacher" else None

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if "labeled" not in batch or batch.get("unlabeled") is None:
            raise ValueError(
                "semi-supervised training needs unlabelled data: set data.init_args.unlabeled "
                "or data.init_args.labeled_fraction"
            )
        labeled, unlabeled = batch["labeled"], batch["unlabeled"]
        loss, logits, targets = self.supervised_loss(labeled)
        loss = loss + self._semi_loss(labeled, logits, unlabeled)
        self.log_train(loss, logits, targets)
        return loss

    def _semi_loss(self, batch: dict, logits: torch.Tensor, unlabeled: dict) -> torch.Tensor:
        h = self.hparams
        uw, ul, labels = unlabeled["wave"], unlabeled.get("lengths"), unlabeled["label"]
        weight = h.semi_weight * rampup(self.global_step, h.semi_rampup)
        if h.semi == "pseudo_label":
            feats = self.model.features(uw, ul)  # once for the clean and the augmented view
            with torch.no_grad():
                clean = self._from_features(feats, False, self.model)
            term, stats = pseudo_label_loss(
                clean, self._from_features(feats, True, self.model), h.pseudo_threshold, h.multi_label, labels
            )
        else:
            teacher = self.teacher.model
            with torch.no_grad():
                t_u = self._logits(uw, ul, augment=True, model=teacher)
                t_l = self._logits(batch["wave"], batch.get("lengths"), augment=True, model=teacher)
            s_u = self._logits(uw, ul, augment=True)
            term = consistency_loss(s_u, t_u, h.multi_label) + consistency_loss(logits, t_l, h.multi_label)
            stats = {
                "used": torch.ones((), device=uw.device),
                **self.teacher.accuracy_stats(t_u, labels, h.multi_label),
            }
        n = uw.shape[0]
        self.log("semi_used", stats["used"], on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        self.log("semi_weight", weight, on_step=False, on_epoch=True, batch_size=n)
        if stats.get("counted", 0) > 0:
            self.log(
                "pseudo_acc",
                stats["correct"] / stats["counted"],
                on_step=False,
                on_epoch=True,
                batch_size=int(stats["counted"]),
                sync_dist=True,
            )
        return weight * term

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.teacher is not None:
            self.teacher.update(self.model, min(self.hparams.ema_decay, 1.0 - 1.0 / (self.global_step + 1)))
