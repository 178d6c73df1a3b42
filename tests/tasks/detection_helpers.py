"""Test helpers of the detection task: a tiny frame model (the sed.models.frames contract) and hand-made
detection batches (the format DetectionDataModule serves) of tones at known times."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sed.data.events import pad_events
from sed.models.frames import FrameHead, clip_logits, frame_mask

SR = 8000
HOP = 256  # samples per output frame: 32 ms
FREQS = (500.0, 1500.0, 2750.0)  # one tone per class


@pytest.fixture
def one_thread():
    """One torch thread: the tiny models of these tests run far faster on a shared CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class TinyFrames(nn.Module):
    """Log spectra of non-overlapping frames of ``HOP`` samples -> a conv over ``context`` frames -> a
    FrameHead."""

    sample_rate = SR
    frame_hop = HOP / SR

    def __init__(
        self,
        num_classes: int = 3,
        labels=None,
        frame_pooling: str = "attention",
        dim: int = 16,
        context: int = 1,
    ):
        super().__init__()
        self.num_classes, self.labels, self.frame_pooling = num_classes, labels, frame_pooling
        self.proj = nn.Linear(HOP // 2 + 1, dim)
        self.conv = nn.Conv1d(dim, dim, context, padding=context // 2)
        self.head = FrameHead(dim, num_classes, frame_pooling)
        self.sed_config = {"name": "tiny_frames", "kwargs": {"num_classes": num_classes}}

    def num_frames(self, num_samples: int) -> int:
        return num_samples // HOP

    def forward_frames(self, wave, lengths=None):
        b, n = wave.shape[0], self.num_frames(wave.shape[-1])
        x = wave[:, : n * HOP].reshape(b, n, HOP)
        spec = torch.fft.rfft(x * torch.hann_window(HOP, device=wave.device)).abs().add(1e-3).log()
        h = torch.relu(self.proj(spec))
        h = torch.relu(self.conv(h.transpose(1, 2))).transpose(1, 2)
        valid = None if lengths is None else torch.tensor([self.num_frames(int(s)) for s in lengths])
        return self.head(h, frame_mask(n, valid, wave.device))

    def forward(self, wave, lengths=None):
        return clip_logits(self.forward_frames(wave, lengths)[1])


def fake_create_model(name, num_classes=None, pretrained=None, **kwargs):
    """Stands in for sed.models.create_model (monkeypatched): a TinyFrames, or a clip model for ``clip``."""
    if name == "clip":
        m = TinyFrames(num_classes or 3, **kwargs)
        m.frame_pooling = None
        return m
    return TinyFrames(num_classes or 3, **kwargs)


def tone_clip(events, seconds: float, gen: torch.Generator, noise: float = 0.05) -> torch.Tensor:
    """A clip of ``seconds`` with one tone per event (class -> FREQS) between its onset and offset."""
    n = int(seconds * SR)
    t = torch.arange(n) / SR
    x = noise * torch.randn(n, generator=gen)
    for onset, offset, cls in events:
        on = (t >= onset) & (t < offset)
        x = x + 0.3 * on * torch.sin(2 * math.pi * FREQS[int(cls)] * t)
    return x


def random_events(
    gen: torch.Generator, seconds: float, num_classes: int = 3
) -> list[tuple[float, float, int]]:
    """One or two events of distinct classes, each 0.3-1.0 s long, inside the clip."""
    k = int(torch.randint(1, 3, (), generator=gen))
    classes = torch.randperm(num_classes, generator=gen)[:k].tolist()
    out = []
    for c in classes:
        dur = 0.3 + 0.7 * float(torch.rand((), generator=gen))
        onset = float(torch.rand((), generator=gen)) * (seconds - dur)
        out.append((round(onset, 3), round(onset + dur, 3), c))
    return out


def make_batch(events_per_clip, sources, seconds: float = 1.0, seed: int = 0, num_classes: int = 3) -> dict:
    """A detection batch of tone clips (strong and validation clips carry their events; weak clips their
    clip labels; unlabelled clips neither)."""
    gen = torch.Generator().manual_seed(seed)
    waves = torch.stack([tone_clip(ev, seconds, gen) for ev in events_per_clip])
    weak = torch.zeros(len(sources), num_classes)
    mask = torch.zeros(len(sources), num_classes, dtype=torch.bool)
    kept = []
    for i, (ev, src) in enumerate(zip(events_per_clip, sources)):
        if src != 2:
            for _, _, c in ev:
                weak[i, c] = 1.0
            mask[i] = True
        kept.append(ev if src == 0 else [])
    return {
        "wave": waves,
        "lengths": torch.full((len(sources),), waves.shape[-1], dtype=torch.long),
        "events": pad_events(kept),
        "weak": weak,
        "source": torch.tensor(sources, dtype=torch.long),
        "class_mask": mask,
        "path": [f"clip{seed}_{i}.wav" for i in range(len(sources))],
        "duration": torch.full((len(sources),), seconds),
    }
