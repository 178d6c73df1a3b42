"""Feature front ends (waveform -> features), each an ``nn.Module`` on batched waveforms.

- :class:`KaldiFbank`: the AST front end (Kaldi fbank + pad/crop + AST normalisation).
- :class:`LogMel`: librosa-compatible log-mel (Slaney filters, ``power_to_db``).
- :class:`FOALogMelIV`, :class:`MicLogMelGCC`, :class:`FeatureStandardizer`: the DCASE SELD
  features, defined in :mod:`sed.audio.spatial` and re-exported here.

Models hold their front end, so training and inference compute the same features.
"""

from __future__ import annotations

import librosa
import torch
import torch.nn.functional as F
from torch import nn
from torchaudio.compliance import kaldi

from sed.audio.spatial import FeatureStandardizer, FOALogMelIV, MicLogMelGCC, power_to_db, stft_frames

__all__ = [
    "FOALogMelIV",
    "FeatureStandardizer",
    "KaldiFbank",
    "LogMel",
    "MicLogMelGCC",
    "build_frontend",
    "power_to_db",
]

AUDIOSET_MEAN = -4.2677393
AUDIOSET_STD = 4.5689974


def _as_batch(wave: torch.Tensor) -> torch.Tensor:
    """``[T]``, ``[B, T]`` or ``[B, C, T]`` -> mono ``[B, T]`` (channels averaged)."""
    if wave.dim() == 1:
        return wave.unsqueeze(0)
    if wave.dim() == 3:
        return wave.mean(dim=1) if wave.shape[1] > 1 else wave[:, 0]
    if wave.dim() != 2:
        raise ValueError(f"expected a waveform [T], [B, T] or [B, C, T], got shape {tuple(wave.shape)}")
    return wave


