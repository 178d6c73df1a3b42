"""Timestamped events and the frame targets made from them.

An event is ``(onset, offset, class index)`` in seconds. :func:`events_to_frames` lays events on frames of
``hop`` seconds as the DCASE baseline's encoder does: frames ``floor(onset / hop)`` up to (not including)
``ceil(offset / hop)`` are active, clipped to the frames there are. A padded batch carries its events as
``[B, E, 3]`` rows ``(onset, offset, class)``, unused rows filled with -1 (:func:`pad_events`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["events_to_frames", "pad_events", "batch_frame_targets"]


def events_to_frames(
    events: Sequence[tuple[float, float, int]], num_frames: int, hop: float, num_classes: int
) -> torch.Tensor:
    """``[num_frames, num_classes]`` float targets: 1 where an event is active."""
    y = torch.zeros(num_frames, num_classes)
    for onset, offset, cls in events:
        if cls < 0:
            continue
        a = max(0, min(num_frames, math.floor(onset / hop + 1e-9)))
        b = max(0, min(num_frames, math.ceil(offset / hop - 1e-9)))
        if b > a:
            y[a:b, int(cls)] = 1.0
    return y


def pad_events(rows: Sequence[Sequence[tuple[float, float, int]]]) -> torch.Tensor:
    """Events of each clip -> ``[B, max(E, 1), 3]``, padded with -1."""
    width = max([len(r) for r in rows] + [1])
    out = torch.full((len(rows), width, 3), -1.0)
    for i, r in enumerate(rows):
        for j, (onset, offset, cls) in enumerate(r):
            out[i, j] = torch.tensor([float(onset), float(offset), float(cls)])
    return out


def batch_frame_targets(events: torch.Tensor, num_frames: int, hop: float, num_classes: int) -> torch.Tensor:
    """``[B, E, 3]`` padded events -> ``[B, num_frames, num_classes]`` targets, on ``events``' device in one
    pass (no loop over clips: it runs every training step); the frames of each event as
    :func:`events_to_frames` lays them."""
    ev = events.double()
    onset, offset, cls = ev[..., 0], ev[..., 1], ev[..., 2].long()
    first = torch.floor(onset / hop + 1e-9).clamp(0, num_frames)
    end = torch.ceil(offset / hop - 1e-9).clamp(0, num_frames)
    frames = torch.arange(num_frames, device=events.device, dtype=ev.dtype)
    active = (frames >= first[..., None]) & (frames < end[..., None]) & (cls >= 0)[..., None]  # [B, E, F]
    which = torch.nn.functional.one_hot(cls.clamp_min(0), num_classes).to(torch.float32)  # [B, E, C]
    return torch.einsum("bef,bec->bfc", active.to(torch.float32), which).clamp_max(1.0)
