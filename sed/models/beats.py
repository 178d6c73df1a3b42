"""BEATs (Chen et al. 2022, "BEATs: Audio Pre-Training with Acoustic Tokenizers"), iter3 / iter3+
architecture.

Waveform ``[B, T]`` at 16 kHz -> :class:`BEATsFbank` (Kaldi fbank of ``wave * 2**15``, 128 bins, Povey
window, ``(fbank - 15.41663) / (2 * 6.55582)``) ``[B, frames, 128]`` -> non-overlapping 16x16 patches
(``patch_embedding``, a strided Conv2d over ``[B, 1, T, F]``: tokens in time-major order) -> LayerNorm ->
``post_extract_proj`` -> + convolutional positional embedding (weight-normalised grouped Conv1d, GELU)
-> LayerNorm -> post-LN deep-norm Transformer layers whose attention adds a bucketed relative position
bias (shared by all layers, gated per query by each layer's ``grep_linear`` / ``grep_a``) -> mean over
tokens -> ``head`` (the reference's ``predictor``: dropout + Linear; AudioSet is multi-label, sigmoid).

Length policy (the reference's ``extract_features``): each clip runs at its own length, its frames cut
to whole 16-frame patches by the patch convolution (a 3-s clip: 298 frames, 18 x 8 = 144 tokens); BEATs
has no absolute positional embedding. In a batch of clips of different lengths each length runs on its
own (:func:`~sed.models.base.per_length`), so a clip scores as it does alone (the reference's
``padding_mask`` path would differ). Clips shorter than one patch (16 frames, 0.175 s) are zero-padded to
one patch (the reference cannot score them); inputs longer than :data:`BEATS_MAX_SECONDS` are scored on
their centre 30 s by ``sedkit classify`` (attention memory grows with the square of the length; use
``--window``). ``input_tdim`` (998 frames = 10 s) is only the clip length of training data.
Parameter names follow the reference's (``self_attn.{q,k,v,out}_proj``, ``self_attn_layer_norm``, ``fc1``,
``fc2``, ...), with ``encoder.layers.N`` -> ``blocks.N``; the release ``.pt`` files are read by
:mod:`sed.models.pretrained.beats` (also the ``pretrained=`` of these sizes).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from sed.augment.patch_mix import patch_mix
from sed.models.base import FbankClassifier, build_sized, pad_to
from sed.models.beats_layers import (
    BEATS_MEAN,
    BEATS_STD,
    BEATsFbank,
    BEATsLayer,
    relative_position_bucket,
)
from sed.models.family import Family, Weights, register_family
from sed.models.frames import FrameOutputs
from sed.models.registry import register_model

__all__ = [
    "BEATS_MEAN",
    "BEATS_SIZES",
    "BEATS_STD",
    "BEATsFbank",
    "BEATsModel",
    "beats_iter3",
    "beats_micro",
    "relative_position_bucket",
]

#: the longest input ``sedkit classify`` scores in one piece (the reference sets no limit)
BEATS_MAX_SECONDS = 30.0

#: the registered sizes: iter3 / iter3+ as released, and a CPU test size
BEATS_SIZES: dict[str, dict] = {
    "beats_iter3": {
        "embed_dim": 768,
        "patch_dim": 512,
        "depth": 12,
        "num_heads": 12,
        "ffn_dim": 3072,
        "conv_pos": 128,
        "conv_pos_groups": 16,
    },
    "beats_micro": {
        "embed_dim": 64,
        "patch_dim": 32,
        "depth": 2,
        "num_heads": 2,
        "ffn_dim": 128,
        "conv_pos": 16,
        "conv_pos_groups": 4,
    },
}


class BEATsModel(FrameOutputs, FbankClassifier, nn.Module):
    """The BEATs classifier with its own front end; see the module docstring (length policy: native).
    ``frame_pooling`` (:mod:`sed.models.frames`): a frame model whose frames are the 16-fbank-frame patch
    columns (tokens averaged over frequency): 0.16 s apart."""

    native_length = True

    def __init__(
        self,
        num_classes: int = 527,
        embed_dim: int = 768,
        patch_dim: int = 512,
        depth: int = 12,
        num_heads: int = 12,
        ffn_dim: int = 3072,
        patch_size: int = 16,
        conv_bias: bool = False,
        conv_pos: int = 128,
        conv_pos_groups: int = 16,
        num_buckets: int = 320,
        max_distance: int = 800,
        gru_rel_pos: bool = True,
        deep_norm: bool = True,
        input_tdim: int = 998,
        num_mel_bins: int = 128,
        sample_rate: int = 16000,
        mean: float = BEATS_MEAN,
        std: float = BEATS_STD,
        dropout: float = 0.1,
        attention_dropout: float = 0.1,
        activation_dropout: float = 0.0,
        dropout_input: float = 0.0,
        predictor_dropout: float = 0.1,
        labels: list[str] | None = None,
        frame_pooling: str | None = None,
    ):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if min(input_tdim, num_mel_bins) < patch_size:
            raise ValueError(
                f"input {input_tdim}x{num_mel_bins} is smaller than one {patch_size}x{patch_size} patch"
            )
        if embed_dim % conv_pos_groups:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by conv_pos_groups {conv_pos_groups}")
        self.num_classes, self.embed_dim = int(num_classes), int(embed_dim)
        self.input_tdim, self.num_mel_bins, self.patch_size = (
            int(input_tdim),
            int(num_mel_bins),
            int(patch_size),
        )
        self.num_buckets, self.max_distance = int(num_buckets), int(max_distance)
        self.frontend = BEATsFbank(sample_rate, num_mel_bins, None, mean, std)
        self.patch_embedding = nn.Conv2d(1, patch_dim, patch_size, stride=patch_size, bias=conv_bias)
        self.layer_norm = nn.LayerNorm(patch_dim)
        self.post_extract_proj = nn.Linear(patch_dim, embed_dim) if patch_dim != embed_dim else nn.Identity()
        self.dropout_input = nn.Dropout(dropout_input)
        self.pos_conv = weight_norm(
            nn.Conv1d(embed_dim, embed_dim, conv_pos, padding=conv_pos // 2, groups=conv_pos_groups),
            name="weight",
            dim=2,
        )
        self.pos_trim = 1 if conv_pos % 2 == 0 else 0  # the reference's SamePad
        self.encoder_norm = nn.LayerNorm(embed_dim)
        self.encoder_dropout = nn.Dropout(dropout)
        self.rel_pos_bias = nn.Embedding(num_buckets, num_heads)
        self.blocks = nn.ModuleList(
            BEATsLayer(
                embed_dim,
                ffn_dim,
                num_heads,
                depth,
                deep_norm,
                gru_rel_pos,
                dropout,
                attention_dropout,
                activation_dropout,
            )
            for _ in range(depth)
        )
        self.head = nn.Sequential(nn.Dropout(predictor_dropout), nn.Linear(embed_dim, num_classes))
        self._init_weights(deep_norm)
        self.init_frames(embed_dim, frame_pooling)
        self.labels = labels

    # ------------------------------------------------------------------ init and description
    def _init_weights(self, deep_norm: bool) -> None:
        """The reference's: BERT init (normal 0.02) of linears and the bias table, deep-norm Xavier
        of the attention and feed-forward projections, the positional conv as wav2vec 2.0."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)) and m is not self.head[1]:
                nn.init.normal_(m.weight, std=0.02)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
        beta = math.pow(8 * len(self.blocks), -0.25) if deep_norm else 1.0
        for blk in self.blocks:
            a = blk.self_attn
            for lin, gain in (
                (a.k_proj, 1.0),
                (a.v_proj, beta),
                (a.q_proj, 1.0),
                (a.out_proj, beta),
                (blk.fc1, beta),
                (blk.fc2, beta),
            ):
                nn.init.xavier_normal_(lin.weight, gain=gain)
        conv = self.pos_conv
        std = math.sqrt(4.0 / (conv.kernel_size[0] * self.embed_dim))
        with torch.no_grad():
            par = conv.parametrizations.weight
            par.original1.normal_(0.0, std)  # v; g = ||v|| over all but the kernel dimension: weight = v
            par.original0.copy_(par.original1.norm(dim=(0, 1), keepdim=True))
        nn.init.zeros_(conv.bias)

    def reset_head(self) -> None:
        """A fresh ``head`` Linear (PyTorch's default init, as the reference's ``predictor``)."""
        self.head[1].reset_parameters()

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid ``(f, t)``: rows are frequency, columns time (the tokens themselves are time-major)."""
        return self.num_mel_bins // self.patch_size, self.input_tdim // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def max_samples(self) -> int:
        """The longest input scored in one piece (:data:`BEATS_MAX_SECONDS`)."""
        return int(BEATS_MAX_SECONDS * self.sample_rate)

    @property
    def patch_samples(self) -> int:
        """The shortest waveform that fills one patch (16 frames: 2,800 samples at 16 kHz)."""
        return (self.patch_size - 1) * self.frontend.hop + self.frontend.win

    def features(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The front end; a waveform shorter than one patch is zero-padded to one (not under export)."""
        return super().features(pad_to(wave, self.patch_samples), lengths)

    # ------------------------------------------------------------------ forward pieces
    def patchify(self, fbank: torch.Tensor) -> torch.Tensor:
        """``[B, frames, bins]`` -> patch tokens ``[B, N, D]`` in time-major order (token = t * f + row),
        after the patch LayerNorm and ``post_extract_proj``: what enters the positional conv."""
        if fbank.dim() != 3 or fbank.shape[2] != self.num_mel_bins or fbank.shape[1] < self.patch_size:
            raise ValueError(
                f"BEATs expects features [B, >= {self.patch_size}, {self.num_mel_bins}], "
                f"got {tuple(fbank.shape)}"
            )
        x = self.patch_embedding(fbank.unsqueeze(1)).flatten(2).transpose(1, 2)
        return self.dropout_input(self.post_extract_proj(self.layer_norm(x)))

    def position_bias(self, n: int, device: torch.device) -> torch.Tensor:
        """The shared relative position bias ``[H, n, n]`` (before each layer's gate)."""
        pos = torch.arange(n, device=device)
        buckets = relative_position_bucket(pos[None, :] - pos[:, None], self.num_buckets, self.max_distance)
        # indexing the table (not calling the Embedding): an exported graph names an aten "embedding" node
        # "embedding", which would clash with the graph's output of that name
        return self.rel_pos_bias.weight[buckets].permute(2, 0, 1)

    def forward_tokens(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch tokens ``[B, N, D]`` -> (mean-pooled ``[B, D]``, encoder output ``[B, N, D]``).
        Patch-Mix mixes ``patches`` between :meth:`patchify` and this call."""
        pos = self.pos_conv(patches.transpose(1, 2))
        if self.pos_trim:
            pos = pos[..., : -self.pos_trim]
        x = self.encoder_dropout(self.encoder_norm(patches + F.gelu(pos).transpose(1, 2)))
        bias = self.position_bias(x.shape[1], x.device).to(x.dtype)
        for blk in self.blocks:
            x = blk(x, bias)
        return x.mean(dim=1), x

    def forward_head(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.head(pooled)

    def forward_fbank_features(self, fbank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_tokens(self.patchify(fbank))

    @property
    def frame_hop(self) -> float:
        return self.patch_size * self.frontend.hop / self.sample_rate

    def num_frames(self, num_samples: int) -> int:
        return self.frontend.num_frames(max(int(num_samples), self.patch_samples)) // self.patch_size

    def frame_sequence(self, fbank: torch.Tensor) -> torch.Tensor:
        """Frames ``[B, t, D]``: the (time-major) tokens of each patch column averaged over frequency."""
        tokens = self.forward_fbank_features(fbank)[1]
        return tokens.unflatten(1, (-1, self.num_mel_bins // self.patch_size)).mean(2)

    def forward_fbank(self, fbank: torch.Tensor) -> torch.Tensor:
        """Normalised fbank ``[B, frames, 128]`` (the reference's ``preprocess`` output) -> logits."""
        return self.head(self.forward_fbank_pooled(fbank))

    def forward_patch_mix(
        self,
        fbank: torch.Tensor,
        y: torch.Tensor,
        beta: float = 1.0,
        generator: torch.Generator | None = None,
        time_domain: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float, torch.Tensor]:
        """Patch-Mix forward, the contract of :meth:`sed.models.ast.ASTModel.forward_patch_mix`: the patch
        tokens are mixed (:func:`sed.augment.patch_mix.patch_mix`, seen as the frequency-major ``grid``)
        before the positional conv and the encoder -> ``(logits, pooled, y_a, y_b, lam, index)``."""
        x = self.patchify(fbank)
        b, n, d = x.shape
        f = self.num_mel_bins // self.patch_size
        t = n // f
        freq_major = x.view(b, t, f, d).transpose(1, 2).reshape(b, n, d)
        mixed, y_a, y_b, lam, index = patch_mix(
            freq_major, y, beta, generator, time_domain=time_domain, grid=(f, t)
        )
        x = mixed.view(b, f, t, d).transpose(1, 2).reshape(b, n, d)
        pooled = self.forward_tokens(x)[0]
        return self.head(pooled), pooled, y_a, y_b, lam, index


# ---------------------------------------------------------------------- registered sizes
def _build(size: str, num_classes: int, kwargs: dict) -> BEATsModel:
    return build_sized(
        BEATsModel, BEATS_SIZES, size, num_classes, kwargs
    )  # input_fdim taken for num_mel_bins


@register_model
def beats_iter3(num_classes: int = 527, **kwargs) -> BEATsModel:
    """BEATs iter3 / iter3+ (768 wide, 12 layers, 12 heads, 512-d 16x16 patches; ~90 M parameters)."""
    return _build("beats_iter3", num_classes, kwargs)


@register_model
def beats_micro(num_classes: int = 527, **kwargs) -> BEATsModel:
    """A 64-wide, 2-layer, 2-head BEATs for CPU tests and smoke runs."""
    return _build("beats_micro", num_classes, kwargs)


# ---------------------------------------------------------------------- the family and its public weights
_HOME = "https://github.com/microsoft/unilm/tree/master/beats"
_CITE = "Chen et al. 2023, BEATs (ICML), arXiv 2212.09058, Table 2"


def _weights(name: str, sources: tuple[str, ...], classes: int | None, metric: str) -> Weights:
    return Weights(
        name,
        "beats_iter3",
        sources,
        classes,
        "audioset" if classes else None,
        bool(classes),
        16000,
        10.0,
        f"Kaldi fbank of wave x 2^15, (x - {BEATS_MEAN}) / (2 x {BEATS_STD})",
        "MIT (microsoft/unilm)",
        metric,
        _CITE,
        _HOME,
    )


_MIRROR1, _MIRROR2 = "hf://lpepino/beats_ckpts/", "hf://camenduru/beats/"
WEIGHTS = (
    _weights(
        "beats-iter3-plus-as2m",
        (
            _MIRROR1 + "BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt1.pt",
            _MIRROR2 + "BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt",
        ),
        527,
        "AudioSet-2M mAP 48.6 (iter3+, single model)",
    ),
    _weights(
        "beats-iter3-plus-as2m-cpt2",
        (_MIRROR2 + "BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt",),
        527,
        "AudioSet-2M mAP 48.6 (iter3+, single model)",
    ),
    _weights(
        "beats-iter3-plus-as2m-pt",
        (_MIRROR1 + "BEATs_iter3_plus_AS2M.pt",),
        None,
        "ESC-50 98.1 % after fine-tuning (iter3+ AS2M)",
    ),
    _weights(
        "beats-iter3-as2m",
        (_MIRROR1 + "BEATs_iter3_finetuned_on_AS2M_cpt1.pt",),
        527,
        "AudioSet-2M mAP 48.0 (iter3, single model)",
    ),
    _weights(
        "beats-iter3-pt",
        (_MIRROR1 + "BEATs_iter3.pt",),
        None,
        "AudioSet-2M mAP 48.0 after fine-tuning (iter3)",
    ),
)

FAMILY = register_family(
    Family(
        "beats",
        tuple(BEATS_SIZES),
        "beats_micro",
        "native",
        "BEATs iter3 / iter3+ (Chen et al. 2023): Kaldi fbank, 16x16 patches, relative-position transformer",
        "sed.models.pretrained.beats:IMPORTER",
        WEIGHTS,
        test_kwargs={"input_tdim": 98, "depth": 2},
    )
)
