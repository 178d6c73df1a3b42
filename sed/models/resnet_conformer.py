"""ResNet-Conformer for SELD (USTC / NERC-SLIP; ../shared/specs/seld.md 9), multi-ACCDOA output.

Features ``[B, 7 | 10, frames, 64]`` (20-ms frames, from the model's own front end, standardised) ->
stem (3x3 conv, BN, ReLU) -> 4 ResNet-18 stages of 2 BasicBlocks (``channels``, default 64-128-256-512),
each followed by an average pool over **frequency only** (``freq_pool``, default 2 per stage) ->
mean over the remaining frequency bins -> Linear to ``d_model`` -> ``num_layers`` Conformer blocks
(``torchaudio.models.Conformer``: Macaron FFN of ``ffn_dim`` = 4 d_model, ``num_heads`` heads,
depthwise kernel ``kernel_size``, dropout) -> time pooling -> Linear -> multi-ACCDOA activation
(:class:`~sed.models.seld_common.SeldModel`: tanh on x, y, z; distance not squashed).

``time_pool`` says where the 20-ms frames are averaged 5:1 to the 100-ms label rate:

* ``"after"`` (default, the 2022 "improved" ResNet-Conformer): the ResNet and the Conformer run at
  the 20-ms rate; an average pool (kernel = stride = 5) sits right before the output layer.
* ``"resnet"`` (the original ResNet-Conformer, for the ablation): the pool is part of the first
  stage's pooling (``(5, f)`` instead of ``(1, f)``), so later stages and the Conformer see 100-ms frames.

:meth:`ResNetConformer.conformer_frames` gives the Conformer's sequence length for a clip (250 vs 50
for 5 s); the Conformer is ``model.conformer`` (hook it to see its input).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchaudio.models import Conformer

from sed.models.family import Family, register_family
from sed.models.registry import register_model
from sed.models.seld_common import SeldModel

__all__ = ["BasicBlock", "ResNetConformer", "resnet_conformer", "resnet_conformer_tiny"]

#: Registered sizes; anything here can be overridden by a keyword.
RESNET_CONFORMER_SIZES: dict[str, dict] = {
    "resnet_conformer": {
        "channels": [64, 128, 256, 512],
        "d_model": 256,
        "num_layers": 8,
        "num_heads": 8,
        "kernel_size": 31,
    },
    "resnet_conformer_tiny": {
        "channels": [8, 8, 16, 16],
        "d_model": 32,
        "num_layers": 2,
        "num_heads": 4,
        "kernel_size": 7,
    },
}


class BasicBlock(nn.Module):
    """ResNet-18's block: 3x3 conv-BN-ReLU, 3x3 conv-BN, plus the identity (or 1x1 conv-BN) shortcut, ReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetConformer(SeldModel):
    """See the module docstring; front-end and output keywords are those of :class:`SeldModel`."""

    def __init__(
        self,
        num_classes: int = 13,
        fmt: str = "foa",
        with_distance: bool = False,
        channels=(64, 128, 256, 512),
        blocks_per_stage: int = 2,
        freq_pool=(2, 2, 2, 2),
        d_model: int = 256,
        num_layers: int = 8,
        num_heads: int = 8,
        ffn_dim: int | None = None,
        kernel_size: int = 31,
        dropout: float = 0.1,
        time_pool: str = "after",
        **kwargs,
    ):
        super().__init__(num_classes=num_classes, fmt=fmt, with_distance=with_distance, **kwargs)
        channels, freq_pool = [int(c) for c in channels], [int(f) for f in freq_pool]
        if len(channels) != len(freq_pool) or not channels:
            raise ValueError(f"channels {channels} and freq_pool {freq_pool} need one entry per stage")
        if self.n_mels % math.prod(freq_pool):
            raise ValueError(
                f"n_mels {self.n_mels} is not divisible by the frequency pooling {math.prod(freq_pool)}"
            )
        if time_pool not in ("after", "resnet"):
            raise ValueError(f"time_pool must be 'after' or 'resnet', got {time_pool!r}")
        if d_model % num_heads:
            raise ValueError(f"d_model {d_model} is not divisible by num_heads {num_heads}")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (torchaudio's Conformer), got {kernel_size}")
        ffn_dim = 4 * d_model if ffn_dim is None else int(ffn_dim)
        self.time_pool = time_pool
        self.record_kwargs(ffn_dim=ffn_dim)  # the default resolved
        self.stem = nn.Sequential(
            nn.Conv2d(self.in_channels, channels[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(channels[0]),
            nn.ReLU(inplace=True),
        )
        stages, pools, prev = [], [], channels[0]
        for s, (c, f) in enumerate(zip(channels, freq_pool)):
            stages.append(
                nn.Sequential(*[BasicBlock(prev if b == 0 else c, c) for b in range(blocks_per_stage)])
            )
            t = self.frames_per_label if (time_pool == "resnet" and s == 0) else 1
            pools.append(nn.AvgPool2d((t, f)) if (t, f) != (1, 1) else nn.Identity())
            prev = c
        self.stages, self.pools = nn.ModuleList(stages), nn.ModuleList(pools)
        self.proj = nn.Linear(channels[-1], d_model)
        self.proj_drop = nn.Dropout(dropout)
        self.conformer = Conformer(
            input_dim=d_model,
            num_heads=num_heads,
            ffn_dim=ffn_dim,
            num_layers=num_layers,
            depthwise_conv_kernel_size=kernel_size,
            dropout=dropout,
        )
        self.head = nn.Linear(d_model, self.output_dim)

    def conformer_frames(self, num_samples: int) -> int:
        """Sequence length the Conformer sees for a clip of ``num_samples`` samples."""
        frames = self.frontend.num_frames(num_samples)
        return frames if self.time_pool == "after" else frames // self.frames_per_label

    def forward_network(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage, pool in zip(self.stages, self.pools):
            x = pool(stage(x))
        x = self.proj_drop(self.proj(x.mean(dim=-1).transpose(1, 2)))  # [B, T', d_model]
        lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long, device=x.device)
        x, _ = self.conformer(x, lengths)
        if self.time_pool == "after":
            k = self.frames_per_label
            x = F.avg_pool1d(x.transpose(1, 2), k, k).transpose(1, 2)
        return self.head(x)


def _build(size: str, num_classes: int, kwargs: dict) -> ResNetConformer:
    return ResNetConformer(num_classes=num_classes, **{**RESNET_CONFORMER_SIZES[size], **kwargs})


@register_model
def resnet_conformer(num_classes: int = 13, **kwargs) -> ResNetConformer:
    """ResNet-18 front (64-128-256-512, frequency-only pooling) + 8 Conformer blocks (d 256, 8 heads,
    kernel 31), time pooling after the Conformer; multi-ACCDOA (``with_distance`` for DCASE2024)."""
    return _build("resnet_conformer", num_classes, kwargs)


@register_model
def resnet_conformer_tiny(num_classes: int = 13, **kwargs) -> ResNetConformer:
    """A CPU-test size: channels 8-8-16-16, 2 Conformer blocks of width 32 (4 heads, kernel 7)."""
    return _build("resnet_conformer_tiny", num_classes, kwargs)


FAMILY = register_family(
    Family(
        "resnet_conformer",
        tuple(RESNET_CONFORMER_SIZES),
        "resnet_conformer_tiny",
        "frames",
        "SELD ResNet-Conformer (multi-ACCDOA; DCASE SELD features); frame outputs at the label rate",
    )
)
