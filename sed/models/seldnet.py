"""The DCASE2023 SELD baseline CRNN (``seldnet_model.py``, ../shared/specs/seld.md 3.2), ~0.74 M parameters.

Standardised features ``[B, 7, 250, 64]`` -> 3 x [Conv2d 3x3 (64 ch, pad 1) -> BN -> ReLU -> MaxPool(t, f)
-> Dropout2d(0.05)] with pools (5, 4), (1, 4), (1, 2) -> ``[B, 64, 50, 2]`` -> ``[B, 50, 128]``
(channel-major: ``c * 2 + f``) -> 2-layer BiGRU (hidden 128, dropout 0.05) -> tanh -> product of the two
directions
(``x[..., 128:] * x[..., :128]``) -> 2 x [MultiheadAttention(128, 8 heads, dropout 0.05) + residual +
LayerNorm] -> Linear(128, 128) (no activation) -> Linear(128, 3*3*C) -> tanh.

Submodule names follow the official code (``conv_block_list.{0,3,6}.conv|bn``, ``gru``,
``mhsa_block_list``, ``layer_norm_list``, ``fnn_list``), so an official baseline ``state_dict`` loads into
this model with ``load_state_dict(sd, strict=False)`` (only the standardiser's buffers are missing; fit
or copy them separately). The first time pool is ``frames_per_label`` (5 at hop 480).

With ``with_distance`` the last layer gives ``3*4*C`` values and the distance block is not squashed
(:class:`~sed.models.seld_common.SeldModel`); ``doa_activation="identity"`` makes the whole output
linear, as in the DCASE2024 baseline.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sed.models.family import Family, register_family
from sed.models.registry import register_model
from sed.models.seld_common import SeldModel

__all__ = ["ConvBlock", "SELDnet", "seldnet_baseline"]


class ConvBlock(nn.Module):
    """Conv2d 3x3 (stride 1, pad 1) -> BatchNorm2d -> ReLU (the official ``ConvBlock``)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class SELDnet(SeldModel):
    """The DCASE2023 baseline network with its own front end (see the module docstring)."""

    def __init__(
        self,
        num_classes: int = 13,
        fmt: str = "foa",
        with_distance: bool = False,
        nb_cnn2d_filt: int = 64,
        f_pool_size=(4, 4, 2),
        t_pool_size=None,
        rnn_size: int = 128,
        nb_rnn_layers: int = 2,
        nb_self_attn_layers: int = 2,
        nb_heads: int = 8,
        nb_fnn_layers: int = 1,
        fnn_size: int = 128,
        dropout_rate: float = 0.05,
        **kwargs,
    ):
        super().__init__(num_classes=num_classes, fmt=fmt, with_distance=with_distance, **kwargs)
        f_pool_size = [int(f) for f in f_pool_size]
        t_pool_size = (
            [self.frames_per_label] + [1] * (len(f_pool_size) - 1)
            if t_pool_size is None
            else [int(t) for t in t_pool_size]
        )
        if len(t_pool_size) != len(f_pool_size) or math.prod(t_pool_size) != self.frames_per_label:
            raise ValueError(
                f"t_pool_size {t_pool_size} must have one entry per conv block and pool "
                f"{self.frames_per_label} feature frames into one label frame"
            )
        if self.n_mels < math.prod(f_pool_size):
            raise ValueError(
                f"n_mels {self.n_mels} is smaller than the frequency pooling {math.prod(f_pool_size)}"
            )
        if rnn_size % nb_heads:
            raise ValueError(f"rnn_size {rnn_size} is not divisible by nb_heads {nb_heads}")
        self.record_kwargs(f_pool_size=f_pool_size, t_pool_size=t_pool_size)  # the default resolved
        self.conv_block_list = nn.ModuleList()
        for i, (t, f) in enumerate(zip(t_pool_size, f_pool_size)):
            self.conv_block_list.append(ConvBlock(nb_cnn2d_filt if i else self.in_channels, nb_cnn2d_filt))
            self.conv_block_list.append(nn.MaxPool2d((t, f)))
            self.conv_block_list.append(nn.Dropout2d(p=dropout_rate))
        self.gru_input_dim = nb_cnn2d_filt * (self.n_mels // math.prod(f_pool_size))
        self.gru = nn.GRU(
            input_size=self.gru_input_dim,
            hidden_size=rnn_size,
            num_layers=nb_rnn_layers,
            batch_first=True,
            dropout=dropout_rate,
            bidirectional=True,
        )
        self.mhsa_block_list = nn.ModuleList()
        self.layer_norm_list = nn.ModuleList()
        for _ in range(nb_self_attn_layers):
            self.mhsa_block_list.append(
                nn.MultiheadAttention(
                    embed_dim=rnn_size, num_heads=nb_heads, dropout=dropout_rate, batch_first=True
                )
            )
            self.layer_norm_list.append(nn.LayerNorm(rnn_size))
        self.fnn_list = nn.ModuleList()
        for i in range(nb_fnn_layers):
            self.fnn_list.append(nn.Linear(fnn_size if i else rnn_size, fnn_size, bias=True))
        self.fnn_list.append(nn.Linear(fnn_size if nb_fnn_layers else rnn_size, self.output_dim, bias=True))

    def forward_network(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.conv_block_list:
            x = layer(x)
        x = x.transpose(1, 2).contiguous()  # [B, T, C, F]
        x = x.view(x.shape[0], x.shape[1], -1)
        x, _ = self.gru(x)
        x = torch.tanh(x)
        x = x[:, :, x.shape[-1] // 2 :] * x[:, :, : x.shape[-1] // 2]
        for mhsa, norm in zip(self.mhsa_block_list, self.layer_norm_list):
            attn, _ = mhsa(x, x, x, need_weights=False)
            x = norm(attn + x)
        for fnn in self.fnn_list[:-1]:
            x = fnn(x)
        return self.fnn_list[-1](x)


@register_model
def seldnet_baseline(num_classes: int = 13, **kwargs) -> SELDnet:
    """The DCASE2023 baseline CRNN (FOA: ~0.74 M parameters for 13 classes), multi-ACCDOA output."""
    return SELDnet(num_classes=num_classes, **kwargs)


FAMILY = register_family(
    Family(
        "seldnet",
        ("seldnet_baseline",),
        "seldnet_baseline",
        "frames",
        "the DCASE 2023 SELD baseline CRNN (multi-ACCDOA); frame outputs at the label rate",
    )
)
