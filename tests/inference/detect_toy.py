"""A tiny frame model for the detection tests (registered only while a test needs a checkpoint of it).

Its frames are ``hop`` samples each: a linear map of each frame's samples, a 1-d convolution over
``kernel`` frames (receptive field ``kernel // 2`` frames either side, zero padding at the ends) and a
:class:`~sed.models.frames.FrameHead`. Frame ``i`` covers samples ``[i * hop, (i + 1) * hop)``.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from sed.models import registry
from sed.models.frames import FrameHead, clip_logits, frame_mask

NAME = "_toy_frames"


class ToyFrameModel(nn.Module):
    def __init__(
        self, num_classes: int = 3, hop: int = 160, kernel: int = 3, frame_pooling="max", width=8, clip=0
    ):
        super().__init__()
        # clip > 0: a fixed-length model (as AST and the CNN students): every input padded or cut to ``clip``
        # samples, a frame count that does not depend on the input
        self.clip_samples = clip or None
        self.fixed_frames = bool(clip)
        self.num_classes, self.hop, self.frame_pooling, self.labels = num_classes, hop, frame_pooling, None
        self.proj = nn.Linear(hop, width)
        self.conv = nn.Conv1d(width, width, kernel, padding=kernel // 2)
        self.head = FrameHead(width, num_classes, frame_pooling or "max")

    sample_rate = 16000

    @property
    def frame_hop(self) -> float:
        return self.hop / self.sample_rate

    def num_frames(self, num_samples: int) -> int:
        return math.ceil((self.clip_samples or num_samples) / self.hop)

    def forward_frames(self, wave, lengths=None):
        if self.clip_samples:
            wave = nn.functional.pad(wave, (0, max(0, self.clip_samples - wave.shape[1])))[
                :, : self.clip_samples
            ]
        b, t = wave.shape
        f = self.num_frames(t)
        x = nn.functional.pad(wave, (0, f * self.hop - t)).reshape(b, f, self.hop)
        x = torch.tanh(self.proj(x * 20))
        x = self.conv(x.transpose(1, 2)).transpose(1, 2)
        valid = None if lengths is None else (lengths + self.hop - 1) // self.hop
        return self.head(x, frame_mask(f, valid, wave.device))

    def forward(self, wave, lengths=None):
        return clip_logits(self.forward_frames(wave, lengths)[1])


def _factory(num_classes: int = 3, labels=None, **kwargs) -> ToyFrameModel:
    model = ToyFrameModel(num_classes=num_classes, **kwargs)
    model.labels = labels
    return model


@contextlib.contextmanager
def registered():
    """The toy model in the registry (so its checkpoints load) for the duration of the block."""
    if registry.is_model(NAME):  # nested: the outer block takes it out
        yield
        return
    registry.register_model(_factory, name=NAME)
    try:
        yield
    finally:
        registry._REGISTRY.pop(NAME, None)


def build(labels=("dog", "cat", "speech"), **kwargs) -> ToyFrameModel:
    torch.manual_seed(0)
    with registered():
        model = registry.create_model(NAME, num_classes=len(labels), **kwargs)
    model.labels = list(labels)
    return model.eval()