def mono_batch(wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """``[T]``, ``[B, T]`` or ``[B, C, T]`` -> float32 mono ``[B, T]``, samples past ``lengths`` (valid
    samples per clip) set to 0, so that a clip gets the same features in a padded batch as alone."""
    wave = _as_batch(wave).float()
    if lengths is not None:
        pos = torch.arange(wave.shape[1], device=wave.device)
        wave = wave.masked_fill(pos[None, :] >= torch.as_tensor(lengths, device=wave.device)[:, None], 0.0)
    return wave


class KaldiFbank(nn.Module):
    """Exactly AST's features, batched: ``[B, T]`` 16 kHz waveforms -> ``[B, target_length, bins]``.

    Kaldi fbank semantics as ``torchaudio.compliance.kaldi.fbank(htk_compat=True,
    use_energy=False, window_type='hanning', dither=0, frame_shift=10)``: 25 ms frames, 10 ms
    shift, snip edges, per-frame DC removal, pre-emphasis 0.97, Hann window, 512-point power
    spectrum, HTK mel bins from 20 Hz to Nyquist, natural log floored at float eps. Then zero
    pad at the end (or keep the head) to ``target_length`` frames and normalise
    ``(x - mean) / (2 * std)``.

    Frames are processed in chunks of ``chunk_frames`` so the working set stays in cache:
    batching then costs no speed against a per-clip loop on CPU.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        num_mel_bins: int = 128,
        target_length: int | None = 1024,
        mean: float = AUDIOSET_MEAN,
        std: float = AUDIOSET_STD,
        frame_length_ms: float = 25.0,
        frame_shift_ms: float = 10.0,
        preemphasis: float = 0.97,
        low_freq: float = 20.0,
        high_freq: float = 0.0,
        normalize: bool = True,
        chunk_frames: int = 1024,
    ):
        super().__init__()
        self.sample_rate = int(sample_rate)
        self.num_mel_bins = int(num_mel_bins)
        self.target_length = None if target_length is None else int(target_length)
        self.mean, self.std, self.normalize = float(mean), float(std), bool(normalize)
        self.preemphasis = float(preemphasis)
        self.win = int(sample_rate * frame_length_ms / 1000)
        self.hop = int(sample_rate * frame_shift_ms / 1000)
        self.n_fft = 1 << (self.win - 1).bit_length()
        self.chunk_frames = int(chunk_frames)
        banks, _ = kaldi.get_mel_banks(
            num_mel_bins, self.n_fft, float(sample_rate), low_freq, high_freq, 100.0, -500.0, 1.0
        )
        banks = F.pad(banks, (0, 1))  # [bins, n_fft//2 + 1], Nyquist bin unused, as in kaldi.fbank
        self.register_buffer("mel_t", banks.T.contiguous().float(), persistent=False)
        self.register_buffer("window", torch.hann_window(self.win, periodic=False), persistent=False)
        self.low_freq, self.high_freq = float(low_freq), float(high_freq)

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate}, num_mel_bins={self.num_mel_bins}, "
            f"target_length={self.target_length}, "
            f"mean={self.mean}, std={self.std}"
        )

    def config(self) -> dict:
        return {
            "sample_rate": self.sample_rate,
            "num_mel_bins": self.num_mel_bins,
            "target_length": self.target_length,
            "mean": self.mean,
            "std": self.std,
        }

    def num_frames(self, num_samples: int) -> int:
        return 0 if num_samples < self.win else 1 + (num_samples - self.win) // self.hop

    @property
    def mask_value(self) -> float:
        """What a zero log-fbank value becomes in the output: AST's SpecAugment masks to 0 before
        normalisation, so masks on these features fill with this value."""
        return (0.0 - self.mean) / (2 * self.std) if self.normalize else 0.0

    def _fbank_rows(self, frames: torch.Tensor) -> torch.Tensor:
        """``[N, win]`` raw frames -> ``[N, bins]`` log mel energies (Kaldi's per-frame pipeline)."""
        x = frames - frames.mean(dim=1, keepdim=True)
        x = torch.cat([x[:, :1] * (1 - self.preemphasis), x[:, 1:] - self.preemphasis * x[:, :-1]], dim=1)
        spec = torch.fft.rfft(x * self.window, n=self.n_fft)
        power = spec.real.square() + spec.imag.square()
        return (power @ self.mel_t).clamp_min(torch.finfo(power.dtype).eps).log()

    def fbank(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Unpadded, unnormalised log fbank ``[B, frames, bins]``; frames past ``lengths`` are 0."""
        wave = _as_batch(wave).float()
        b, t = wave.shape
        n = self.num_frames(t)
        out = wave.new_zeros(b, n, self.num_mel_bins)
        if n == 0:
            return out
        frames = wave.unfold(1, self.win, self.hop)  # [B, n, win], a view
        flat_out = out.view(b * n, -1)
        step = max(1, self.chunk_frames)
        if step >= n:  # whole clips per chunk
            per = max(1, step // n)
            for i in range(0, b, per):
                j = min(b, i + per)
                flat_out[i * n : j * n] = self._fbank_rows(frames[i:j].reshape(-1, self.win))
        else:
            for i in range(b):
                for s in range(0, n, step):
                    e = min(n, s + step)
                    flat_out[i * n + s : i * n + e] = self._fbank_rows(frames[i, s:e])
        if lengths is not None:
            valid = torch.as_tensor([self.num_frames(int(x)) for x in lengths], device=out.device)
            out.masked_fill_(torch.arange(n, device=out.device)[None, :, None] >= valid[:, None, None], 0.0)
        return out

    def fbank_graph(self, wave: torch.Tensor) -> torch.Tensor:
        """:meth:`fbank` without ``lengths``, as one branch-free tensor program over the whole batch
        (no Python loops or branches on sizes): what ``torch.export`` turns into a graph whose batch
        and sample counts stay dynamic (ONNX export). Same values as :meth:`fbank`."""
        frames = _as_batch(wave).float().unfold(1, self.win, self.hop)  # [B, n, win]
        x = frames - frames.mean(dim=-1, keepdim=True)
        x = torch.cat(
            [x[..., :1] * (1 - self.preemphasis), x[..., 1:] - self.preemphasis * x[..., :-1]], dim=-1
        )
        spec = torch.fft.rfft(x * self.window, n=self.n_fft)
        power = spec.real.square() + spec.imag.square()
        return (power @ self.mel_t).clamp_min(torch.finfo(power.dtype).eps).log()

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        exporting = torch.compiler.is_exporting() and lengths is None
        x = self.fbank_graph(wave) if exporting else self.fbank(wave, lengths)
        if self.target_length is not None:
            if exporting:  # pad by a whole clip, then crop: no branch on the symbolic frame count
                x = F.pad(x, (0, 0, 0, self.target_length))[:, : self.target_length]
            else:
                p = self.target_length - x.shape[1]
                x = F.pad(x, (0, 0, 0, p)) if p > 0 else x[:, : self.target_length]
        if self.normalize:
            x = (x - self.mean) / (2 * self.std)
        return x


class LogMel(nn.Module):
    """librosa-compatible log-mel: ``power_to_db(melspectrogram(...))`` on ``[B, T]`` or ``[B, C, T]``.

    Slaney mel filters (``librosa.filters.mel``), centred STFT with zero padding, Hann window,
    ``10 log10(max(S, amin))`` and a ``top_db`` floor per example and channel. Output
    ``[B, (C,) frames, n_mels]``.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 1024,
        hop_length: int = 320,
        win_length: int | None = None,
        n_mels: int = 64,
        fmin: float = 0.0,
        fmax: float | None = None,
        power: float = 2.0,
        top_db: float | None = 80.0,
        center: bool = True,
    ):
        super().__init__()
        self.sample_rate, self.n_fft, self.hop_length = int(sample_rate), int(n_fft), int(hop_length)
        self.win_length = int(win_length or n_fft)
        self.n_mels, self.fmin, self.fmax = int(n_mels), float(fmin), fmax
        self.power, self.top_db, self.center = float(power), top_db, bool(center)
        mel = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
        self.register_buffer("mel_t", torch.from_numpy(mel.T.copy()).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(self.win_length), persistent=False)

    def config(self) -> dict:
        return {
            k: getattr(self, k)
            for k in (
                "sample_rate",
                "n_fft",
                "hop_length",
                "win_length",
                "n_mels",
                "fmin",
                "fmax",
                "power",
                "top_db",
                "center",
            )
        }

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        if wave.dim() not in (1, 2, 3):
            raise ValueError(f"expected a waveform [T], [B, T] or [B, C, T], got shape {tuple(wave.shape)}")
        squeeze = wave.dim() <= 2
        if wave.dim() == 1:
            wave = wave.unsqueeze(0)
        if wave.dim() == 2:
            wave = wave.unsqueeze(1)
        spec = stft_frames(
            wave.float(), self.n_fft, self.hop_length, self.win_length, self.window, self.center
        )
        if self.power == 2.0:  # |S|^2 without the square root of abs()
            ri = torch.view_as_real(spec)
            s = ri[..., 0].square().addcmul_(ri[..., 1], ri[..., 1])
        else:
            s = spec.abs().pow(self.power)
        out = power_to_db(s @ self.mel_t, top_db=self.top_db)
        return out[:, 0] if squeeze else out


def build_frontend(kind: str, **kwargs) -> nn.Module:
    """Front end by name: ``fbank`` (AST), ``logmel``, ``foa`` (log-mel + IV), ``mic`` (log-mel + GCC)."""
    kinds = {"fbank": KaldiFbank, "logmel": LogMel, "foa": FOALogMelIV, "mic": MicLogMelGCC}
    if kind not in kinds:
        raise ValueError(f"unknown feature kind {kind!r}; choose from {sorted(kinds)}")
    return kinds[kind](**kwargs)
