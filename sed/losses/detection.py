"""The losses of sound event detection (the DCASE 2024 Task 4 baseline's), on probabilities.

- :func:`masked_bce`: binary cross-entropy of probabilities against targets, averaged over the entries a
  mask keeps (the classes a clip's source annotates, the frames a clip fills). The baseline zeroes the
  predictions and targets of unannotated classes and averages over all entries, so a masked class adds
  nothing but still counts in the denominator; here it counts in neither (the same with every class
  annotated, as in DESED alone).
- :func:`strong_loss`: frame BCE ``[B, F, C]`` (mask ``[B, C]`` classes x ``[B, F]`` valid frames).
- :func:`weak_loss`: clip BCE ``[B, C]`` through the model's clip pooling.
- :func:`consistency_loss`: the mean teacher's term, the mean squared difference of the student's and the
  (detached) teacher's frame probabilities plus that of their clip probabilities.

Every loss runs in float32 with autocast off (``binary_cross_entropy`` is unsafe under autocast; bf16
probabilities near 0 or 1 would lose the loss), whatever precision the model ran in.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["consistency_loss", "masked_bce", "strong_loss", "weak_loss"]


def _no_autocast(t: torch.Tensor):
    return torch.autocast(device_type=t.device.type, enabled=False)


def masked_bce(probs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean BCE of ``probs`` against ``targets`` over the entries ``mask`` (broadcast to them) keeps; 0 (with
    a gradient path) when it keeps none."""
    with _no_autocast(probs):
        per = F.binary_cross_entropy(probs.float(), targets.float(), reduction="none")
        if mask is None:
            return per.mean()
        m = mask.to(per.dtype).expand_as(per)
        return (per * m).sum() / m.sum().clamp_min(1.0)


def strong_loss(
    frame_probs: torch.Tensor,
    frame_targets: torch.Tensor,
    class_mask: torch.Tensor | None = None,
    frame_valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Frame BCE: ``[B, F, C]`` probabilities and targets, ``class_mask [B, C]``, ``frame_valid [B, F]``."""
    mask = None
    if class_mask is not None:
        mask = class_mask[:, None, :]
    if frame_valid is not None:
        fv = frame_valid[:, :, None]
        mask = fv if mask is None else mask & fv
    return masked_bce(frame_probs, frame_targets, mask)


def weak_loss(
    clip_probs: torch.Tensor, targets: torch.Tensor, class_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Clip BCE: ``[B, C]`` probabilities and targets, ``class_mask [B, C]``."""
    return masked_bce(clip_probs, targets, class_mask)


def consistency_loss(
    student_frames: torch.Tensor,
    teacher_frames: torch.Tensor,
    student_clip: torch.Tensor,
    teacher_clip: torch.Tensor,
) -> torch.Tensor:
    """``mse(student frames, teacher frames) + mse(student clip, teacher clip)`` (teacher detached), each
    the mean over all its entries as the baseline's ``MSELoss``."""
    with _no_autocast(student_frames):
        frames = F.mse_loss(student_frames.float(), teacher_frames.detach().float())
        clip = F.mse_loss(student_clip.float(), teacher_clip.detach().float())
    return frames + clip
