"""CLAP's front end (:mod:`sed.models.clap`): transformers' ``ClapFeatureExtractor`` for one clip, batched
and as a module that exports to ONNX.

1. **repeatpad** (the extractor's ``padding="repeatpad"``): a clip of ``n`` valid samples shorter than
   ``clip_samples`` is repeated whole ``clip_samples // n`` times and zero-padded to ``clip_samples``; a
   longer one is cut to its first ``clip_samples`` (the classifier scores the centre of a long file, see
   :mod:`sed.inference.classifier`; the extractor's random crop (``rand_trunc``) and random-chunk fusion of
   long clips are not reproduced, so a result never depends on a random draw);
2. the log-mel spectrogram of :class:`~sed.models.ced_frontend.CEDMel` with the extractor's parameters
   (1024-point periodic Hann STFT, reflect padding, hop 480, power dB floored at 1e-10, no ``top_db``): the
   Slaney mel filters of the unfused path (``mel_filters_slaney``) or the HTK ones of the fused path
   (``mel_filters``), ``f_min``..``f_max``;
3. ``[B, 1, frames, n_mels]`` (unfused) or the four identical channels of a clip that is not longer than
   the clip, ``[B, 4, frames, n_mels]`` (fused).

Each clip is padded from its own valid length (``lengths``), so a clip gets the same features in a batch
as alone.
"""

from __future__ import annotations

import torch
from torch import nn

from sed.audio.features import mono_batch
from sed.models.ced_frontend import CEDMel

__all__ = ["ClapMel", "repeat_pad"]


def repeat_pad(wave: torch.Tensor, clip: int, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """``[B, T]`` -> ``[B, clip]``: each row's first ``lengths[i]`` samples (default all ``T``) repeated whole
    as often as they fit in ``clip`` (at least once), then zeros; a row longer than ``clip`` is cut."""
    b, t = wave.shape
    n = (
        torch.full((b,), t, device=wave.device)
        if lengths is None
        else torch.as_tensor(lengths, device=wave.device)
    )
    n = n.clamp(1, t).long()[:, None]  # [B, 1]
    pos = torch.arange(clip, device=wave.device)[None, :]  # [1, clip]
    # a tensor // tensor: ONNX export has no int // tensor (aten.floor_divide of a Python int)
    reps = torch.div(torch.full_like(n, clip), n, rounding_mode="floor").clamp_min(1)
    src = torch.remainder(pos, n).clamp_max(t - 1)
    return torch.gather(wave, 1, src.expand(b, clip)) * (pos < reps * n).to(wave.dtype)


class ClapMel(nn.Module):
    """``[B, T]`` waveforms at ``sample_rate`` -> ``[B, 1 or 4, frames, n_mels]`` dB (module docstring)."""

    def __init__(
        self,
        sample_rate: int = 48000,
        n_mels: int = 64,
        clip_seconds: float = 10.0,
        n_fft: int = 1024,
        hop_length: int = 480,
        f_min: float = 50.0,
        f_max: float = 14000.0,
        fused: bool = False,
    ):
        super().__init__()
        self.fused = bool(fused)
        self.clip_samples = int(round(float(clip_seconds) * sample_rate))
        if self.clip_samples < n_fft:
            raise ValueError(f"clip_seconds={clip_seconds} is shorter than one {n_fft}-sample frame")
        slaney = None if self.fused else "slaney"
        self.mel = CEDMel(
            sample_rate, n_mels, None, n_fft, n_fft, hop_length, f_min, f_max, None, slaney or "htk", slaney
        )

    @property
    def sample_rate(self) -> int:
        return self.mel.sample_rate

    @property
    def win(self) -> int:
        return self.mel.n_fft

    @property
    def hop(self) -> int:
        return self.mel.hop

    def num_frames(self, num_samples: int | None = None) -> int:
        """Frames of every clip (all are padded or cut to ``clip_samples``)."""
        return self.mel.num_frames(self.clip_samples)

    def config(self) -> dict:
        return {
            **self.mel.config(),
            "kind": "clap_mel",
            "clip_samples": self.clip_samples,
            "fused": self.fused,
        }

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        feats = self.mel(repeat_pad(mono_batch(wave), self.clip_samples, lengths)).unsqueeze(1)
        return feats.expand(-1, 4, -1, -1) if self.fused else feats
