"""AST: Audio Spectrogram Transformer (Gong et al. 2021), spec ``ast-patchmix-icbhi.md`` §1.2.

Waveform ``[B, T]`` at 16 kHz -> :class:`~sed.audio.features.KaldiFbank` ``[B, input_tdim, input_fdim]``
-> overlapping 16x16 patches (stride ``fstride`` x ``tstride``) in frequency-major order ->
``[cls, dist, patches] + pos_embed`` -> timm ViT ``Block`` s (:mod:`sed.models.transformer`) -> LayerNorm ->
``(x[:, 0] + x[:, 1]) / 2`` -> ``head = LayerNorm + Linear`` -> logits.

Parameter names follow timm's DeiT (``cls_token, dist_token, pos_embed, patch_embed.proj,
blocks.N.*, norm``) plus ``head.0/head.1`` for AST's ``mlp_head``, so the original AST checkpoint
is this model's ``state_dict`` with a ``module.v.`` prefix. Pretrained weights (DeiT, original
AST, Hugging Face) are loaded by :mod:`sed.models.pretrained.ast` (also the ``pretrained=`` of these sizes).

Length policy (the reference's data loader): fixed length. Every clip's fbank is zero-padded or cut to
``input_tdim`` frames (1024 = 10.24 s), because the positional embedding is learned for that grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import nn

from sed.audio.features import AUDIOSET_MEAN, AUDIOSET_STD, KaldiFbank
from sed.augment.patch_mix import patch_mix
from sed.models.base import FbankClassifier
from sed.models.family import Family, Weights, register_family
from sed.models.frames import FrameOutputs
from sed.models.registry import register_model
from sed.models.transformer import block_prefix, vit_blocks

__all__ = [
    "AST_SIZES",
    "ASTModel",
    "adapt_pos_embed",
    "ast_base",
    "ast_micro",
    "ast_small",
    "ast_tiny",
    "default_num_heads",
]

#: width / depth / heads of the registered sizes (DeiT base/small/tiny, plus a CPU test size).
AST_SIZES: dict[str, dict] = {
    "ast_base": {"embed_dim": 768, "depth": 12, "num_heads": 12},
    "ast_small": {"embed_dim": 384, "depth": 12, "num_heads": 6},
    "ast_tiny": {"embed_dim": 192, "depth": 12, "num_heads": 3},
    "ast_micro": {"embed_dim": 64, "depth": 2, "num_heads": 2},
}


def default_num_heads(embed_dim: int) -> int:
    """Heads of the registered size with this width, else one head per 64 channels (DeiT's rule)."""
    for arch in AST_SIZES.values():
        if arch["embed_dim"] == embed_dim:
            return arch["num_heads"]
    return max(1, embed_dim // 64)


class PatchEmbed(nn.Module):
    """``[B, T, F]`` fbank -> ``[B, f*t, D]`` tokens, frequency-major (token = row * t + col)."""

    def __init__(self, embed_dim: int, patch_size: int, fstride: int, tstride: int):
        super().__init__()
        self.proj = nn.Conv2d(1, embed_dim, kernel_size=(patch_size, patch_size), stride=(fstride, tstride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.unsqueeze(1).transpose(2, 3)  # [B, 1, F, T]
        return self.proj(x).flatten(2).transpose(1, 2)


class ASTModel(FrameOutputs, FbankClassifier, nn.Module):
    """The AST classifier with its own front end; see the module docstring.

    ``block_eps`` / ``norm_eps`` / ``head_eps`` are the LayerNorm eps of the blocks, the final
    norm and the head: 1e-6 / 1e-6 / 1e-5 in the original AST, 1e-12 everywhere in the Hugging
    Face port (they move logits by ~3e-4, spec §1.4).

    ``frame_pooling`` (:mod:`sed.models.frames`): a frame model whose frames are the time columns of the
    patch grid (tokens averaged over frequency), ``tstride`` fbank frames apart (0.1 s).
    """

    fixed_frames = True

    def __init__(
        self,
        num_classes: int = 527,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        input_tdim: int = 1024,
        input_fdim: int = 128,
        fstride: int = 10,
        tstride: int = 10,
        patch_size: int = 16,
        sample_rate: int = 16000,
        mean: float = AUDIOSET_MEAN,
        std: float = AUDIOSET_STD,
        block_eps: float = 1e-6,
        norm_eps: float = 1e-6,
        head_eps: float = 1e-5,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        labels: list[str] | None = None,
        frame_pooling: str | None = None,
    ):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        if min(input_tdim, input_fdim) < patch_size:
            raise ValueError(
                f"input {input_tdim}x{input_fdim} is smaller than one {patch_size}x{patch_size} patch"
            )
        self.num_classes, self.embed_dim = int(num_classes), int(embed_dim)
        self.input_tdim, self.input_fdim = int(input_tdim), int(input_fdim)
        self.frontend = KaldiFbank(sample_rate, input_fdim, input_tdim, mean, std)
        self.patch_embed = PatchEmbed(embed_dim, patch_size, fstride, tstride)
        f = (input_fdim - patch_size) // fstride + 1
        t = (input_tdim - patch_size) // tstride + 1
        self._grid = (f, t)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, f * t + 2, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        self.blocks = vit_blocks(
            embed_dim,
            depth,
            num_heads,
            mlp_ratio,
            qkv_bias,
            drop_rate,
            attn_drop_rate,
            drop_path_rate,
            eps=block_eps,
        )
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.head = nn.Sequential(nn.LayerNorm(embed_dim, eps=head_eps), nn.Linear(embed_dim, num_classes))
        self._init_weights()
        self.init_frames(embed_dim, frame_pooling)
        self.labels = labels

    # ------------------------------------------------------------------ init and description
    def _init_weights(self) -> None:
        for p in (self.pos_embed, self.cls_token, self.dist_token):
            trunc_normal_(p, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def reset_head(self) -> None:
        """Fresh ``head`` (LayerNorm + Linear), as AST does when fine-tuning to new classes."""
        self.head[0].reset_parameters()
        trunc_normal_(self.head[1].weight, std=0.02)
        nn.init.zeros_(self.head[1].bias)

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid ``(f, t)``: rows are frequency, columns time."""
        return self._grid

    @property
    def num_patches(self) -> int:
        return self._grid[0] * self._grid[1]

    # ------------------------------------------------------------------ forward pieces

    def patchify(self, fbank: torch.Tensor) -> torch.Tensor:
        """``[B, input_tdim, input_fdim]`` -> patch tokens ``[B, N, D]`` (before cls/dist and pos_embed)."""
        if tuple(fbank.shape[1:]) != (self.input_tdim, self.input_fdim):
            raise ValueError(
                f"AST expects features [B, {self.input_tdim}, {self.input_fdim}], got {tuple(fbank.shape)}"
            )
        return self.patch_embed(fbank)

    def forward_tokens(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch tokens ``[B, N, D]`` -> (pooled ``[B, D]``, normed tokens ``[B, N+2, D]``).

        Patch-Mix mixes ``patches`` between :meth:`patchify` and this call.
        """
        x = self.norm(self.blocks(self._embed_tokens(patches)))
        return (x[:, 0] + x[:, 1]) / 2, x

    def forward_pooled(self, patches: torch.Tensor) -> torch.Tensor:
        """``forward_tokens(patches)[0]`` without the work it discards: the last block runs for the
        cls and distillation tokens only (:func:`~sed.models.transformer.block_prefix`)."""
        x = self._embed_tokens(patches)
        for blk in self.blocks[:-1]:
            x = blk(x)
        if len(self.blocks):
            x = block_prefix(self.blocks[-1], x, 2)
        x = self.norm(x[:, :2])
        return (x[:, 0] + x[:, 1]) / 2

    def _embed_tokens(self, patches: torch.Tensor) -> torch.Tensor:
        b = patches.shape[0]
        x = torch.cat([self.cls_token.expand(b, -1, -1), self.dist_token.expand(b, -1, -1), patches], dim=1)
        return self.pos_drop(x + self.pos_embed)

    def forward_head(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.head(pooled)

    def forward_patch_mix(
        self,
        fbank: torch.Tensor,
        y: torch.Tensor,
        beta: float = 1.0,
        generator: torch.Generator | None = None,
        time_domain: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float, torch.Tensor]:
        """Patch-Mix forward (spec §2.3): fbank ``[B, input_tdim, input_fdim]`` and labels ``[B]`` ->
        ``(logits, pooled, y_a, y_b, lam, index)``.

        The patch tokens are mixed (:func:`sed.augment.patch_mix.patch_mix`, one shared patch set per
        batch) between :meth:`patchify` and :meth:`forward_tokens`, i.e. before the cls/dist tokens
        and ``pos_embed``. Loss: ``lam * CE(logits, y_a) + (1 - lam) * CE(logits, y_b)``.
        """
        patches, y_a, y_b, lam, index = patch_mix(
            self.patchify(fbank), y, beta, generator, time_domain=time_domain, grid=self.grid
        )
        pooled = self.forward_pooled(patches)
        return self.head(pooled), pooled, y_a, y_b, lam, index

    def forward_fbank_features(self, fbank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_tokens(self.patchify(fbank))

    def forward_fbank_pooled(self, fbank: torch.Tensor) -> torch.Tensor:
        return self.forward_pooled(self.patchify(fbank))

    @property
    def frame_hop(self) -> float:
        return self.patch_embed.proj.stride[1] * self.frontend.hop / self.sample_rate

    def num_frames(self, num_samples: int) -> int:
        return self._grid[1]  # fixed length: every input is padded or cut to input_tdim

    def frame_sequence(self, fbank: torch.Tensor) -> torch.Tensor:
        """Frames ``[B, t, D]``: the patch tokens of each time column averaged over frequency."""
        tokens = self.forward_fbank_features(fbank)[1][:, 2:]
        return tokens.unflatten(1, self._grid).mean(1)

    def forward_fbank(self, fbank: torch.Tensor) -> torch.Tensor:
        """Normalised fbank ``[B, input_tdim, input_fdim]`` (the original AST input) -> logits."""
        return self.head(self.forward_fbank_pooled(fbank))


def adapt_pos_embed(pos_embed: torch.Tensor, src_grid, dst_grid, num_prefix: int = 2) -> torch.Tensor:
    """AST's positional-embedding adaptation ``[1, P + f0*t0, D] -> [1, P + f*t, D]`` (spec §1.2).

    Time first: middle crop ``[t0//2 - t//2 : ... + t]`` when ``t <= t0``, else bilinear
    interpolation (align_corners False) to ``(f0, t)``. Then frequency: middle crop of rows when
    ``f <= f0``, else interpolation to ``(f, t)``. Prefix (cls/dist) embeddings are kept.
    """
    (f0, t0), (f, t) = src_grid, dst_grid
    prefix, grid = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    if grid.shape[1] != f0 * t0:
        raise ValueError(f"pos_embed has {grid.shape[1]} patch tokens, not {f0}x{t0}")
    d = grid.shape[-1]
    x = grid.float().transpose(1, 2).reshape(1, d, f0, t0)
    if t <= t0:
        s = t0 // 2 - t // 2
        x = x[:, :, :, s : s + t]
    else:
        x = F.interpolate(x, size=(f0, t), mode="bilinear", align_corners=False)
    if f <= f0:
        s = f0 // 2 - f // 2
        x = x[:, :, s : s + f, :]
    else:
        x = F.interpolate(x, size=(f, t), mode="bilinear", align_corners=False)
    x = x.reshape(1, d, f * t).transpose(1, 2).to(pos_embed.dtype)
    return torch.cat([prefix, x], dim=1)


# ---------------------------------------------------------------------- registered sizes
def _build(size: str, num_classes: int, kwargs: dict) -> ASTModel:
    kwargs = dict(kwargs)
    if "num_mel_bins" in kwargs:
        bins = kwargs.pop("num_mel_bins")
        if kwargs.setdefault("input_fdim", bins) != bins:
            raise ValueError(f"num_mel_bins={bins} contradicts input_fdim={kwargs['input_fdim']}")
    return ASTModel(num_classes=num_classes, **{**AST_SIZES[size], **kwargs})


@register_model
def ast_base(num_classes: int = 527, **kwargs) -> ASTModel:
    """AST-Base (DeiT-B: 768 wide, 12 layers, 12 heads), the published AST."""
    return _build("ast_base", num_classes, kwargs)


@register_model
def ast_small(num_classes: int = 527, **kwargs) -> ASTModel:
    """AST-Small (DeiT-S: 384 wide, 12 layers, 6 heads)."""
    return _build("ast_small", num_classes, kwargs)


@register_model
def ast_tiny(num_classes: int = 527, **kwargs) -> ASTModel:
    """AST-Tiny (DeiT-Ti: 192 wide, 12 layers, 3 heads)."""
    return _build("ast_tiny", num_classes, kwargs)


@register_model
def ast_micro(num_classes: int = 527, **kwargs) -> ASTModel:
    """A 64-wide, 2-layer, 2-head AST for CPU tests and smoke runs."""
    return _build("ast_micro", num_classes, kwargs)


# ---------------------------------------------------------------------- the family and its public weights
_AST = (
    "Gong, Chung, Glass 2021, AST (Interspeech), arXiv 2104.01778",
    "https://github.com/YuanGongND/ast",
    "BSD-3-Clause (YuanGongND/ast)",
)
_FBANK = f"Kaldi fbank, (x - ({AUDIOSET_MEAN})) / (2 x {AUDIOSET_STD})"


def _audioset(name: str, repo: str, mean_ap: str, what: str) -> Weights:
    return Weights(
        name,
        "ast_base",
        (f"hf://MIT/{repo}",),
        527,
        "audioset",
        True,
        16000,
        10.24,
        _FBANK,
        _AST[2],
        f"AudioSet mAP {mean_ap} ({what})",
        _AST[0],
        _AST[1],
    )


def _deit(name: str, size: str, top1: float) -> Weights:
    return Weights(
        name,
        size,
        (f"timm://{name}",),
        1000,
        "imagenet",
        False,
        16000,
        10.24,
        _FBANK + " (at fine-tuning)",
        "Apache-2.0 (facebookresearch/deit)",
        f"ImageNet top-1 {top1} % (the image model; a new audio head)",
        "Touvron et al. 2021, DeiT (ICML), arXiv 2012.12877",
        "https://github.com/facebookresearch/deit",
    )


WEIGHTS = (
    _audioset(
        "ast-audioset-0.4593", "ast-finetuned-audioset-10-10-0.4593", "0.4593", "stride 10, weight averaging"
    ),
    _audioset("ast-audioset-0.450", "ast-finetuned-audioset-10-10-0.450", "0.450", "stride 10, model 1"),
    _audioset("ast-audioset-0.448", "ast-finetuned-audioset-10-10-0.448", "0.448", "stride 10, model 2"),
    _audioset(
        "ast-audioset-0.448-v2", "ast-finetuned-audioset-10-10-0.448-v2", "0.448", "stride 10, model 3"
    ),
    _audioset("ast-audioset-12-12-0.447", "ast-finetuned-audioset-12-12-0.447", "0.447", "stride 12"),
    _audioset("ast-audioset-14-14-0.443", "ast-finetuned-audioset-14-14-0.443", "0.443", "stride 14"),
    _audioset("ast-audioset-16-16-0.442", "ast-finetuned-audioset-16-16-0.442", "0.442", "stride 16"),
    Weights(
        "ast-speech-commands-v2",
        "ast_base",
        ("hf://MIT/ast-finetuned-speech-commands-v2",),
        35,
        "speechcommands",
        False,
        16000,
        1.28,
        "Kaldi fbank, (x - (-6.845978)) / (2 x 5.5654526)",
        _AST[2],
        "Speech Commands V2-35 accuracy 98.1 %",
        _AST[0],
        _AST[1],
        defaults={"mean": -6.845978, "std": 5.5654526, "input_tdim": 128},
    ),
    _deit("deit_base_distilled_patch16_384", "ast_base", 85.2),
    _deit("deit_base_distilled_patch16_224", "ast_base", 83.4),
    _deit("deit_small_distilled_patch16_224", "ast_small", 81.2),
    _deit("deit_tiny_distilled_patch16_224", "ast_tiny", 74.5),
)

FAMILY = register_family(
    Family(
        "ast",
        tuple(AST_SIZES),
        "ast_micro",
        "fixed",
        "AST (Gong et al. 2021): Kaldi fbank padded or cut to 1024 frames, overlapping 16x16 patches, DeiT",
        "sed.models.pretrained.ast:IMPORTER",
        WEIGHTS,
        test_kwargs={"input_tdim": 98, "depth": 2},
    )
)
