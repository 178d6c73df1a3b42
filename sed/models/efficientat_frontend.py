"""EfficientAT's 32 kHz log-mel front end (Schmid et al. 2023), eval mode, batched and exportable.

The reference is ``AugmentMelSTFT`` of github.com/fschmid56/EfficientAT (``models/preprocess.py``)
with the training defaults of its ``ex_audioset.py``; in eval mode it computes, per clip:

1. pre-emphasis ``y[n] = x[n + 1] - 0.97 x[n]`` (a valid ``conv1d`` with kernel ``[-0.97, 1]``: one
   sample shorter than the input);
2. ``torch.stft(n_fft=1024, hop_length=320, win_length=800, center=True)``: reflect padding by
   ``n_fft // 2``, a symmetric (``periodic=False``) Hann window of 800 taps zero-padded to 1024 on
   both sides, power ``re^2 + im^2``;
3. 128 mel bands from ``torchaudio.compliance.kaldi.get_mel_banks`` between ``fmin = 0`` and
   ``fmax = sr / 2 - fmax_aug_range / 2 = 15 kHz`` (Nyquist column zero);
4. ``log(mel + 1e-5)``, then ``(x + 4.5) / 5``.

A clip of ``n`` samples gives ``1 + (n - 1) // hop`` frames. The reference's inference (``inference.py``)
runs a file at its own length (``target_length=None``, the default); its training data sets zero-pad or
crop each *waveform* to the clip length (10 s for AudioSet), which ``target_length`` frames
(``target_length * hop`` samples) reproduces. Samples past a clip's ``lengths`` are zeroed first.
Random fmin/fmax shifts and the reference's masking are training augmentation and stay out (sed's
task applies SpecAugment; :attr:`mask_value` is the image of the reference's mask value 0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchaudio.compliance import kaldi

from sed.audio.features import mono_batch

__all__ = ["EfficientATMel"]


class EfficientATMel(nn.Module):
    """Waveforms ``[B, T]`` (or ``[T]``, ``[B, C, T]`` averaged to mono) at ``sample_rate`` ->
    normalised log-mel ``[B, target_length, num_mel_bins]``; see the module docstring."""

    def __init__(
        self,
        sample_rate: int = 32000,
        num_mel_bins: int = 128,
        target_length: int | None = None,
        win_length: int = 800,
        hop_size: int = 320,
        n_fft: int = 1024,
        fmin: float = 0.0,
        fmax: float | None = None,
        fmax_aug_range: int = 2000,
        preemphasis: float = 0.97,
        log_offset: float = 1e-5,
        norm_shift: float = 4.5,
        norm_scale: float = 5.0,
    ):
        super().__init__()
        if win_length > n_fft:
            raise ValueError(f"win_length {win_length} is longer than n_fft {n_fft}")
        self.sample_rate, self.num_mel_bins = int(sample_rate), int(num_mel_bins)
        self.win, self.hop, self.n_fft = int(win_length), int(hop_size), int(n_fft)
        self.target_length = None if target_length is None else int(target_length)
        if self.target_length is not None and self.target_length * self.hop <= self.n_fft // 2 + 1:
            raise ValueError(f"target_length {target_length} frames is shorter than half an FFT window")
        self.fmin = float(fmin)
        self.fmax = float(self.sample_rate // 2 - int(fmax_aug_range) // 2 if fmax is None else fmax)
        self.preemphasis, self.log_offset = float(preemphasis), float(log_offset)
        self.norm_shift, self.norm_scale = float(norm_shift), float(norm_scale)
        banks, _ = kaldi.get_mel_banks(
            self.num_mel_bins, self.n_fft, float(self.sample_rate), self.fmin, self.fmax, 100.0, -500.0, 1.0
        )
        self.register_buffer("mel_t", F.pad(banks, (0, 1)).T.contiguous().float(), persistent=False)
        left = (self.n_fft - self.win) // 2  # torch.stft centres a shorter window in the FFT frame
        window = F.pad(torch.hann_window(self.win, periodic=False), (left, self.n_fft - self.win - left))
        self.register_buffer("window", window, persistent=False)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config().items())

    def config(self) -> dict:
        return {
            "kind": "efficientat_mel",
            "sample_rate": self.sample_rate,
            "num_mel_bins": self.num_mel_bins,
            "target_length": self.target_length,
            "win_length": self.win,
            "hop_size": self.hop,
            "n_fft": self.n_fft,
            "fmin": self.fmin,
            "fmax": self.fmax,
        }

    @property
    def clip_samples(self) -> int | None:
        """Samples that fill exactly ``target_length`` frames (None: every clip at its own length)."""
        return None if self.target_length is None else self.target_length * self.hop

    def num_frames(self, num_samples: int) -> int:
        return 0 if num_samples < 1 else 1 + (num_samples - 1) // self.hop

    @property
    def mask_value(self) -> float:
        """The reference masks log-mel values with 0 before the normalisation: this is its image."""
        return (0.0 + self.norm_shift) / self.norm_scale

    def logmel(self, wave: torch.Tensor) -> torch.Tensor:
        """Unnormalised ``log(mel + 1e-5)`` ``[B, frames, bins]`` of ``[B, T]`` waves (T > n_fft // 2 + 1)."""
        x = wave[:, 1:] - self.preemphasis * wave[:, :-1]
        pad = self.n_fft // 2
        x = F.pad(x.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
        spec = torch.fft.rfft(x.unfold(1, self.n_fft, self.hop) * self.window, n=self.n_fft)
        power = spec.real.square() + spec.imag.square()
        return (power @ self.mel_t + self.log_offset).log()

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        wave = mono_batch(wave, lengths)
        n = self.clip_samples
        if n is not None:
            wave = F.pad(wave, (0, n))[:, :n]  # zero-pad or crop to the clip, with no branch on the length
        return (self.logmel(wave) + self.norm_shift) / self.norm_scale
