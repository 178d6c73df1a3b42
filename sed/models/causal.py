"""Causal streaming classifiers: a TCN (temporal convolutional network) of dilated causal convolutions.

Waveform ``[B, T]`` at 16 kHz -> :class:`~sed.audio.features.KaldiFbank` frames ``[B, frames, bins]``
(25 ms windows every 10 ms; any number of frames, no pad/crop) -> optional 2-D stem (a 3x3 convolution,
causal in time and stride 2 in frequency, BN, ReLU; its maps flattened to channels) -> ``blocks``:
residual blocks of two dilated *causal* 1-D convolutions over time (left padding only; dilation
``2**i`` in block ``i``; BN and ReLU after each; a 1x1 convolution on the shortcut when the width
changes; ``relu(x + F(x))``) -> frame embeddings ``[B, frames, embed_dim]``.

- ``frame_logits(wave) -> [B, frames, C]``: frame logits, ``head`` of each frame embedding.
  Frame ``t`` covers samples ``[t * 160, t * 160 + 400)`` and depends on nothing after its end.
- ``frame_pooling`` (:mod:`sed.models.frames`): a frame model on these frames (0.01 s apart): its
  ``forward_frames`` gives the frame head's probabilities and their pooled clip probabilities. It
  streams through the windowed path of :mod:`sed.inference.stream` (the incremental one averages
  embeddings for ``head``, the clip model's).
- ``forward(wave, lengths) -> [B, C]``: clip logits, ``head`` of the mean frame embedding over
  the clip's valid frames (as ``head`` is linear, the mean of the frame logits). ``clip_samples``
  (``input_tdim`` frames, 5 s by default) is the clip length of training and classification and
  the window over which :mod:`sed.inference.stream` averages the frames of a stream.
- Receptive field: ``receptive_field`` frames = 1 + sum over causal convolutions of
  ``(kernel - 1) * dilation``: 61 frames (0.625 s) for ``tcn_tiny``, 1,023 (10.25 s) for
  ``tcn_small``, 4,095 (40.97 s) for ``tcn_base``; in samples ``(frames - 1) * 160 + 400``.
- Streaming: ``init_stream(batch)`` gives a :class:`StreamState` (the samples of the next
  unfinished fbank frame, and per causal convolution its last ``(kernel - 1) * dilation`` input
  frames); ``stream_step(state, samples) -> (frame embeddings of the frames the samples complete,
  state)``. Fed in chunks of any size, the frames equal those of ``frame_logits`` on the whole
  signal; memory and cost per chunk do not depend on how much came before.

Causality holds in eval mode (BatchNorm then is a per-frame affine map; in training it normalises
over the batch and time). The clip mean and ``lengths`` are the only places that look at a whole clip.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from sed.audio.features import AUDIOSET_MEAN, AUDIOSET_STD, KaldiFbank
from sed.models.base import FbankClassifier, build_sized, resolve_tdim
from sed.models.family import Family, register_family
from sed.models.frames import FrameOutputs
from sed.models.registry import register_model

__all__ = [
    "TCN_SIZES",
    "CausalConv1d",
    "CausalConv2d",
    "StreamState",
    "TCNBlock",
    "TCNModel",
    "tcn_base",
    "tcn_small",
    "tcn_tiny",
]

#: architecture of the registered sizes: block width, number of blocks (dilations 1 .. 2**(depth-1)),
#: kernel size over time, channels of the 2-D stem (0: none, the mel bins are the input channels)
TCN_SIZES: dict[str, dict] = {
    "tcn_tiny": {"channels": 32, "depth": 4, "kernel_size": 3, "stem_channels": 0},
    "tcn_small": {"channels": 128, "depth": 8, "kernel_size": 3, "stem_channels": 8},
    "tcn_base": {"channels": 256, "depth": 10, "kernel_size": 3, "stem_channels": 16},
}


class _Caches:
    """The causal convolutions' saved input frames during one streaming step, in module order."""

    def __init__(self, old: list[torch.Tensor]):
        self.old, self.new = iter(old), []

    def join(self, x: torch.Tensor, context: int) -> torch.Tensor:
        """The saved frames followed by ``x`` (time is dim 2); saves the last ``context`` of them."""
        full = torch.cat([next(self.old), x], dim=2)
        self.new.append(full[:, :, full.shape[2] - context :])
        return full


