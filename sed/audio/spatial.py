"""DCASE SELD features on 4-channel 24 kHz audio (../shared/specs/seld.md section 2).

- :class:`FOALogMelIV`: 4 log-mel channels + 3 mel-projected intensity-vector channels
  (ACN order Y, Z, X), ``[B, 7, frames, 64]``.
- :class:`MicLogMelGCC`: 4 log-mel channels + 6 GCC-PHAT channels (lags -32..31),
  ``[B, 10, frames, 64]``.
- :class:`FeatureStandardizer`: per channel-and-bin standardisation fitted over a dataset
  (what the baseline does with sklearn's StandardScaler), stored in and applied by a model.

The baseline computes these with librosa one channel at a time; here every step is a batched
tensor op on any device.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import combinations

import librosa
import torch
from torch import nn


def power_to_db(s: torch.Tensor, ref: float = 1.0, amin: float = 1e-10, top_db: float | None = 80.0) -> torch.Tensor:
    """``librosa.power_to_db`` on ``[..., frames, bins]``; the top_db floor is per leading index."""
    out = 10.0 * torch.log10(s.clamp_min(amin)) - 10.0 * torch.log10(torch.tensor(max(amin, ref)))
    if top_db is not None:
        peak = out.amax(dim=(-2, -1), keepdim=True)
        out = torch.maximum(out, peak - top_db)
    return out


def stft_frames(wave: torch.Tensor, n_fft: int, hop: int, win: int, window: torch.Tensor, center: bool = True) -> torch.Tensor:
    """Complex STFT of ``[B, C, T]`` as ``[B, C, frames, n_fft // 2 + 1]`` (librosa conventions:
    periodic Hann window centred in the FFT frame, zero padding of ``n_fft // 2`` when centred)."""
    b, c, t = wave.shape
    spec = torch.stft(
        wave.reshape(b * c, t), n_fft=n_fft, hop_length=hop, win_length=win, window=window,
        center=center, pad_mode="constant", return_complex=True,
    )
    return spec.transpose(1, 2).reshape(b, c, spec.shape[-1], spec.shape[-2])


class _SeldSTFT(nn.Module):
    """Shared STFT and mel front of the DCASE baseline extractor."""

    num_input_channels = 4

    def __init__(self, sample_rate: int = 24000, hop_length: int = 480, win_length: int = 960,
                 n_fft: int = 1024, n_mels: int = 64, top_db: float | None = 80.0):
        super().__init__()
        self.sample_rate, self.hop_length, self.win_length = int(sample_rate), int(hop_length), int(win_length)
        self.n_fft, self.n_mels, self.top_db = int(n_fft), int(n_mels), top_db
        mel = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)
        self.register_buffer("mel_t", torch.from_numpy(mel.T.copy()).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(self.win_length), persistent=False)

    def config(self) -> dict:
        return {"sample_rate": self.sample_rate, "hop_length": self.hop_length, "win_length": self.win_length,
                "n_fft": self.n_fft, "n_mels": self.n_mels, "top_db": self.top_db}

    def num_frames(self, num_samples: int) -> int:
        return num_samples // self.hop_length

    def spectra(self, wave: torch.Tensor) -> torch.Tensor:
        if wave.dim() == 2:
            wave = wave.unsqueeze(0)
        if wave.dim() != 3 or wave.shape[1] != self.num_input_channels:
            raise ValueError(f"expected 4-channel audio [B, 4, T], got shape {tuple(wave.shape)}")
        spec = stft_frames(wave.float(), self.n_fft, self.hop_length, self.win_length, self.window)
        return spec[:, :, : self.num_frames(wave.shape[-1])]

    def logmel(self, spec: torch.Tensor) -> torch.Tensor:
        power = spec.real.square() + spec.imag.square()
        return power_to_db(power @ self.mel_t, top_db=self.top_db)


