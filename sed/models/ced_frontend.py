"""CED's front end (:mod:`sed.models.ced`): the log-mel spectrogram of
``torchaudio.transforms.MelSpectrogram`` with CED's parameters and its per-clip dB range, as a module that
exports to ONNX."""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from sed.audio.features import mono_batch

__all__ = ["CEDMel"]


class CEDMel(nn.Module):
    """CED's front end, batched: ``[B, T]`` waveforms -> dB mel spectrogram ``[B, frames, n_mels]``.

    The values of ``torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=512, win_length=512,
    hop_length=160, f_min=0, f_max=8000, n_mels=64, center=True)`` (periodic Hann window, reflect
    padding, power 2, HTK mel scale and no filter norm, unless ``mel_scale``/``norm`` say otherwise) then
    ``AmplitudeToDB(top_db=120)``:
    ``10 log10(max(S, 1e-10))`` floored at the clip's maximum minus ``top_db``. The floor is per
    clip (torchaudio takes the maximum over the whole batch of a ``[B, mels, frames]`` input;
    per clip a result does not depend on its batch neighbours, and it equals torchaudio's on one clip).

    With ``target_length`` the waveform is first zero-padded or cut to ``clip_samples =
    (target_length - 1) * hop`` samples (exactly ``target_length`` frames), as the reference
    feature extractor zero-pads audio; samples past ``lengths`` are zeroed the same way.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_mels: int = 64,
        target_length: int | None = None,
        n_fft: int = 512,
        win_length: int = 512,
        hop_length: int = 160,
        f_min: float = 0.0,
        f_max: float = 8000.0,
        top_db: float | None = 120.0,
        mel_scale: str = "htk",
        norm: str | None = None,
    ):
        super().__init__()
        if win_length > n_fft:
            raise ValueError(f"win_length {win_length} is longer than n_fft {n_fft}")
        self.sample_rate, self.n_mels, self.n_fft = int(sample_rate), int(n_mels), int(n_fft)
        self.win_length, self.hop, self.f_min, self.f_max = (
            int(win_length),
            int(hop_length),
            float(f_min),
            float(f_max),
        )
        self.top_db = None if top_db is None else float(top_db)
        self.mel_scale, self.norm = str(mel_scale), norm
        self.target_length = None if target_length is None else int(target_length)
        with torch.device(
            "cpu"
        ):  # numbers, also when the model is built on the meta device (parameter counts)
            fb = torchaudio.functional.melscale_fbanks(
                n_fft // 2 + 1, f_min, f_max, n_mels, sample_rate, norm, mel_scale
            )
        self.register_buffer("mel_fb", fb.float(), persistent=False)  # [n_fft//2 + 1, n_mels]
        left = (n_fft - win_length) // 2  # torch.stft centres a shorter window in the frame
        window = F.pad(torch.hann_window(win_length), (left, n_fft - win_length - left))
        self.register_buffer("window", window, persistent=False)

    @property
    def win(self) -> int:
        """Samples of one analysis frame (the ONNX exporter's shortest input)."""
        return self.n_fft

    @property
    def mask_value(self) -> float:
        """SpecAugment fill: the reference masks the dB spectrogram with zeros."""
        return 0.0

    @property
    def clip_samples(self) -> int | None:
        return None if self.target_length is None else (self.target_length - 1) * self.hop

    def num_frames(self, num_samples: int) -> int:
        return 1 + int(num_samples) // self.hop

    def config(self) -> dict:
        return {
            "kind": "ced_mel",
            "sample_rate": self.sample_rate,
            "n_mels": self.n_mels,
            "target_length": self.target_length,
            "n_fft": self.n_fft,
            "win_length": self.win_length,
            "hop_length": self.hop,
            "f_min": self.f_min,
            "f_max": self.f_max,
            "top_db": self.top_db,
            "mel_scale": self.mel_scale,
            "norm": self.norm,
        }

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config().items() if k != "kind")

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        wave = mono_batch(wave, lengths)
        if self.clip_samples is not None:  # pad by a whole clip, then cut: no branch on the length (export)
            wave = F.pad(wave, (0, self.clip_samples))[:, : self.clip_samples]
        half = self.n_fft // 2
        x = F.pad(wave.unsqueeze(1), (half, half), mode="reflect").squeeze(1)
        spec = torch.fft.rfft(
            x.unfold(1, self.n_fft, self.hop) * self.window, n=self.n_fft
        )  # [B, frames, bins]
        power = spec.real.square() + spec.imag.square()
        db = 10.0 * torch.log10((power @ self.mel_fb).clamp_min(1e-10))
        if self.top_db is not None:
            db = torch.maximum(db, db.amax(dim=(1, 2), keepdim=True) - self.top_db)
        return db
