"""DCASE SELD features on 4-channel 24 kHz audio (../shared/specs/seld.md section 2).

- :class:`FOALogMelIV`: 4 log-mel channels + 3 mel-projected intensity-vector channels
  (ACN order Y, Z, X), ``[B, 7, frames, 64]``.
- :class:`MicLogMelGCC`: 4 log-mel channels + 6 GCC-PHAT channels (lags -32..31),
  ``[B, 10, frames, 64]``.
- :class:`FeatureStandardizer`: per channel-and-bin standardisation fitted over a dataset
  (what the baseline does with sklearn's StandardScaler), stored in and applied by a model.

The baseline (``cls_feature_class.py`` of sharathadavanne/seld-dcase2023) computes these with
librosa one channel at a time; tests/reference/seld_features checks these front ends and the
standardiser against that code's own outputs. Here every step is a batched tensor op on any
device. On CPU the frames are processed in chunks of ``chunk_frames`` so that the STFT, the
power/intensity terms and the mel projection of a chunk stay in cache (the whole-file version is
memory bound and several times slower); on accelerators the whole batch is one chunk.

The STFT is centred with zero padding, as ``librosa.stft`` pads since librosa 0.9.0; run with librosa
<= 0.8.1 (``pad_mode='reflect'``; plausibly what the baseline's README setup, python 3.8.11 and
torch 1.10.0 of 2021, had), the baseline's first frame of every file differs
(tests/reference/seld_features/README.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from itertools import combinations

import librosa
import torch
import torch.nn.functional as F
from torch import nn


def power_to_db(
    s: torch.Tensor, ref: float = 1.0, amin: float = 1e-10, top_db: float | None = 80.0
) -> torch.Tensor:
    """``librosa.power_to_db`` on ``[..., frames, bins]``; the top_db floor is per leading index."""
    out = 10.0 * torch.log10(s.clamp_min(amin))
    offset = 10.0 * math.log10(max(amin, abs(ref)))
    if offset != 0.0:
        out = out - offset
    if top_db is not None and out.numel() > 0:
        peak = out.amax(dim=(-2, -1), keepdim=True)
        out = torch.maximum(out, peak - top_db)
    return out


def stft_frames(
    wave: torch.Tensor, n_fft: int, hop: int, win: int, window: torch.Tensor, center: bool = True
) -> torch.Tensor:
    """Complex STFT of ``[B, C, T]`` as ``[B, C, frames, n_fft // 2 + 1]`` (librosa conventions:
    periodic Hann window centred in the FFT frame, zero padding of ``n_fft // 2`` when centred)."""
    b, c, t = wave.shape
    spec = torch.stft(
        wave.reshape(b * c, t),
        n_fft=n_fft,
        hop_length=hop,
        win_length=win,
        window=window,
        center=center,
        pad_mode="constant",
        return_complex=True,
    )
    return spec.transpose(1, 2).reshape(b, c, spec.shape[-1], spec.shape[-2])


class _SeldSTFT(nn.Module):
    """Shared STFT and mel front of the DCASE baseline extractor.

    ``chunk_frames`` is the number of STFT frames processed at a time on CPU (on accelerators,
    whole clips at once); it changes speed and memory, never the result. ``dc_offset`` is added to
    every sample before the STFT, as the baseline does (``audio / 32768 + 1e-8``, spec section 2
    step 1). Its effect is tiny but not nil: about 1e-3 dB in the lowest mel bin of quiet frames,
    more in near-silent input, where it also decides the GCC-PHAT phase of the DC bin;
    ``dc_offset=0`` leaves the audio untouched."""

    num_input_channels = 4
    num_output_channels = 4

    def __init__(
        self,
        sample_rate: int = 24000,
        hop_length: int = 480,
        win_length: int = 960,
        n_fft: int = 1024,
        n_mels: int = 64,
        top_db: float | None = 80.0,
        dc_offset: float = 1e-8,
        chunk_frames: int = 256,
    ):
        super().__init__()
        self.sample_rate, self.hop_length, self.win_length = (
            int(sample_rate),
            int(hop_length),
            int(win_length),
        )
        self.n_fft, self.n_mels, self.top_db, self.dc_offset = (
            int(n_fft),
            int(n_mels),
            top_db,
            float(dc_offset),
        )
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length {self.win_length} exceeds n_fft {self.n_fft}")
        self.chunk_frames = max(1, int(chunk_frames))
        mel = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)
        self.register_buffer("mel_t", torch.from_numpy(mel.T.copy()).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(self.win_length), persistent=False)
        left = (self.n_fft - self.win_length) // 2  # librosa.util.pad_center, torch.stft
        self.register_buffer(
            "fft_window", F.pad(self.window, (left, self.n_fft - self.win_length - left)), persistent=False
        )

    def config(self) -> dict:
        return {
            "sample_rate": self.sample_rate,
            "hop_length": self.hop_length,
            "win_length": self.win_length,
            "n_fft": self.n_fft,
            "n_mels": self.n_mels,
            "top_db": self.top_db,
            "dc_offset": self.dc_offset,
        }

    def num_frames(self, num_samples: int) -> int:
        return num_samples // self.hop_length

    def _check(self, wave: torch.Tensor) -> torch.Tensor:
        if wave.dim() == 2:
            wave = wave.unsqueeze(0)
        if wave.dim() != 3 or wave.shape[1] != self.num_input_channels:
            raise ValueError(f"expected 4-channel audio [B, 4, T] or [4, T], got shape {tuple(wave.shape)}")
        wave = wave.float()
        return wave + self.dc_offset if self.dc_offset else wave

    def _framed(self, wave: torch.Tensor) -> torch.Tensor:
        """Centred (zero-padded) frames ``[B, 4, T // hop (+1), n_fft]``, a view of one padded copy."""
        pad = self.n_fft // 2
        return F.pad(wave, (pad, pad)).unfold(-1, self.n_fft, self.hop_length)

    def _chunks(self, wave: torch.Tensor, nf: int) -> Iterator[tuple[slice, slice]]:
        """(batch slice, frame slice) pairs covering ``[B, nf]``: on CPU ``chunk_frames`` frames at a
        time (several short clips per chunk); on accelerators whole clips, up to 65536 frames a chunk."""
        b = wave.shape[0]
        step = self.chunk_frames if wave.device.type == "cpu" else max(self.chunk_frames, 65536)
        if nf <= step:
            per = max(1, step // max(nf, 1))
            for i in range(0, b, per):
                yield slice(i, min(b, i + per)), slice(0, nf)
        else:
            for i in range(b):
                for s in range(0, nf, step):
                    yield slice(i, i + 1), slice(s, min(nf, s + step))

    def spectra(self, wave: torch.Tensor) -> torch.Tensor:
        """Complex STFT ``[B, 4, T // hop, n_fft // 2 + 1]`` of the baseline (first ``T // hop`` frames)."""
        wave = self._check(wave)
        frames = self._framed(wave)[:, :, : self.num_frames(wave.shape[-1])]
        return torch.fft.rfft(frames * self.fft_window)

    def _chunk(self, re: torch.Tensor, im: torch.Tensor, out: torch.Tensor) -> None:
        """Write ``[b, C_out, n, n_mels]`` features of one chunk into ``out``; the first 4 channels
        are mel power (converted to dB once the whole file is done)."""
        raise NotImplementedError

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        wave = self._check(wave)
        b, nf = wave.shape[0], self.num_frames(wave.shape[-1])
        out = wave.new_empty(b, self.num_output_channels, nf, self.n_mels)
        if nf == 0:
            return out
        frames = self._framed(wave)
        for bs, fs in self._chunks(wave, nf):
            spec = torch.view_as_real(torch.fft.rfft(frames[bs, :, fs] * self.fft_window))
            self._chunk(spec[..., 0], spec[..., 1], out[bs, :, fs])
        out[:, :4] = power_to_db(out[:, :4], top_db=self.top_db)
        return out


class FOALogMelIV(_SeldSTFT):
    """``[B, 4, T]`` FOA (ACN W, Y, Z, X; SN3D) -> ``[B, 7, T // hop, n_mels]``:
    [log-mel W, Y, Z, X, IV_y, IV_z, IV_x]. The intensity vector ``Re(conj(W) [Y, Z, X])`` is
    divided by ``1e-8 + |W|^2 + (|Y|^2 + |Z|^2 + |X|^2) / 3`` and projected with the same
    (unnormalised) Slaney mel matrix. Unstandardised. ``[4, T]`` input gives a batch of one."""

    num_output_channels = 7

    def _chunk(self, re: torch.Tensor, im: torch.Tensor, out: torch.Tensor) -> None:
        b, _, n, k = re.shape
        buf = re.new_empty(b, 7, n, k)
        power, iv = buf[:, :4], buf[:, 4:]
        torch.mul(re, re, out=power)
        power.addcmul_(im, im)
        energy = power[:, 1:].sum(dim=1).mul_(1.0 / 3.0).add_(power[:, 0]).add_(1e-8)
        torch.mul(re[:, 1:], re[:, :1], out=iv)  # Re(conj(W) S) = Wr Sr + Wi Si
        iv.addcmul_(im[:, 1:], im[:, :1]).div_(energy.unsqueeze(1))
        out.copy_(buf @ self.mel_t)


class MicLogMelGCC(_SeldSTFT):
    """``[B, 4, T]`` tetrahedral-mic audio -> ``[B, 10, T // hop, n_mels]``: 4 log-mel channels and
    GCC-PHAT of the 6 pairs (12, 13, 14, 23, 24, 34) at lags -n_mels/2 .. n_mels/2 - 1:
    ``irfft(exp(j angle(conj(S_m) S_n)))``, where a zero cross-spectrum counts as phase 0.
    ``[4, T]`` input gives a batch of one."""

    num_output_channels = 10
    pairs = tuple(combinations(range(4), 2))
    #: below this |R|^2 the unit phasor is taken from atan2 (exactness near float32 underflow)
    _tiny = 1e-30

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # irfft(P, n=n_fft) at lags -n_mels/2 .. n_mels/2 - 1 as two real matrices on Re P and Im P
        # (a zero imaginary part at DC and Nyquist is ignored, as by irfft)
        n, half = self.n_fft, self.n_mels // 2
        k = torch.arange(n // 2 + 1, dtype=torch.float64)[:, None]
        lags = torch.arange(-half, self.n_mels - half, dtype=torch.float64)[None, :]
        weight = torch.full_like(k, 2.0)
        weight[0] = 1.0
        if n % 2 == 0:
            weight[-1] = 1.0
        angle = 2 * math.pi * k * lags / n
        self.register_buffer("gcc_cos", (weight * torch.cos(angle) / n).float(), persistent=False)
        self.register_buffer("gcc_sin", (-weight * torch.sin(angle) / n).float(), persistent=False)

    def _chunk(self, re: torch.Tensor, im: torch.Tensor, out: torch.Tensor) -> None:
        b, _, n, k = re.shape
        power = re.new_empty(b, 4, n, k)
        torch.mul(re, re, out=power)
        power.addcmul_(im, im)
        out[:, :4] = power @ self.mel_t
        # R = conj(S_m) S_n for the pairs, grouped by m: (0; 1,2,3), (1; 2,3), (2; 3)
        rr, ri = re.new_empty(b, len(self.pairs), n, k), re.new_empty(b, len(self.pairs), n, k)
        j = 0
        for m in range(3):
            sl = slice(j, j + 3 - m)
            torch.mul(re[:, m : m + 1], re[:, m + 1 :], out=rr[:, sl]).addcmul_(
                im[:, m : m + 1], im[:, m + 1 :]
            )
            torch.mul(re[:, m : m + 1], im[:, m + 1 :], out=ri[:, sl]).addcmul_(
                im[:, m : m + 1], re[:, m + 1 :], value=-1.0
            )
            j += 3 - m
        # PHAT: R / |R| without atan2/sin/cos
        mag2 = rr.square().addcmul_(ri, ri)
        tiny = (mag2 < self._tiny) if bool(mag2.amin() < self._tiny) else None
        inv = mag2.clamp_min_(self._tiny).rsqrt_()
        rr.mul_(inv)
        ri.mul_(inv)
        if tiny is not None:  # rare: the exact (scale-invariant) angle; a zero R (either sign) -> 1 + 0j
            r_t, i_t = rr[tiny], ri[tiny]
            ang = torch.where((r_t == 0) & (i_t == 0), 0.0, torch.atan2(i_t, r_t))
            rr[tiny] = torch.cos(ang)
            ri[tiny] = torch.sin(ang)
        gcc = (rr @ self.gcc_cos).add_(ri @ self.gcc_sin)
        out[:, 4:] = gcc


class FeatureStandardizer(nn.Module):
    """Per channel-and-bin standardisation of ``[B, C, frames, bins]`` features.

    ``fit`` / ``partial_fit`` accumulate mean and (population) variance in float64 over any
    number of feature tensors, as sklearn's ``StandardScaler.partial_fit`` does; a bin with zero
    variance (up to float64 rounding, sklearn's test) gets scale 1. The statistics are buffers,
    so they travel in the model's checkpoint.
    """

    def __init__(self, num_channels: int, num_bins: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(num_channels, num_bins))
        self.register_buffer("scale", torch.ones(num_channels, num_bins))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean64", torch.zeros(num_channels, num_bins, dtype=torch.float64))
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
        if x.dim() != 4 or tuple(x.shape[1:2]) + tuple(x.shape[-1:]) != tuple(self.mean.shape):
            raise ValueError(
                f"expected features [B, {self.mean.shape[0]}, frames, {self.mean.shape[1]}], "
                f"got shape {tuple(feats.shape)}"
            )
        x = x.transpose(0, 1).reshape(x.shape[1], -1, x.shape[-1])  # [C, N, bins]
        n_b = x.shape[1]
        if n_b == 0:
            return self
        mean_b = x.mean(dim=1)
        m2_b = ((x - mean_b[:, None]) ** 2).sum(dim=1)
        n_a = float(self.count)
        total = n_a + n_b
        delta = mean_b - self.mean64
        self.m2 += m2_b + delta**2 * (n_a * n_b / total)
        self.mean64 += delta * (n_b / total)
        self.count.fill_(total)
        self._update()
        return self

    def _update(self) -> None:
        n = float(self.count)
        var = self.m2 / n
        eps = torch.finfo(torch.float64).eps
        constant = var <= n * eps * var + (n * self.mean64 * eps) ** 2  # sklearn's _is_constant_feature
        self.mean.copy_(self.mean64)
        self.scale.copy_(torch.where(constant, torch.ones_like(var), var.sqrt()))

    def fit(self, features: Iterable[torch.Tensor]) -> FeatureStandardizer:
        self.reset()
        for f in features:
            self.partial_fit(f)
        return self

    def reset(self) -> None:
        self.mean.zero_()
        self.scale.fill_(1.0)
        self.count.zero_()
        self.mean64.zero_()
        self.m2.zero_()

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return (feats - self.mean[:, None, :]) / self.scale[:, None, :]