class FOALogMelIV(_SeldSTFT):
    """``[B, 4, T]`` FOA (ACN W, Y, Z, X; SN3D) -> ``[B, 7, T // hop, n_mels]``:
    [log-mel W, Y, Z, X, IV_y, IV_z, IV_x]. The intensity vector ``Re(conj(W) [Y, Z, X])`` is
    divided by ``1e-8 + |W|^2 + (|Y|^2 + |Z|^2 + |X|^2) / 3`` and projected with the same
    (unnormalised) Slaney mel matrix. Unstandardised."""

    num_output_channels = 7

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        spec = self.spectra(wave)
        w, yzx = spec[:, :1], spec[:, 1:]
        power = spec.real.square() + spec.imag.square()
        iv = (w.real * yzx.real + w.imag * yzx.imag)  # Re(conj(W) * S)
        energy = 1e-8 + power[:, :1] + power[:, 1:].sum(dim=1, keepdim=True) / 3.0
        return torch.cat([self.logmel(spec), (iv / energy) @ self.mel_t], dim=1)


class MicLogMelGCC(_SeldSTFT):
    """``[B, 4, T]`` tetrahedral-mic audio -> ``[B, 10, T // hop, n_mels]``: 4 log-mel channels and
    GCC-PHAT of the 6 pairs (12, 13, 14, 23, 24, 34) at lags -n_mels/2 .. n_mels/2 - 1."""

    num_output_channels = 10
    pairs = tuple(combinations(range(4), 2))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        spec = self.spectra(wave)
        m, n = zip(*self.pairs, strict=True)
        cross = spec[:, list(m)].conj() * spec[:, list(n)]
        phat = torch.polar(torch.ones_like(cross.real), cross.angle())  # exp(j angle R), 1 where R = 0
        cc = torch.fft.irfft(phat, n=self.n_fft)
        half = self.n_mels // 2
        gcc = torch.cat([cc[..., -half:], cc[..., :half]], dim=-1)
        return torch.cat([self.logmel(spec), gcc], dim=1)


class FeatureStandardizer(nn.Module):
    """Per channel-and-bin standardisation of ``[B, C, frames, bins]`` features.

    ``fit`` / ``partial_fit`` accumulate mean and (population) variance in float64 over any
    number of feature tensors, as sklearn's ``StandardScaler.partial_fit`` does; a bin with zero
    variance gets scale 1. The statistics are buffers, so they travel in the model's checkpoint.
    """

    def __init__(self, num_channels: int, num_bins: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(num_channels, num_bins))
        self.register_buffer("scale", torch.ones(num_channels, num_bins))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("m2", torch.zeros(num_channels, num_bins, dtype=torch.float64))

    @property
    def fitted(self) -> bool:
        return bool(self.count > 0)

    def partial_fit(self, feats: torch.Tensor) -> FeatureStandardizer:
        """Add ``[C, frames, bins]`` or ``[B, C, frames, bins]`` features to the statistics
        (Chan et al.'s parallel update of mean and sum of squared deviations)."""
        x = feats.detach().to(device=self.m2.device, dtype=torch.float64)
        if x.dim() == 3:
            x = x.unsqueeze(0)
        x = x.transpose(0, 1).reshape(x.shape[1], -1, x.shape[-1])  # [C, N, bins]
        n_b = x.shape[1]
        if n_b == 0:
            return self
        mean_b = x.mean(dim=1)
        m2_b = ((x - mean_b[:, None]) ** 2).sum(dim=1)
        n_a = float(self.count)
        total = n_a + n_b
        mean_a = self.mean.double()
        delta = mean_b - mean_a
        self.m2 += m2_b + delta**2 * (n_a * n_b / total)
        self.mean.copy_(mean_a + delta * (n_b / total))
        self.count.fill_(total)
        std = (self.m2 / total).sqrt()
        self.scale.copy_(torch.where(std == 0, torch.ones_like(std), std))
        return self

    def fit(self, features: Iterable[torch.Tensor]) -> FeatureStandardizer:
        self.reset()
        for f in features:
            self.partial_fit(f)
        return self

    def reset(self) -> None:
        self.mean.zero_()
        self.scale.fill_(1.0)
        self.count.zero_()
        self.m2.zero_()

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return (feats - self.mean[:, None, :]) / self.scale[:, None, :]
