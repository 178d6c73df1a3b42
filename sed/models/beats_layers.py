"""The layers of BEATs (:mod:`sed.models.beats`): its fbank front end, the bucketed relative position
bias and the DeepNorm transformer layer with gated relative position bias, named as in the reference
(``microsoft/unilm/beats``: ``self_attn.{q,k,v,out}_proj``, ``self_attn_layer_norm``, ``fc1``, ``fc2``,
``final_layer_norm``, ``grep_linear``, ``grep_a``)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sed.audio.features import KaldiFbank

__all__ = [
    "BEATS_MEAN",
    "BEATS_STD",
    "BEATsAttention",
    "BEATsFbank",
    "BEATsLayer",
    "relative_position_bucket",
]

BEATS_MEAN, BEATS_STD = 15.41663, 6.55582


class BEATsFbank(KaldiFbank):
    """BEATs' front end: ``torchaudio.compliance.kaldi.fbank(wave * 2**15, num_mel_bins=128,
    frame_length=25, frame_shift=10)`` with its defaults (Povey window, dither 0, DC removal,
    pre-emphasis 0.97, power spectrum, log), normalised ``(x - mean) / (2 * std)`` with BEATs' fixed
    statistics; every frame of the clip (``target_length=None``, the reference), or padded/cropped to
    ``target_length`` frames."""

    def __init__(
        self,
        sample_rate: int = 16000,
        num_mel_bins: int = 128,
        target_length: int | None = None,
        mean: float = BEATS_MEAN,
        std: float = BEATS_STD,
        scale: float = 2.0**15,
    ):
        super().__init__(sample_rate, num_mel_bins, target_length, mean, std)
        self.scale = float(scale)
        self.window = torch.hann_window(self.win, periodic=False).pow(0.85)  # Kaldi's "povey" window

    @property
    def mask_value(self) -> float:
        """SpecAugment fills with the normalised mean (0), BEATs' own input statistics."""
        return 0.0

    def config(self) -> dict:
        return {**super().config(), "window": "povey", "scale": self.scale}

    def fbank(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return super().fbank(wave.float() * self.scale, lengths)

    def fbank_graph(self, wave: torch.Tensor) -> torch.Tensor:
        return super().fbank_graph(wave.float() * self.scale)


def relative_position_bucket(rel: torch.Tensor, num_buckets: int, max_distance: int) -> torch.Tensor:
    """The reference's bidirectional T5-style bucket of each relative position ``key - query``
    (half the buckets per direction, exact below a quarter, logarithmic up to ``max_distance``);
    computed in float32 with the reference's operation order, so boundary buckets agree."""
    half = num_buckets // 2
    out = (rel > 0).long() * half
    dist = rel.abs()
    exact = half // 2
    far = (
        exact
        + (
            torch.log(dist.clamp_min(1).float() / exact) / math.log(max_distance / exact) * (half - exact)
        ).long()
    )
    far = far.clamp_max(half - 1)
    return out + torch.where(dist < exact, dist, far)


class BEATsAttention(nn.Module):
    """Self-attention with the (optionally gated) relative position bias, as the reference computes
    it: ``softmax(q k^T / sqrt(d) + gate(q) * bias) v`` (the reference's ``alpha = 32`` rescaling and
    max subtraction cancel inside the softmax)."""

    def __init__(self, dim: int, num_heads: int, gru_rel_pos: bool = True, dropout: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim, self.dropout = num_heads, dim // num_heads, float(dropout)
        self.k_proj, self.v_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.q_proj, self.out_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.gru_rel_pos = bool(gru_rel_pos)
        if self.gru_rel_pos:
            self.grep_linear = nn.Linear(self.head_dim, 8)
            self.grep_a = nn.Parameter(torch.ones(1, num_heads, 1, 1))

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """``x [B, N, D]``, ``bias [H, N, N]`` (ungated) -> ``[B, N, D]``."""
        b, n, d = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        if self.gru_rel_pos:
            gates = torch.sigmoid(self.grep_linear(q).view(b, self.num_heads, n, 2, 4).sum(-1))
            gate_a, gate_b = gates[..., :1], gates[..., 1:]
            mask = (gate_a * (gate_b * self.grep_a - 1.0) + 2.0) * bias
        else:
            mask = bias.unsqueeze(0).expand(b, -1, -1, -1)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask.to(q.dtype), dropout_p=self.dropout if self.training else 0.0
        )
        # a real copy: under torch.export the decomposed attention's output strides differ from eager's,
        # and a reshape (or a no-op contiguous) was recorded as a view that the ONNX exporter cannot take
        return self.out_proj(out.transpose(1, 2).clone(memory_format=torch.contiguous_format).view(b, n, d))


class BEATsLayer(nn.Module):
    """Post-LN Transformer layer with deep-norm residual scaling ``alpha = (2 * depth) ** 0.25``."""

    def __init__(
        self,
        dim: int,
        ffn_dim: int,
        num_heads: int,
        depth: int,
        deep_norm: bool,
        gru_rel_pos: bool,
        dropout: float,
        attention_dropout: float,
        activation_dropout: float,
    ):
        super().__init__()
        self.self_attn = BEATsAttention(dim, num_heads, gru_rel_pos, attention_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(dim, ffn_dim), nn.Linear(ffn_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.drop, self.act_drop = nn.Dropout(dropout), nn.Dropout(activation_dropout)
        self.alpha = math.pow(2 * depth, 0.25) if deep_norm else 1.0

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = self.self_attn_layer_norm(x * self.alpha + self.drop(self.self_attn(x, bias)))
        h = self.fc2(self.act_drop(F.gelu(self.fc1(x).float()).to(x.dtype)))
        return self.final_layer_norm(x * self.alpha + self.drop(h))
