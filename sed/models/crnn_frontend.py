"""The DCASE 2024 Task 4 baseline's front end (DESED_task, ``local/sed_trainer_pretrained.py``): log-mel
features scaled per clip, held inside the CRNN (:mod:`sed.models.crnn`).

Waveform ``[B, T]`` at 16 kHz -> ``torchaudio.transforms.MelSpectrogram`` (n_fft = win = 2048, hop 256,
128 mels over 0..8000 Hz, a *symmetric* Hamming window (``periodic=False``), power 1: magnitudes,
``center=True`` with reflect padding, HTK mel scale, no filter-bank norm) -> ``20 log10(max(x, 1e-5))``
(``AmplitudeToDB("amplitude")`` with the reference's ``amin = 1e-5``) -> clamp to [-50, 80] dB -> the
reference's ``TorchScaler("instance", "minmax", dims=(1, 2))``: per clip over all bins and frames,
``2 (x - min) / (max - min + 1e-8) - 1``, so every clip spans [-1, 1]. Output ``[B, frames, mels]``
(time first, as every sed front end); ``frames = 1 + T // hop``.

A clip shorter than :attr:`CRNNMel.min_samples` (the reflect padding needs more than ``n_fft / 2``
samples, the CNN at least one output frame) is zero-padded to it.
"""

from __future__ import annotations

import torch
import torchaudio
from torch import nn

__all__ = ["CRNNMel"]

_AMIN, _DB_MIN, _DB_MAX, _SCALER_EPS = 1e-5, -50.0, 80.0, 1e-8


class CRNNMel(nn.Module):
    """The baseline's features; see the module docstring."""

    def __init__(
        self,
        sample_rate: int = 16000,
        n_mels: int = 128,
        n_fft: int = 2048,
        hop_length: int = 256,
        f_min: float = 0.0,
        f_max: float | None = 8000.0,
        min_frames: int = 1,
    ):
        super().__init__()
        self.sample_rate, self.n_mels, self.n_fft, self.hop = (
            int(sample_rate),
            int(n_mels),
            int(n_fft),
            int(hop_length),
        )
        with torch.device("cpu"):  # torchaudio checks the filter bank's numbers (also on the meta device)
            self.mel = self._mel(f_min, f_max)
        self.min_samples = max(self.n_fft // 2 + 1, (int(min_frames) - 1) * self.hop)

    def _mel(self, f_min: float, f_max: float | None) -> nn.Module:
        return torchaudio.transforms.MelSpectrogram(
            sample_rate=self.sample_rate,
            n_fft=self.n_fft,
            win_length=self.n_fft,
            hop_length=self.hop,
            f_min=float(f_min),
            f_max=None if f_max is None else float(f_max),
            n_mels=self.n_mels,
            window_fn=torch.hamming_window,
            wkwargs={"periodic": False},
            power=1.0,
        )

    def num_frames(self, num_samples: int) -> int:
        """Feature frames of a clip of ``num_samples`` samples (after the padding of short clips)."""
        return 1 + max(int(num_samples), self.min_samples) // self.hop

    def log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` -> clamped dB magnitudes ``[B, mels, frames]`` (before the per-clip scaling)."""
        if wave.shape[-1] < self.min_samples and not torch.compiler.is_exporting():
            wave = nn.functional.pad(wave, (0, self.min_samples - wave.shape[-1]))
        mel = self.mel(wave)
        return torchaudio.functional.amplitude_to_DB(mel, 20.0, _AMIN, 0.0, None).clamp(_DB_MIN, _DB_MAX)

    @staticmethod
    def scale(db: torch.Tensor) -> torch.Tensor:
        """The reference's instance min-max scaler over ``dims (1, 2)``: each clip to [-1, 1]."""
        lo, hi = db.amin(dim=(1, 2), keepdim=True), db.amax(dim=(1, 2), keepdim=True)
        return (db - lo) / (hi - lo + _SCALER_EPS) * 2 - 1

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """Mono waveforms ``[B, T]`` (one length) -> scaled features ``[B, frames, mels]``."""
        if wave.dim() == 1:
            wave = wave.unsqueeze(0)
        return self.scale(self.log_mel(wave.float())).transpose(1, 2)