class CausalConv1d(nn.Conv1d):
    """A dilated 1-D convolution over time ``[B, C, T]`` whose output frame ``t`` sees input frames
    ``t - (kernel - 1) * dilation .. t`` only (zeros before the start)."""

    def __init__(self, cin: int, cout: int, kernel_size: int, dilation: int = 1):
        super().__init__(cin, cout, kernel_size, dilation=dilation, bias=False)
        self.context = (kernel_size - 1) * dilation

    def forward(self, x: torch.Tensor, caches: _Caches | None = None) -> torch.Tensor:
        x = F.pad(x, (self.context, 0)) if caches is None else caches.join(x, self.context)
        return super().forward(x)

    def empty_cache(self, batch: int, freq: int, device) -> torch.Tensor:
        return torch.zeros(batch, self.in_channels, self.context, device=device)


class CausalConv2d(nn.Conv2d):
    """A 2-D convolution over ``[B, C, T, F]``: causal in time (left padding), centred and strided
    in frequency."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, freq_stride: int = 2):
        super().__init__(
            cin, cout, kernel_size, stride=(1, freq_stride), padding=(0, kernel_size // 2), bias=False
        )
        self.context = kernel_size - 1

    def forward(self, x: torch.Tensor, caches: _Caches | None = None) -> torch.Tensor:
        x = F.pad(x, (0, 0, self.context, 0)) if caches is None else caches.join(x, self.context)
        return super().forward(x)

    def empty_cache(self, batch: int, freq: int, device) -> torch.Tensor:
        return torch.zeros(batch, self.in_channels, self.context, freq, device=device)


class TCNBlock(nn.Module):
    """``relu(shortcut(x) + bn2(conv2(dropout(relu(bn1(conv1(x)))))))`` with causal dilated convolutions."""

    def __init__(self, cin: int, cout: int, kernel_size: int, dilation: int, dropout: float = 0.0):
        super().__init__()
        self.conv1, self.bn1 = CausalConv1d(cin, cout, kernel_size, dilation), nn.BatchNorm1d(cout)
        self.conv2, self.bn2 = CausalConv1d(cout, cout, kernel_size, dilation), nn.BatchNorm1d(cout)
        self.drop = nn.Dropout(dropout)
        self.shortcut = nn.Conv1d(cin, cout, 1, bias=False) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, caches: _Caches | None = None) -> torch.Tensor:
        y = self.drop(F.relu(self.bn1(self.conv1(x, caches))))
        return F.relu(self.shortcut(x) + self.bn2(self.conv2(y, caches)))


@dataclass
class StreamState:
    """What a :class:`TCNModel` carries between streaming steps; its size is fixed by the model.

    ``samples``: ``[B, < win]`` samples from the start of the next fbank frame; ``caches``: per causal
    convolution (module order) its last ``(kernel - 1) * dilation`` input frames; ``frames``: frames
    emitted so far."""

    samples: torch.Tensor
    caches: list[torch.Tensor] = field(default_factory=list)
    frames: int = 0

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in [self.samples, *self.caches])


class TCNModel(FrameOutputs, FbankClassifier, nn.Module):
    """A causal TCN classifier with its own front end; see the module docstring."""

    def __init__(
        self,
        num_classes: int = 527,
        channels: int = 128,
        depth: int = 8,
        kernel_size: int = 3,
        stem_channels: int = 0,
        num_mel_bins: int = 64,
        input_tdim: int | None = None,
        clip_seconds: float | None = None,
        sample_rate: int = 16000,
        mean: float = AUDIOSET_MEAN,
        std: float = AUDIOSET_STD,
        dropout: float = 0.1,
        drop_rate: float = 0.2,
        labels: list[str] | None = None,
        frame_pooling: str | None = None,
    ):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if not 1 <= depth <= 16 or kernel_size < 2 or channels < 1 or stem_channels < 0 or num_mel_bins < 1:
            raise ValueError(
                f"a TCN needs 1..16 blocks, kernel_size >= 2 and positive widths, got depth={depth}, "
                f"kernel_size={kernel_size}, channels={channels}, stem_channels={stem_channels}"
            )
        input_tdim = resolve_tdim(input_tdim, clip_seconds, sample_rate, num_mel_bins)
        self.record_kwargs(input_tdim=input_tdim, clip_seconds=None)
        self.num_classes, self.embed_dim = int(num_classes), int(channels)
        self.input_tdim, self.input_fdim = input_tdim, int(num_mel_bins)
        self.frontend = KaldiFbank(sample_rate, num_mel_bins, None, mean, std)
        if stem_channels:
            self.stem = nn.ModuleDict(
                {"conv": CausalConv2d(1, stem_channels), "bn": nn.BatchNorm2d(stem_channels)}
            )
            cin = stem_channels * ((num_mel_bins - 1) // 2 + 1)
        else:
            self.stem, cin = None, int(num_mel_bins)
        blocks = []
        for i in range(depth):
            blocks.append(TCNBlock(cin, channels, kernel_size, 2**i, dropout))
            cin = channels
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Sequential(nn.Dropout(drop_rate), nn.Linear(channels, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv1d | nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
        self.reset_head()
        self.init_frames(channels, frame_pooling)
        self.labels = labels

    def reset_head(self) -> None:
        """A fresh classifier (``head[1]``), e.g. before fine-tuning to new classes."""
        nn.init.normal_(self.head[1].weight, std=0.01)
        nn.init.zeros_(self.head[1].bias)

    @property
    def _causal(self) -> list[CausalConv1d | CausalConv2d]:
        """The causal convolutions in the order the body runs them (the order of a state's caches)."""
        return [m for m in self.modules() if isinstance(m, CausalConv1d | CausalConv2d)]

    @property
    def receptive_field(self) -> int:
        """Frames of input that one output frame sees (itself included)."""
        return 1 + sum(m.context for m in self._causal)

    @property
    def receptive_field_samples(self) -> int:
        return (self.receptive_field - 1) * self.frontend.hop + self.frontend.win

    # ------------------------------------------------------------------ the causal body
    def _body(self, fbank: torch.Tensor, caches: _Caches | None = None) -> torch.Tensor:
        """Features ``[B, frames, bins]`` -> frame embeddings ``[B, frames, embed_dim]``."""
        if fbank.dim() != 3 or fbank.shape[-1] != self.input_fdim:
            raise ValueError(f"TCN expects features [B, frames, {self.input_fdim}], got {tuple(fbank.shape)}")
        if self.stem is not None:
            x = F.relu(self.stem["bn"](self.stem["conv"](fbank.unsqueeze(1), caches)))  # [B, S, T, F']
            x = x.transpose(2, 3).flatten(1, 2)  # [B, S * F', T]
        else:
            x = fbank.transpose(1, 2)
        for block in self.blocks:
            x = block(x, caches)
        return x.transpose(1, 2)

    def features(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised fbank ``[B, frames, bins]`` of any length; a wave shorter than one frame is
        zero-padded to one frame."""
        if wave.shape[-1] < self.frontend.win:
            wave = F.pad(wave, (0, self.frontend.win - wave.shape[-1]))
        return super().features(wave, lengths)

    def frame_embeddings(self, wave: torch.Tensor) -> torch.Tensor:
        """Waveform ``[B, T]`` -> frame embeddings ``[B, frames, embed_dim]`` (no padding to a frame)."""
        with torch.autocast(device_type=wave.device.type, enabled=False):
            return self._body(self.frontend(wave.float()))

    def frame_logits(self, wave: torch.Tensor) -> torch.Tensor:
        """Waveform ``[B, T]`` -> the clip head's logits per frame ``[B, frames, C]``; frame ``t`` ends at
        sample ``t * hop + win``."""
        return self.head(self.frame_embeddings(wave))

    @property
    def frame_hop(self) -> float:
        return self.frontend.hop / self.sample_rate

    def num_frames(self, num_samples: int) -> int:
        return self.frontend.num_frames(max(int(num_samples), self.frontend.win))

    def frame_sequence(self, fbank: torch.Tensor) -> torch.Tensor:
        """Frames ``[B, frames, channels]``: the frame embeddings."""
        return self._body(fbank)

    # ------------------------------------------------------------------ clip outputs (the shared model API)
    def forward_fbank_features(self, fbank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features -> (mean frame embedding ``[B, D]``, frame embeddings ``[B, frames, D]``)."""
        frames = self._body(fbank)
        return frames.mean(dim=1), frames

    def forward_head(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.head(pooled)

    def _valid_frames(self, lengths: torch.Tensor, frames: int) -> torch.Tensor:
        n = (lengths.to(torch.long) - self.frontend.win).div(self.frontend.hop, rounding_mode="floor") + 1
        return n.clamp(1, frames)

    def embed(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The mean frame embedding ``[B, D]`` over the valid frames (``lengths``: valid samples)."""
        frames = self._body(self.features(wave, lengths))
        if lengths is None:
            return frames.mean(dim=1)
        valid = self._valid_frames(lengths.to(frames.device), frames.shape[1])
        mask = torch.arange(frames.shape[1], device=frames.device)[None, :] < valid[:, None]
        return (frames * mask[..., None]).sum(dim=1) / valid[:, None].to(frames.dtype)

    def forward_features(self, wave: torch.Tensor, lengths: torch.Tensor | None = None):
        pooled, frames = self.forward_fbank_features(self.features(wave, lengths))
        return (self.embed(wave, lengths) if lengths is not None else pooled), frames

    # ------------------------------------------------------------------ streaming
    def init_stream(self, batch: int = 1, device: torch.device | str | None = None) -> StreamState:
        """The state before any audio: no samples, zeros as every convolution's past (its left padding)."""
        device = device if device is not None else self.head[1].weight.device
        freq = self.input_fdim
        return StreamState(
            torch.zeros(batch, 0, device=device),
            [m.empty_cache(batch, freq, device) for m in self._causal],
            0,
        )

    @torch.no_grad()
    def stream_step(self, state: StreamState, samples: torch.Tensor) -> tuple[torch.Tensor, StreamState]:
        """Feed ``samples`` (``[B, n]`` or ``[n]``, any ``n``) -> (embeddings ``[B, k, D]`` of the ``k``
        frames they complete, the next state). Needs eval mode (BatchNorm as a per-frame map)."""
        if self.training:
            raise RuntimeError("stream_step needs the model in eval mode")
        samples = samples.reshape(state.samples.shape[0], -1).to(state.samples)
        buf = torch.cat([state.samples, samples], dim=1)
        fe = self.frontend
        k = fe.num_frames(buf.shape[1])
        if k == 0:
            return buf.new_zeros(buf.shape[0], 0, self.embed_dim), StreamState(
                buf, state.caches, state.frames
            )
        with torch.autocast(device_type=buf.device.type, enabled=False):
            fbank = fe(buf[:, : (k - 1) * fe.hop + fe.win])
        caches = _Caches(state.caches)
        emb = self._body(fbank, caches)
        return emb, StreamState(
            buf[:, k * fe.hop :].clone(), [c.clone() for c in caches.new], state.frames + k
        )


# ---------------------------------------------------------------------- registered sizes
@register_model
def tcn_tiny(num_classes: int = 527, **kwargs) -> TCNModel:
    """~30 k parameters: 4 blocks 32 wide on 64 mel bins, receptive field 61 frames (0.625 s)."""
    return build_sized(TCNModel, TCN_SIZES, "tcn_tiny", num_classes, kwargs)


@register_model
def tcn_small(num_classes: int = 527, **kwargs) -> TCNModel:
    """~1 M parameters: 2-D stem (8 maps), 8 blocks 128 wide, receptive field 1,023 frames (10.25 s)."""
    return build_sized(TCNModel, TCN_SIZES, "tcn_small", num_classes, kwargs)


@register_model
def tcn_base(num_classes: int = 527, **kwargs) -> TCNModel:
    """~4 M parameters: 2-D stem (16 maps), 10 blocks 256 wide, receptive field 4,095 frames (41 s)."""
    return build_sized(TCNModel, TCN_SIZES, "tcn_base", num_classes, kwargs)


FAMILY = register_family(
    Family(
        "tcn",
        tuple(TCN_SIZES),
        "tcn_tiny",
        "fixed",
        "causal TCNs for streaming: dilated causal 1-D convolutions on the AST fbank; no public weights",
        test_kwargs={"clip_seconds": 1.0},
    )
)
