"""Knowledge distillation losses (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural
Network").

The teacher (Net-T, possibly an ensemble of separately trained models) is softened at a high temperature
``T``; the student (Net-S) learns from those soft targets and from the ground truth:

Single-label (softmax) -- :func:`distillation_loss`::

    p_t = softmax(teacher / T)          p_s = softmax(student / T)
    L   = alpha * T^2 * KL(p_t || p_s) + (1 - alpha) * CE(student, target)

``KL`` has PyTorch's ``batchmean`` semantics: summed over the classes, averaged over the samples. ``CE``
is the ordinary cross-entropy of the *unsoftened* student logits (T = 1) against class indices or soft
(probability) targets. The ``T^2`` factor keeps the soft term's gradient on the scale of the hard term's:
``d(T^2 KL)/d student = T * (p_s - p_t)`` per sample.

Multi-label (sigmoid) -- :func:`multilabel_distillation_loss`: every class is an independent Bernoulli::

    q_t = sigmoid(teacher / T)          q_s = sigmoid(student / T)
    L   = alpha * T^2 * mean KL(Bern(q_t) || Bern(q_s)) + (1 - alpha) * BCEWithLogits(student, target)

Both terms are means over every element (samples x classes), like ``BCEWithLogitsLoss``. We use the
Bernoulli KL rather than the BCE ``BCE(q_s, q_t)``: they differ by the teacher's entropy, a constant
with no gradient, so training is identical, but the KL is 0 when the student matches the teacher
(as in the single-label case). Gradient: ``d(T^2 KL)/d student = T * (q_s - q_t) / numel``.

Ensemble teachers: :func:`soften` averages the softened probabilities of several teachers (the mean of
``softmax(t_m / T)``, *not* the softmax of the mean logits). Pass its output to the losses as
``teacher_probs=`` instead of ``teacher_logits=``; probabilities passed that way must already be
softened at the same temperature ``T`` as the loss uses. Passing a list/tuple of teacher logit tensors
as ``teacher_logits`` does the same thing in one step.

The teacher is always detached: the losses never send gradient into the teacher.

Input shapes: classes on the last dimension, ``[..., C]`` (e.g. ``[N, C]`` clips or ``[N, T, C]`` frames).
Single-label targets are class indices ``[...]`` (integer) or probabilities ``[..., C]`` (float).
``reduction``: ``"mean"`` (default; per-sample mean for single-label, per-element for multi-label),
``"sum"``, or ``"none"`` (per sample ``[...]`` single-label, per element ``[..., C]`` multi-label).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "DistillationLoss",
    "DistillationTerms",
    "distillation_loss",
    "multilabel_distillation_loss",
    "soften",
]

_REDUCTIONS = ("mean", "sum", "none")


class DistillationTerms(NamedTuple):
    """The loss and its parts: ``total = alpha * kd + (1 - alpha) * ce``.

    ``kd`` is the soft term already multiplied by ``T^2`` (not by ``alpha``); ``ce`` the hard term.
    A part that was not computed (no teacher with ``alpha = 0``, no target with ``alpha = 1``) is None.
    """

    total: Tensor
    kd: Tensor | None
    ce: Tensor | None


def soften(
    teacher_logits: Tensor | Sequence[Tensor],
    temperature: float = 1.0,
    multi_label: bool = False,
    weights: Sequence[float] | None = None,
) -> Tensor:
    """Softened probabilities of one teacher, or the (weighted) mean of several teachers' (an ensemble
    teacher).

    ``softmax(t / T)`` over the last dimension (``sigmoid(t / T)`` element-wise if ``multi_label``) for each
    teacher, then averaged over the teachers (weights, if given, are normalised to sum 1). The result is
    detached and is what the losses take as ``teacher_probs=`` at the same temperature.
    """
    _check_temperature(temperature)
    tensors = [teacher_logits] if isinstance(teacher_logits, Tensor) else list(teacher_logits)
    if not tensors:
        raise ValueError("soften needs at least one teacher's logits")
    shape = tensors[0].shape
    for i, t in enumerate(tensors):
        if not isinstance(t, Tensor):
            raise ValueError(f"teacher {i}: expected a tensor of logits, got {type(t).__name__}")
        if t.shape != shape:
            raise ValueError(f"teacher {i}: logits of shape {tuple(t.shape)}, teacher 0 has {tuple(shape)}")
    if weights is None:
        w = [1.0 / len(tensors)] * len(tensors)
    else:
        w = [float(x) for x in weights]
        if len(w) != len(tensors):
            raise ValueError(f"{len(w)} weights for {len(tensors)} teachers")
        if any(not x >= 0 for x in w) or sum(w) <= 0:
            raise ValueError(f"teacher weights must be non-negative with a positive sum, got {w}")
        total = sum(w)
        w = [x / total for x in w]
    with torch.no_grad():
        probs = None
        for wi, t in zip(w, tensors):
            z = t.detach()
            z = (z if z.is_floating_point() else z.float()) / temperature
            p = torch.sigmoid(z) if multi_label else torch.softmax(z, dim=-1)
            probs = wi * p if probs is None else probs + wi * p
    return probs


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor | Sequence[Tensor] | None = None,
    target: Tensor | None = None,
    temperature: float = 4.0,
    alpha: float = 0.5,
    reduction: str = "mean",
    *,
    teacher_probs: Tensor | None = None,
    return_terms: bool = False,
) -> Tensor | DistillationTerms:
    """Hinton KD loss for single-label (softmax) classification; see the module docstring.

    Give the teacher as ``teacher_logits`` (a tensor, or a list of tensors for an ensemble teacher) or as
    ``teacher_probs`` (probabilities at temperature ``T``, e.g. from :func:`soften`), not both. The teacher
    may be omitted only when ``alpha == 0`` and the target only when ``alpha == 1``. ``alpha == 0`` returns
    exactly ``F.cross_entropy(student, target)``. With ``return_terms`` a :class:`DistillationTerms`.
    """
    _check_args(temperature, alpha, reduction)
    if student_logits.dim() < 1:
        raise ValueError("student_logits needs a class dimension (last)")
    n_cls = student_logits.shape[-1]
    lead = student_logits.shape[:-1]
    s2 = student_logits.reshape(-1, n_cls)
    p_t = _teacher_probs(student_logits, teacher_logits, teacher_probs, temperature, False, alpha)

    kd = None
    if p_t is not None:
        log_p_s = F.log_softmax(s2 / temperature, dim=-1)
        p_t2 = p_t.reshape(-1, n_cls).to(log_p_s.dtype)
        per = (torch.special.xlogy(p_t2, p_t2) - p_t2 * log_p_s).sum(dim=-1)  # KL(p_t || p_s) per sample
        kd = temperature**2 * _reduce(per, reduction).reshape(lead if reduction == "none" else ())

    ce = None
    if target is not None:
        if target.is_floating_point():
            if target.shape != student_logits.shape:
                raise ValueError(
                    f"soft target of shape {tuple(target.shape)} does not match logits "
                    f"{tuple(student_logits.shape)}"
                )
            tgt = target.reshape(-1, n_cls).to(s2.dtype)
        else:
            if target.shape != lead:
                raise ValueError(
                    f"class-index target of shape {tuple(target.shape)} does not match logits "
                    f"{tuple(student_logits.shape)} (expected {tuple(lead)})"
                )
            tgt = target.reshape(-1)
        ce = F.cross_entropy(s2, tgt, reduction=reduction)
        if reduction == "none":
            ce = ce.reshape(lead)
    elif alpha < 1:
        raise ValueError(f"a target is needed when alpha < 1 (alpha={alpha})")

    return _combine(kd, ce, alpha, return_terms)


def multilabel_distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor | Sequence[Tensor] | None = None,
    target: Tensor | None = None,
    temperature: float = 4.0,
    alpha: float = 0.5,
    reduction: str = "mean",
    *,
    teacher_probs: Tensor | None = None,
    return_terms: bool = False,
) -> Tensor | DistillationTerms:
    """KD loss for multi-label (sigmoid) classification: Bernoulli KL per class; see the module docstring.

    ``target`` is a multi-hot (or soft) float tensor of the logits' shape. ``teacher_probs`` are sigmoid
    probabilities at temperature ``T`` (e.g. ``soften(..., multi_label=True)``). ``alpha == 0`` returns
    exactly ``F.binary_cross_entropy_with_logits(student, target)``.
    """
    _check_args(temperature, alpha, reduction)
    q_t = _teacher_probs(student_logits, teacher_logits, teacher_probs, temperature, True, alpha)

    kd = None
    if q_t is not None:
        z = student_logits / temperature
        q = q_t.to(z.dtype)
        # KL(Bern(q) || Bern(sigmoid(z))) = BCE(z, q) - H(q)
        neg_entropy = torch.special.xlogy(q, q) + torch.special.xlogy(1 - q, 1 - q)
        per = F.binary_cross_entropy_with_logits(z, q, reduction="none") + neg_entropy
        kd = temperature**2 * _reduce(per, reduction)

    ce = None
    if target is not None:
        if target.shape != student_logits.shape:
            raise ValueError(
                f"multi-label target of shape {tuple(target.shape)} does not match logits "
                f"{tuple(student_logits.shape)}"
            )
        ce = F.binary_cross_entropy_with_logits(
            student_logits, target.to(student_logits.dtype), reduction=reduction
        )
    elif alpha < 1:
        raise ValueError(f"a target is needed when alpha < 1 (alpha={alpha})")

    return _combine(kd, ce, alpha, return_terms)


class DistillationLoss(nn.Module):
    """``nn.Module`` form of :func:`distillation_loss` (or :func:`multilabel_distillation_loss`).

    ``loss(student_logits, teacher_logits, target)`` or ``loss(student_logits, target=y, teacher_probs=p)``.
    """

    def __init__(
        self, temperature: float = 4.0, alpha: float = 0.5, multi_label: bool = False, reduction: str = "mean"
    ):
        super().__init__()
        _check_args(temperature, alpha, reduction)
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.multi_label = bool(multi_label)
        self.reduction = reduction

    def forward(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor | Sequence[Tensor] | None = None,
        target: Tensor | None = None,
        *,
        teacher_probs: Tensor | None = None,
        return_terms: bool = False,
    ) -> Tensor | DistillationTerms:
        fn = multilabel_distillation_loss if self.multi_label else distillation_loss
        return fn(
            student_logits,
            teacher_logits,
            target,
            temperature=self.temperature,
            alpha=self.alpha,
            reduction=self.reduction,
            teacher_probs=teacher_probs,
            return_terms=return_terms,
        )

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, alpha={self.alpha}, multi_label={self.multi_label}"


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def _check_args(temperature: float, alpha: float, reduction: str) -> None:
    _check_temperature(temperature)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _teacher_probs(student, teacher_logits, teacher_probs, temperature, multi_label, alpha):
    """Detached teacher probabilities at temperature T, or None when no teacher is given and alpha == 0."""
    if teacher_logits is not None and teacher_probs is not None:
        raise ValueError("give the teacher as teacher_logits or teacher_probs, not both")
    if teacher_logits is None and teacher_probs is None:
        if alpha > 0:
            raise ValueError(
                f"a teacher (teacher_logits or teacher_probs) is needed when alpha > 0 (alpha={alpha})"
            )
        return None
    if teacher_probs is None:
        probs = soften(teacher_logits, temperature, multi_label)
    else:
        probs = teacher_probs.detach()
        if probs.numel() and (probs.min() < 0 or probs.max() > 1):
            raise ValueError("teacher_probs must be probabilities in [0, 1] (pass logits as teacher_logits)")
    if probs.shape != student.shape:
        raise ValueError(
            f"teacher of shape {tuple(probs.shape)} does not match student logits {tuple(student.shape)}"
        )
    return probs


def _reduce(x: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return x.mean()
    if reduction == "sum":
        return x.sum()
    return x


def _combine(kd, ce, alpha, return_terms):
    if alpha == 0:
        total = ce
    elif alpha == 1:
        total = kd
    else:
        total = alpha * kd + (1 - alpha) * ce
    return DistillationTerms(total, kd, ce) if return_terms else total
