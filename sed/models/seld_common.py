"""What every SELD model shares (../shared/specs/seld.md 2, 3.1): its own front end and standardiser,
the multi-ACCDOA output layout and activation, labels and the rebuild kwargs.

A SELD model takes 24 kHz 4-channel waveforms ``[B, 4, T]`` (FOA in ACN order or the tetrahedral
MIC capsules) and returns multi-ACCDOA frames at the 100-ms label rate:

* ``[B, T // 2400, 3*3*C]``, flat index ``track*3C + axis*C + class`` with axes x, y, z, or
* with ``with_distance=True`` (DCASE2024), ``[B, T // 2400, 3*4*C]``, index ``track*4C + axis*C + class``,
  the 4th axis the distance in metres.

Output activation: ``tanh`` on the x, y, z blocks (ACCDOA vectors have norm <= 1; ``doa_activation=
"identity"`` gives the DCASE2024 baseline's linear output); the distance block is *not* squashed:
``distance_activation="identity"`` (default, as the DCASE2024 baseline; decoding clips negative
distances to 0) or ``"relu"`` (never negative, but a unit whose pre-activation starts negative gets
no gradient).

Entry points: ``forward(audio)``; ``features(audio)`` = the front end's output, unstandardised (what a
feature cache stores); ``forward_features(feats)`` (alias ``forward_from_features``) = standardiser +
network, for cached or augmented features. The front end runs in float32 even under autocast.
Subclasses implement ``forward_network(x)``: standardised features ``[B, C_in, frames, bins]`` ->
pre-activation output ``[B, label_frames, out_dim]``.
"""

from __future__ import annotations

import torch
from torch import nn

from sed.audio.spatial import FeatureStandardizer, FOALogMelIV, MicLogMelGCC
from sed.models.base import DescribedModel

__all__ = ["NUM_TRACKS", "SeldModel", "build_frontend"]

NUM_TRACKS = 3
_FRONTENDS = {"foa": FOALogMelIV, "mic": MicLogMelGCC}
_ACTIVATIONS = ("tanh", "identity", "relu")


def build_frontend(fmt: str, **kwargs) -> nn.Module:
    """``"foa"`` -> :class:`FOALogMelIV` (7 channels), ``"mic"`` -> :class:`MicLogMelGCC` (10 channels)."""
    if fmt not in _FRONTENDS:
        raise ValueError(f"fmt must be one of {sorted(_FRONTENDS)}, got {fmt!r}")
    return _FRONTENDS[fmt](**kwargs)


def _activation(name: str, x: torch.Tensor) -> torch.Tensor:
    if name == "tanh":
        return torch.tanh(x)
    if name == "relu":
        return torch.relu(x)
    return x


class SeldModel(DescribedModel, nn.Module):
    """Base of the SELD models: front end, standardiser, output layout (see the module docstring)."""

    def __init__(
        self,
        num_classes: int = 13,
        fmt: str = "foa",
        with_distance: bool = False,
        sample_rate: int = 24000,
        hop_length: int = 480,
        win_length: int = 960,
        n_fft: int = 1024,
        n_mels: int = 64,
        label_hop_seconds: float = 0.1,
        doa_activation: str = "tanh",
        distance_activation: str = "identity",
        labels: list[str] | None = None,
    ):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        for what, name in (("doa_activation", doa_activation), ("distance_activation", distance_activation)):
            if name not in _ACTIVATIONS:
                raise ValueError(f"{what} must be one of {_ACTIVATIONS}, got {name!r}")
        self.frontend = build_frontend(
            fmt,
            sample_rate=sample_rate,
            hop_length=hop_length,
            win_length=win_length,
            n_fft=n_fft,
            n_mels=n_mels,
        )
        label_samples = round(sample_rate * label_hop_seconds)
        if label_samples % hop_length:
            raise ValueError(
                f"label hop of {label_samples} samples is not a multiple of the feature hop {hop_length}"
            )
        self.num_classes, self.with_distance, self.channel_layout = int(num_classes), bool(with_distance), fmt
        self.label_frame_samples = label_samples
        self.frames_per_label = label_samples // hop_length
        self.in_channels, self.n_mels = self.frontend.num_output_channels, int(n_mels)
        self.standardizer = FeatureStandardizer(self.in_channels, self.n_mels)
        self.doa_activation, self.distance_activation = doa_activation, distance_activation
        self._labels = None
        self.labels = labels

    # ------------------------------------------------------------------ description
    @property
    def num_axes(self) -> int:
        """3 (x, y, z) or 4 (x, y, z, distance) output axes per track."""
        return 4 if self.with_distance else 3

    @property
    def output_dim(self) -> int:
        """Features per label frame: ``3 * num_axes * num_classes`` (117 / 156 for 13 classes)."""
        return NUM_TRACKS * self.num_axes * self.num_classes

    @property
    def sample_rate(self) -> int:
        return self.frontend.sample_rate

    def num_label_frames(self, num_samples: int) -> int:
        """Output frames for a clip of ``num_samples`` samples:
        ``(num_samples // hop) // frames_per_label``."""
        return self.frontend.num_frames(num_samples) // self.frames_per_label

    # ------------------------------------------------------------------ forward pieces
    def features(self, audio: torch.Tensor) -> torch.Tensor:
        """Front end, float32: ``[B, 4, T]`` (or ``[4, T]``) -> unstandardised
        ``[B, C_in, T // hop, n_mels]``."""
        with torch.autocast(device_type=audio.device.type, enabled=False):
            return self.frontend(audio.float())

    def standardize(self, feats: torch.Tensor) -> torch.Tensor:
        if feats.dim() == 3:
            feats = feats.unsqueeze(0)
        if feats.dim() != 4 or feats.shape[1] != self.in_channels or feats.shape[-1] != self.n_mels:
            raise ValueError(
                f"expected {self.channel_layout} features [B, {self.in_channels}, frames, {self.n_mels}], "
                f"got shape {tuple(feats.shape)}"
            )
        if feats.shape[2] < self.frames_per_label:
            raise ValueError(
                f"{feats.shape[2]} feature frames is less than one {self.label_frame_samples}-sample "
                f"label frame ({self.frames_per_label} frames)"
            )
        with torch.autocast(device_type=feats.device.type, enabled=False):
            return self.standardizer(feats.float())

    def activate(self, raw: torch.Tensor) -> torch.Tensor:
        """Output activation of ``[..., out_dim]``: ``doa_activation`` on x, y, z, ``distance_activation``
        on the distance axis."""
        if not self.with_distance:
            return _activation(self.doa_activation, raw)
        shape = raw.shape
        v = raw.reshape(*shape[:-1], NUM_TRACKS, self.num_axes, self.num_classes)
        v = torch.cat(
            [
                _activation(self.doa_activation, v[..., :3, :]),
                _activation(self.distance_activation, v[..., 3:, :]),
            ],
            dim=-2,
        )
        return v.reshape(shape)

    def forward_network(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_features(self, feats: torch.Tensor) -> torch.Tensor:
        """Unstandardised features ``[B, C_in, frames, n_mels]`` -> multi-ACCDOA
        ``[B, frames // 5, out_dim]``."""
        return self.activate(self.forward_network(self.standardize(feats)))

    def forward_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        """Alias of :meth:`forward_features` (the classification models' hook name)."""
        return self.forward_features(feats)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """Waveforms ``[B, 4, T]`` at ``sample_rate`` -> multi-ACCDOA ``[B, T // 2400, out_dim]``."""
        return self.forward_features(self.features(audio))
