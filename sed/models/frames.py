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

from sed.models.base import length_groups

__all__ = [
    "POOLINGS",
    "FrameHead",
    "FrameModel",
    "FrameOutputs",
    "clip_logits",
    "is_frame_model",
    "per_length_frames",
    "pool_frames",
    "time_halvings",
]

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


def per_length_frames(fn, wave: torch.Tensor, lengths: torch.Tensor | None):
    """:func:`~sed.models.base.per_length` for frame outputs: ``fn`` (clips of one length -> (frames
    ``[b, F, C]``, clip ``[b, C]``)) on each group of equal valid length; the frames of shorter groups are
    zero-padded to the longest group's count."""
    groups = length_groups(lengths, wave.shape[0], wave.shape[-1])
    if len(groups) == 1:
        return fn(wave[..., : groups[0][0]])
    parts = [(rows, fn(wave[rows, ..., :n])) for n, rows in groups]
    width = max(p[0].shape[1] for _, p in parts)
    frames = parts[0][1][0].new_zeros((wave.shape[0], width, parts[0][1][0].shape[-1]))
    clip = parts[0][1][1].new_empty((wave.shape[0], parts[0][1][1].shape[-1]))
    for rows, (f, c) in parts:
        frames[rows, : f.shape[1]] = f
        clip[rows] = c
    return frames, clip


class FrameOutputs:
    """Mixin of the families that become frame models with their ``frame_pooling`` kwarg (listed before
    the family's base class). The family calls :meth:`init_frames` in its constructor and gives
    ``frame_sequence(feats) -> [B, F, dim]`` (its time sequence from front-end output), ``frame_hop``
    (seconds) and ``num_frames(num_samples)``; a *fixed-length* family (the clip is padded or cut to
    ``clip_samples``, so F does not depend on the input) sets ``fixed_frames = True``: its valid frames are
    those that start inside the clip (``ceil(samples / hop)``). The rest is shared here."""

    frame_pooling: str | None = None
    fixed_frames: bool = False

    def init_frames(self, dim: int, frame_pooling: str | None) -> None:
        """A :class:`FrameHead` over ``dim``-wide frames when ``frame_pooling`` is set (None: clip model)."""
        self.frame_pooling = frame_pooling
        self.frame_head = None if frame_pooling is None else FrameHead(dim, self.num_classes, frame_pooling)

    @property
    def frame_hop_samples(self) -> int:
        return round(self.frame_hop * self.sample_rate)

    def valid_frames(self, lengths: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Frames per clip that hold its audio (``lengths``: valid samples), in ``[1, num_frames]``."""
        lengths = torch.as_tensor(lengths).to(torch.long)
        if self.fixed_frames:  # tensor arithmetic: also under torch.export
            hop = self.frame_hop_samples
            return (lengths + hop - 1).div(hop, rounding_mode="floor").clamp(1, num_frames)
        valid = [self.num_frames(int(n)) for n in lengths.cpu()]
        return torch.tensor(valid, dtype=torch.long, device=lengths.device).clamp(1, num_frames)

    def _frame_head(self) -> FrameHead:
        if self.frame_head is None:
            raise ValueError(
                f"{type(self).__name__} was built without frame_pooling; it gives no frame outputs"
            )
        return self.frame_head

    def frames_from_features(
        self, feats: torch.Tensor, valid: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Front-end output -> (frame probabilities ``[B, F, C]``, clip probabilities ``[B, C]`` over the
        ``valid`` frames per row, None: all): the hook where a training task augments features in
        between, like ``forward_from_features``."""
        head = self._frame_head()
        seq = self.frame_sequence(feats)
        return head(seq, frame_mask(seq.shape[1], valid, seq.device))

    def forward_frames(
        self, wave: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Waveform ``[B, T]`` (``lengths``: valid samples) -> (frame probabilities ``[B, F, C]``, clip
        probabilities ``[B, C]``); frame ``i`` covers ``[i * frame_hop, (i + 1) * frame_hop)``. A native-
        length family runs each length group alone (frames past a clip's end are zero); the others mask
        the frames past a clip's end (a fixed-length family: past the input's end too) out of the clip
        pooling."""
        self._frame_head()
        if wave.dim() == 1:
            wave = wave.unsqueeze(0)
        if getattr(self, "native_length", False) and lengths is not None:
            return per_length_frames(lambda w: self.forward_frames(w), wave, lengths)
        feats = self.features(wave, lengths)
        if lengths is None and not self.fixed_frames:
            return self.frames_from_features(feats)
        if lengths is None:  # fixed length: the frames past the end of a short input are padding
            lengths = wave.new_full((wave.shape[0],), wave.shape[-1], dtype=torch.long)
        seq = self.frame_sequence(feats)
        valid = self.valid_frames(lengths, seq.shape[1])
        return self.frame_head(seq, frame_mask(seq.shape[1], valid, seq.device))

    def clip_from_frames(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """A frame model's ``forward``: the logits of its pooled clip probabilities."""
        return clip_logits(self.forward_frames(wave, lengths)[1])

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if self.frame_pooling is None:
            return super().forward(wave, lengths)
        return self.clip_from_frames(wave, lengths)

    def forward_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        if self.frame_pooling is None:
            return super().forward_from_features(feats)
        return clip_logits(self.frames_from_features(feats)[1])


def time_halvings(frames: int, times: int) -> int:
    """Frames left after ``times`` stride-2 convolutions with 'same' padding (each ``ceil(n / 2)``)."""
    for _ in range(times):
        frames = (frames + 1) // 2
    return frames
