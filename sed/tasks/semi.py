"""Semi-supervised clip classification: confidence-thresholded pseudo-labels, or a mean teacher.

:class:`ClassificationTask` with ``semi`` set trains on ``{"labeled": batch, "unlabeled": batch}``
(:class:`~sed.data.datamodule.AudioDataModule` with ``unlabeled`` or ``labeled_fraction``). The loss
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

__all__ = ["SEMI_MODES", "MeanTeacher", "consistency_loss", "pseudo_label_loss", "rampup"]

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


def pseudo_label_loss(clean: torch.Tensor, augmented: torch.Tensor, threshold: float, multi_label: bool,
                      labels: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
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

    def accuracy_stats(self, logits: torch.Tensor, labels: torch.Tensor, multi_label: bool) -> dict[str, torch.Tensor]:
        known = _known(labels, multi_label)
        if multi_label:
            pred = (logits >= 0).float()
            return {"correct": ((pred == labels.float()) & known[:, None]).sum().float(),
                    "counted": (known[:, None].expand_as(pred)).sum().float()}
        return {"correct": ((logits.argmax(-1) == labels) & known).sum().float(), "counted": known.sum().float()}
