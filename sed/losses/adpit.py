"""MSE with Auxiliary Duplicating Permutation Invariant Training (ADPIT) for multi-ACCDOA
(``MSELoss_ADPIT`` of the DCASE2023/2024 baselines, ../shared/specs/seld.md 4).

``output``: ``[B, T, 3*A*C]`` (flat index ``track*A*C + axis*C + class``; A = 3 axes x, y, z, or 4 with
the distance). ``target``: ADPIT labels ``[B, T, 6, 1+A, C]`` (:func:`sed.data.corpora.starss.adpit_targets`):
slots A0, B0, B1, C0, C1, C2 (one / two / three same-class instances), entries activity, x, y, z
(, distance).

Per slot ``T_s = act_s * [x, y, z(, dist)]_s``. The 13 candidate targets ``[B, T, 3 tracks, A, C]`` are
A0A0A0; B0B0B1, B0B1B0, B0B1B1, B1B0B0, B1B0B1, B1B1B0; C0C1C2, C0C2C1, C1C0C2, C1C2C0, C2C0C1, C2C1C0,
each padded with the canonical arrangement of the two other types (A += B0B0B1 + C0C1C2, B += A0A0A0 +
C0C1C2, C += A0A0A0 + B0B0B1; only one type is non-zero per frame and class, so every candidate is a
valid arrangement). ``loss_k`` = mean over the 3*A (track, axis) entries of the squared error ->
``[B, T, C]``; per (batch, frame, class) the smallest of the 13 is kept (the choice itself is not
differentiated: the gradient flows only through the selected candidate's error) and the kept losses
are averaged over everything. Everything is one batched tensor expression.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ADPIT_PERMUTATIONS", "ADPITLoss", "adpit_candidates", "adpit_loss"]

NUM_TRACKS = 3
NUM_SLOTS = 6
#: The 13 candidates as ADPIT slot indices per output track (A0 = 0, B0 = 1, B1 = 2, C0 = 3, C1 = 4, C2 = 5).
ADPIT_PERMUTATIONS: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),
    (1, 1, 2),
    (1, 2, 1),
    (1, 2, 2),
    (2, 1, 1),
    (2, 1, 2),
    (2, 2, 1),
    (3, 4, 5),
    (3, 5, 4),
    (4, 3, 5),
    (4, 5, 3),
    (5, 3, 4),
    (5, 4, 3),
)
_TYPE_OF_CANDIDATE = (0,) + (1,) * 6 + (2,) * 6  # A, B, C
_CANONICAL = (0, 1, 7)  # A0A0A0, B0B0B1, C0C1C2


def _check(output: torch.Tensor, target: torch.Tensor) -> int:
    if target.dim() != 5 or target.shape[2] != NUM_SLOTS or target.shape[3] not in (4, 5):
        raise ValueError(f"ADPIT target must be [B, T, 6, 4|5, C], got shape {tuple(target.shape)}")
    axes, c = target.shape[3] - 1, target.shape[4]
    if (
        output.dim() != 3
        or tuple(output.shape[:2]) != tuple(target.shape[:2])
        or output.shape[2] != NUM_TRACKS * axes * c
    ):
        raise ValueError(
            f"output must be [B, T, {NUM_TRACKS}*{axes}*{c}] = [{target.shape[0]}, {target.shape[1]}, "
            f"{NUM_TRACKS * axes * c}] for target {tuple(target.shape)}, got {tuple(output.shape)}"
        )
    return axes


def adpit_candidates(target: torch.Tensor) -> torch.Tensor:
    """The 13 padded candidate targets ``[B, T, 13, 3 tracks, A, C]`` of ADPIT labels
    ``[B, T, 6, 1+A, C]``."""
    slots = target[:, :, :, :1] * target[:, :, :, 1:]  # T_s = act_s * vector_s: [B, T, 6, A, C]
    perm = torch.tensor(ADPIT_PERMUTATIONS, device=target.device)
    cand = slots[:, :, perm]  # [B, T, 13, 3, A, C]
    canonical = cand[:, :, list(_CANONICAL)]  # [B, T, 3 types, 3, A, C]
    pad = canonical.sum(dim=2, keepdim=True) - canonical  # per type: sum of the two other types
    return cand + pad[:, :, list(_TYPE_OF_CANDIDATE)]


def adpit_loss(output: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """ADPIT MSE of multi-ACCDOA ``output`` ``[B, T, 3*A*C]`` against ADPIT ``target`` ``[B, T, 6, 1+A, C]``.

    ``reduction``: "mean" (the baseline's scalar), "sum", or "none" (the selected per-(batch, frame,
    class) losses ``[B, T, C]``, e.g. to mask padded frames)."""
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    axes = _check(output, target)
    b, t, c = target.shape[0], target.shape[1], target.shape[-1]
    out = output.reshape(b, t, 1, NUM_TRACKS, axes, c)
    cand = adpit_candidates(target.to(output.dtype))
    losses = (out - cand).square().mean(dim=(3, 4))  # [B, T, 13, C]
    best = losses.detach().argmin(dim=2, keepdim=True)
    selected = losses.gather(2, best).squeeze(2)  # [B, T, C]
    if reduction == "none":
        return selected
    return selected.mean() if reduction == "mean" else selected.sum()


class ADPITLoss(nn.Module):
    """Module form of :func:`adpit_loss` (``MSELoss_ADPIT``)."""

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        self.reduction = reduction

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return adpit_loss(output, target, self.reduction)
