"""Patch-Mix contrastive learning (Bae et al. 2023), spec ``ast-patchmix-icbhi.md`` §2.4.

One training step of the published ``patchmix_cl`` method::

    pooled = model.forward_fbank_pooled(fbank)                # clean forward
    loss = F.cross_entropy(model.forward_head(pooled), y)     # plain CE
    _, mixed, y_a, y_b, lam, index = model.forward_patch_mix(fbank, y, beta=1.0)
    loss = loss + alpha * con_loss(projector(mixed), pooled.detach(), lam, index)

The clean target is **detached by the caller** (``features.detach()``, the reference's default
``target_type='grad_block'``) and is **not projected**; only the mixed branch goes through the
:class:`Projector`. Defaults: ``alpha = 1.0``, ``temperature = 0.06``, ``proj_dim = 768``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PatchMixContrastiveLoss", "Projector", "mixed_ce"]


class Projector(nn.Sequential):
    """``Linear(in, in) -> BatchNorm1d(in) -> ReLU -> Linear(in, proj_dim)`` (reference
    ``models/projector.py``)."""

    def __init__(self, in_dim: int = 768, proj_dim: int = 768):
        super().__init__(
            nn.Linear(in_dim, in_dim),
            nn.BatchNorm1d(in_dim),
            nn.ReLU(inplace=True),
            nn.Linear(in_dim, proj_dim),
        )


class PatchMixContrastiveLoss(nn.Module):
    """``L = -(1/B) sum_i [lam log p_i(i) + (1 - lam) log p_i(index[i])]`` with
    ``p_i(j) = softmax_j(z~_i . z_j / tau)`` over all ``B`` clean keys.

    ``z~`` are the L2-normalised mixed projections (anchors), ``z`` the L2-normalised clean
    features (keys); the positive mask is the soft ``lam * I + (1 - lam) * P``,
    ``P[i, index[i]] = 1``, normalised by its row sum (1). Row maxima are subtracted for
    stability. ``negative_pair='diff_label'`` (with ``labels``) keeps only negatives of a
    different label, plus both positives, in the denominator; the default ``'all'`` is the one
    used in the paper.
    """

    def __init__(self, temperature: float = 0.06, negative_pair: str = "all"):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if negative_pair not in ("all", "diff_label"):
            raise ValueError(f"negative_pair must be 'all' or 'diff_label', got {negative_pair!r}")
        self.temperature, self.negative_pair = float(temperature), negative_pair

    def forward(
        self,
        proj_mixed: torch.Tensor,
        proj_clean: torch.Tensor,
        lam: float | torch.Tensor,
        index: torch.Tensor,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``proj_mixed [B, P]`` (anchors), ``proj_clean [B, P]`` (keys, detached by the caller),
        ``lam`` and ``index [B]`` from Patch-Mix -> scalar loss."""
        if proj_mixed.shape != proj_clean.shape or proj_mixed.dim() != 2:
            raise ValueError(
                f"need two [B, P] tensors, got {tuple(proj_mixed.shape)} and {tuple(proj_clean.shape)}"
            )
        b = proj_mixed.shape[0]
        dtype = torch.promote_types(torch.promote_types(proj_mixed.dtype, proj_clean.dtype), torch.float32)
        anchors = F.normalize(proj_mixed.to(dtype), dim=1)  # half precision is computed in float32
        keys = F.normalize(proj_clean.to(dtype), dim=1)
        logits = anchors @ keys.T / self.temperature
        logits = logits - logits.max(dim=1, keepdim=True).values.detach()
        eye = torch.eye(b, device=logits.device, dtype=dtype)
        partner = torch.zeros_like(eye)
        partner[torch.arange(b, device=logits.device), index.to(logits.device).long()] = 1.0
        mask = lam * eye + (1 - lam) * partner
        if self.negative_pair == "diff_label":
            if labels is None:
                raise ValueError("negative_pair='diff_label' needs labels")
            labels = labels.to(logits.device).view(-1, 1)
            keep = (labels != labels.T) | eye.bool() | partner.bool()
            logits_den = logits.masked_fill(~keep, float("-inf"))
        else:
            logits_den = logits
        log_prob = logits - torch.logsumexp(logits_den, dim=1, keepdim=True)
        return (-(mask * log_prob).sum(1) / mask.sum(1)).mean()


def mixed_ce(
    logits: torch.Tensor,
    y_a: torch.Tensor,
    y_b: torch.Tensor,
    lam: float | torch.Tensor,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Patch-Mix / mixup cross-entropy ``lam * CE(logits, y_a) + (1 - lam) * CE(logits, y_b)``."""
    return lam * F.cross_entropy(logits, y_a, weight=weight) + (1 - lam) * F.cross_entropy(
        logits, y_b, weight=weight
    )
