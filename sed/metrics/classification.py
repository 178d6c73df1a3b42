"""Classification metrics: the ICBHI 2017 score (spec ``ast-patchmix-icbhi.md`` §2.6).

Per sample ``counts[label] += 1`` and

* 4-class (default): ``hits[label] += 1`` if ``pred == label`` - a crackle predicted as wheeze is a miss;
* ``two_class``: a normal (label 0) is a hit if ``pred == 0``; an abnormal (label != 0) if ``pred > 0``.

``Sp = hits[0] / (counts[0] + 1e-10) * 100``, ``Se = sum(hits[1:]) / (sum(counts[1:]) + 1e-10) * 100``,
``Score = (Sp + Se) / 2``, all in percent. Predictions are class indices; ``[N, C]`` scores
(logits, probabilities) are reduced by ``argmax`` as in the reference.
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics import Metric

__all__ = ["ICBHIScore", "icbhi_hits_counts", "icbhi_score", "icbhi_score_from_counts"]

_EPS = 1e-10


def _as_labels(x, name: str) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if name == "y_pred" and a.ndim == 2:
        a = a.argmax(axis=1)
    if a.ndim != 1:
        raise ValueError(
            f"{name} must be 1-D class indices (or [N, C] scores for y_pred), got shape {a.shape}"
        )
    whole = np.issubdtype(a.dtype, np.integer) or (
        np.issubdtype(a.dtype, np.floating) and np.all(a == np.round(a))
    )
    if a.size and (not whole or a.min() < 0):
        raise ValueError(f"{name} must hold non-negative integer class indices")
    return a.astype(np.int64)


def icbhi_hits_counts(
    y_true, y_pred, two_class: bool = False, num_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(hits, counts)`` per true label, as accumulated by the reference's ``validate``."""
    t, p = _as_labels(y_true, "y_true"), _as_labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"{t.size} labels but {p.size} predictions")
    k = max(num_classes or 0, int(t.max()) + 1 if t.size else 1, 1)
    hit = np.where(t == 0, p == 0, p > 0) if two_class else p == t
    return (
        np.bincount(t, weights=hit.astype(np.float64), minlength=k),
        np.bincount(t, minlength=k).astype(np.float64),
    )


def icbhi_score_from_counts(hits, counts) -> tuple[float, float, float]:
    """``get_score``: (specificity, sensitivity, score) in percent from per-label hits and counts."""
    hits, counts = np.asarray(hits, dtype=np.float64), np.asarray(counts, dtype=np.float64)
    sp = hits[0] / (counts[0] + _EPS) * 100
    se = hits[1:].sum() / (counts[1:].sum() + _EPS) * 100
    return float(sp), float(se), float((sp + se) / 2.0)


def icbhi_score(y_true, y_pred, two_class: bool = False) -> tuple[float, float, float]:
    """ICBHI (specificity, sensitivity, score) in percent; inputs are lists, numpy arrays or tensors."""
    return icbhi_score_from_counts(*icbhi_hits_counts(y_true, y_pred, two_class))


class ICBHIScore(Metric):
    """Streaming ICBHI score; ``compute()`` -> ``(sp, se, score)`` tensors in percent.

    Hits and counts per true label are summed across batches and processes (``dist_reduce_fx="sum"``),
    so the result equals one :func:`icbhi_score` call on everything seen, also under DDP.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, two_class: bool = False, num_classes: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.two_class, self.num_classes = bool(two_class), int(num_classes)
        self.add_state("hits", default=torch.zeros(self.num_classes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state(
            "counts", default=torch.zeros(self.num_classes, dtype=torch.long), dist_reduce_fx="sum"
        )

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """``preds``: ``[N]`` class indices or ``[N, C]`` scores; ``target``: ``[N]`` labels."""
        preds = preds.argmax(dim=1) if preds.dim() == 2 else preds
        preds, target = preds.long().flatten(), target.long().flatten()
        if preds.shape != target.shape:
            raise ValueError(f"{target.numel()} labels but {preds.numel()} predictions")
        if target.numel() and (int(target.min()) < 0 or int(target.max()) >= self.num_classes):
            raise ValueError(f"labels must be in 0..{self.num_classes - 1}")
        hit = torch.where(target == 0, preds == 0, preds > 0) if self.two_class else preds == target
        self.hits += torch.bincount(target, weights=hit.double(), minlength=self.num_classes).long()
        self.counts += torch.bincount(target, minlength=self.num_classes)

    def compute(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hits, counts = self.hits.double(), self.counts.double()
        sp = hits[0] / (counts[0] + _EPS) * 100
        se = hits[1:].sum() / (counts[1:].sum() + _EPS) * 100
        return sp.float(), se.float(), ((sp + se) / 2).float()
