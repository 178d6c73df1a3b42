"""Frame-level outputs: the contract every frame (detection) model follows and the one head that makes them.

A *frame model* maps mono waveforms ``[B, T]`` at ``sample_rate`` to per-frame class probabilities
``[B, frames, classes]`` and clip probabilities ``[B, classes]`` pooled from them
(:meth:`FrameModel.forward_frames`). Output frame ``i`` covers ``[i * frame_hop, (i + 1) * frame_hop)``
seconds of the input (the DCASE baseline's convention: its encoder maps onsets down and offsets up to
frames of ``frame_hop``), so the timestamps of ``F`` frames are ``arange(F + 1) * frame_hop``.

A family turns into a frame model with its ``frame_pooling`` option (None: the clip classifier it was);
its network yields a time sequence ``[B, frames, dim]`` (AST/BEATs/CED: patch tokens regrouped to time
frames; EfficientAT and the CNNs: the feature map before global pooling, averaged over frequency; the
causal TCNs and the CRNN: their frames) and :class:`FrameHead` maps it to frame and clip probabilities.
``forward`` then returns the clip *logits* ``logit(clip probabilities)``, so everything that takes a clip
model (classify, export, ensembles) takes a frame model unchanged.

Clip pooling (``POOLINGS``), so clip (weak) labels train frame models:

- ``attention``: ``sum_t p_t w_t / sum_t w_t`` with ``w = softmax(linear(x))`` over time (clamped to
  [1e-7, 1]), per class;
- ``linear_softmax``: ``sum_t p_t^2 / sum_t p_t`` (Wang et al. 2019);
- ``max``, ``mean``: over the valid frames.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn

__all__ = ["POOLINGS", "FrameHead", "FrameModel", "clip_logits", "is_frame_model", "pool_frames"]

POOLINGS = ("attention", "linear_softmax", "max", "mean")
_EPS = 1e-7


@runtime_checkable
class FrameModel(Protocol):
    """A frame (detection) model; see the module docstring."""

    num_classes: int
    labels: list[str] | None

    @property
    def sample_rate(self) -> int: ...

    @property
    def frame_hop(self) -> float:
        """Seconds between output frames."""
        ...

    def num_frames(self, num_samples: int) -> int:
        """Output frames for an input of ``num_samples`` samples."""
        ...

    def forward_frames(
        self, wave: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``wave [B, T]`` -> (frame probabilities ``[B, F, C]``, clip probabilities ``[B, C]``)."""
        ...


def is_frame_model(model) -> bool:
    """Whether ``model`` gives frame-level outputs (:class:`FrameModel`) now (a family built with
    ``frame_pooling=None`` has the methods but says no through ``frame_pooling``)."""
    return isinstance(model, FrameModel) and getattr(model, "frame_pooling", "attention") is not None


def frame_mask(num_frames: int, valid: torch.Tensor | None, device=None) -> torch.Tensor | None:
    """``[B, F]`` bool of the frames each row fills (``valid``: frames per row), or None for all."""
    if valid is None:
        return None
    return torch.arange(num_frames, device=device)[None, :] < valid.to(device)[:, None]


def pool_frames(
    probs: torch.Tensor,
    pooling: str,
    attention_logits: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Clip probabilities ``[B, C]`` from frame probabilities ``[B, F, C]`` (``mask [B, F]``: valid)."""
    m = None if mask is None else mask[..., None].to(probs.dtype)
    if pooling == "attention":
        if attention_logits is None:
            raise ValueError("attention pooling needs attention logits")
        logits = attention_logits
        if mask is not None:
            logits = logits.masked_fill(~mask[..., None], -1e30)
        w = torch.softmax(logits, dim=1).clamp(_EPS, 1.0)
        if m is not None:
            w = w * m
        return (probs * w).sum(1) / w.sum(1)
    if pooling == "linear_softmax":
        p = probs if m is None else probs * m
        return (p * p).sum(1) / p.sum(1).clamp_min(_EPS)
    if pooling == "max":
        p = probs if mask is None else probs.masked_fill(~mask[..., None], 0.0)
        return p.amax(1)
    if pooling == "mean":
        if m is None:
            return probs.mean(1)
        return (probs * m).sum(1) / m.sum(1).clamp_min(1.0)
    raise ValueError(f"unknown frame pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")


def clip_logits(clip_probs: torch.Tensor) -> torch.Tensor:
    """The logits whose sigmoid is ``clip_probs`` (what a frame model's ``forward`` returns)."""
    return torch.logit(clip_probs.float().clamp(_EPS, 1.0 - _EPS)).to(clip_probs.dtype)


class FrameHead(nn.Module):
    """``[B, F, dim]`` -> (frame probabilities ``[B, F, C]``, clip probabilities ``[B, C]``): a linear layer
    and a sigmoid per frame, and ``pooling`` (attention has its own linear layer) over the valid frames."""

    def __init__(self, dim: int, num_classes: int, pooling: str = "attention"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown frame pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
        self.pooling = pooling
        self.dense = nn.Linear(dim, num_classes)
        self.attention = nn.Linear(dim, num_classes) if pooling == "attention" else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        probs = torch.sigmoid(self.dense(x))
        att = None if self.attention is None else self.attention(x)
        return probs, pool_frames(probs, self.pooling, att, mask)
