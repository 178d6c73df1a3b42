"""CED: Consistent Ensemble Distillation audio transformers (Dinkel et al. 2023, arXiv 2308.11957).

Waveform ``[B, T]`` at 16 kHz -> :class:`CEDMel` (centred 512-point STFT, 160 hop, 64 HTK mel bins
0-8 kHz, power in dB with a 120 dB floor) ``[B, input_tdim, 64]`` -> ``init_bn`` (BatchNorm over the
mel bins) -> non-overlapping 16x16 patches -> ``+ time_pos_embed[:t] + freq_pos_embed`` (separate,
so shorter inputs use the first ``t`` time positions) -> frequency-major tokens -> timm ViT blocks
(:mod:`sed.models.transformer`, LayerNorm eps 1e-6) -> LayerNorm -> mean over tokens -> ``head``
(LayerNorm + Linear; the reference ``outputlayer``). AudioSet heads are multi-label (sigmoid).

Length policy (the reference's ``forward``): each clip runs at its own length; up to ``target_length``
frames (1012, ~10.1 s) as one piece with the first ``t`` time positions, longer inputs cut into chunks of
``target_length`` frames (the last zero-padded after ``init_bn``), each classified on its own and the
chunk outputs averaged: ``chunk_average="prob"`` (the original release) averages sigmoid probabilities
(the logits returned are those whose sigmoid is that mean), ``"embedding"`` averages the pooled
embeddings before the head (the Hugging Face port, for one clip). :meth:`CEDModel.embed` is always
the mean pooled embedding over chunks. At an exact multiple of ``target_length`` frames the original
``forward_spectrogram`` drops the last chunk (its ``else: splits[:-1]``); here every chunk counts.
In a batch of clips of different lengths each length runs on its own (:func:`~sed.models.base.per_length`),
so a clip scores as it does alone. A clip shorter than one patch (16 frames, 0.15 s) is zero-padded to one
(the reference cannot score it). ``input_tdim`` (1001 frames = 10 s) is only the clip length of training
data. An exported ONNX graph holds one chunk (at most ``target_length`` frames), as CED's own
``export_onnx.py`` does.

Parameter names follow the original ``AudioTransformer`` (``init_bn``, ``patch_embed.proj``,
``time_pos_embed``, ``freq_pos_embed``, ``blocks.N.*``, ``norm``) with ``head`` for its
``outputlayer``; :mod:`sed.models.pretrained.ced` maps the released files onto them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import nn

from sed.augment.patch_mix import patch_mix
from sed.models.base import DescribedModel, pad_to, per_length
from sed.models.ced_frontend import CEDMel
from sed.models.family import Family, Weights, register_family
from sed.models.frames import FrameOutputs, clip_logits
from sed.models.norm import warm_start_batchnorm
from sed.models.registry import register_model
from sed.models.transformer import vit_blocks

__all__ = ["CED_SIZES", "CEDMel", "CEDModel", "ced_base", "ced_mini", "ced_small", "ced_tiny"]

#: width / depth / heads of the released sizes (models/audiotransformer.py ``ced_*``)
CED_SIZES: dict[str, dict] = {
    "ced_tiny": {"embed_dim": 192, "depth": 12, "num_heads": 3},
    "ced_mini": {"embed_dim": 256, "depth": 12, "num_heads": 4},
    "ced_small": {"embed_dim": 384, "depth": 12, "num_heads": 6},
    "ced_base": {"embed_dim": 768, "depth": 12, "num_heads": 12},
}


class CEDModel(FrameOutputs, DescribedModel, nn.Module):
    """The CED audio transformer with its front end; see the module docstring (length policy: native,
    chunked beyond ``target_length`` frames).

    ``frame_pooling`` (:mod:`sed.models.frames`): a frame model whose frames are the 16-frame patch columns
    (tokens averaged over frequency), 0.16 s apart; longer inputs are chunked as the clip model does, in
    chunks of whole patches (``target_length`` rounded down to a multiple of 16: 1008 frames) so that
    the frames of consecutive chunks, concatenated, stay evenly spaced."""

    native_length = True

    def __init__(
        self,
        num_classes: int = 527,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        patch_size: int = 16,
        num_mel_bins: int = 64,
        target_length: int = 1012,
        input_tdim: int = 1001,
        chunk_average: str = "prob",
        pad_last: bool = True,
        sample_rate: int = 16000,
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
        if min(input_tdim, target_length, num_mel_bins) < patch_size:
            raise ValueError(
                f"input {input_tdim} frames (chunks of {target_length}) x {num_mel_bins} mel bins "
                f"is smaller than one {patch_size}x{patch_size} patch"
            )
        if chunk_average not in ("prob", "embedding"):
            raise ValueError(f"chunk_average must be 'prob' or 'embedding', got {chunk_average!r}")
        self.num_classes, self.embed_dim, self.patch_size = int(num_classes), int(embed_dim), int(patch_size)
        self.input_tdim, self.target_length, self.num_mel_bins = (
            int(input_tdim),
            int(target_length),
            int(num_mel_bins),
        )
        self.chunk_average, self.pad_last = chunk_average, bool(pad_last)
        self.frontend = CEDMel(sample_rate, num_mel_bins, None)
        self.init_bn = warm_start_batchnorm(nn.BatchNorm1d(num_mel_bins, momentum=0.01))  # sed.models.norm
        self.patch_embed = nn.Conv2d(1, embed_dim, kernel_size=patch_size, stride=patch_size)
        f, t0 = num_mel_bins // patch_size, target_length // patch_size
        self.time_pos_embed = nn.Parameter(torch.randn(1, embed_dim, 1, t0) * 0.02)
        self.freq_pos_embed = nn.Parameter(torch.randn(1, embed_dim, f, 1) * 0.02)
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
            eps=1e-6,
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.init_frames(embed_dim, frame_pooling)
        self.labels = labels

    # ------------------------------------------------------------------ description
    @property
    def sample_rate(self) -> int:
        return self.frontend.sample_rate

    @property
    def clip_samples(self) -> int:
        """Waveform samples that fill exactly ``input_tdim`` frames (centred STFT:
        ``(input_tdim - 1) * hop``): the clip length of training data."""
        return (self.input_tdim - 1) * self.frontend.hop

    #: any length (chunked beyond ``target_length`` frames)
    max_samples = None

    @property
    def onnx_max_samples(self) -> int:
        """The longest input of an exported graph: one chunk of ``target_length`` frames."""
        return self.target_length * self.frontend.hop - 1

    @property
    def patch_samples(self) -> int:
        """The shortest waveform that fills one patch (16 frames: 2,400 samples at 16 kHz)."""
        return (self.patch_size - 1) * self.frontend.hop

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid ``(f, t)`` of one chunk of the model's input: rows are frequency, columns time."""
        return self.num_mel_bins // self.patch_size, min(
            self.input_tdim, self.target_length
        ) // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def reset_head(self) -> None:
        """Fresh ``head`` (LayerNorm + Linear) for new classes."""
        self.head[0].reset_parameters()
        trunc_normal_(self.head[1].weight, std=0.02)
        nn.init.zeros_(self.head[1].bias)

    # ------------------------------------------------------------------ forward pieces
    def features(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Front end, always in float32 (also under autocast): ``[B, T]`` -> ``[B, 1 + T // hop, n_mels]`` dB;
        a waveform shorter than one patch is zero-padded to one (not under export)."""
        wave = pad_to(wave, self.patch_samples)
        with torch.autocast(device_type=wave.device.type, enabled=False):
            return self.frontend(wave.float(), lengths)

    def _chunks(self, feats: torch.Tensor, n: int | None = None) -> tuple[torch.Tensor, int]:
        """``[B, T, F]`` dB features -> batch-normalised ``[S * B, 1, F, t]`` chunks (chunk-major) of ``n``
        frames (default ``target_length``) and ``S``."""
        if feats.dim() != 3 or feats.shape[-1] != self.num_mel_bins:
            raise ValueError(
                f"CED expects features [B, frames, {self.num_mel_bins}], got {tuple(feats.shape)}"
            )
        x = self.init_bn(feats.transpose(1, 2))  # [B, F, T]
        n = n or self.target_length
        if torch.compiler.is_exporting() or x.shape[-1] <= n:  # an exported graph holds one chunk
            return x.unsqueeze(1), 1
        splits = list(x.split(n, dim=-1))
        if splits[-1].shape[-1] < n:
            if self.pad_last:
                splits[-1] = F.pad(splits[-1], (0, n - splits[-1].shape[-1]))
            else:
                splits = splits[:-1]
        return torch.cat(splits, dim=0).unsqueeze(1), len(splits)

    def patchify(self, feats: torch.Tensor) -> torch.Tensor:
        """``[B, input_tdim, n_mels]`` (one chunk) -> patch tokens ``[B, f*t, D]``, frequency-major, before
        the positional embeddings (where Patch-Mix mixes)."""
        x, s = self._chunks(feats)
        if s != 1:
            raise ValueError(
                f"patch tokens are for inputs of at most target_length={self.target_length} frames"
            )
        return self.patch_embed(x).flatten(2).transpose(1, 2)

    def forward_tokens(self, patches: torch.Tensor, grid: tuple[int, int] | None = None):
        """Patch tokens ``[B, f*t, D]`` -> (mean pooled ``[B, D]``, normed tokens ``[B, f*t, D]``)."""
        f, t = grid or self.grid
        b, n, d = patches.shape
        if n != f * t:
            raise ValueError(f"{n} patch tokens do not fill a {f}x{t} grid")
        x = patches.transpose(1, 2).reshape(b, d, f, t)
        x = x + self.time_pos_embed[..., :t] + self.freq_pos_embed
        x = self.norm(self.blocks(self.pos_drop(x.flatten(2).transpose(1, 2))))
        return x.mean(dim=1), x

    def _chunk_tokens(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(pooled per chunk ``[S, B, D]``, normed tokens ``[S, B, N, D]``, S)."""
        x, s = self._chunks(feats)
        x = self.patch_embed(x)
        grid = tuple(x.shape[-2:])
        pooled, tokens = self.forward_tokens(x.flatten(2).transpose(1, 2), grid)
        b = feats.shape[0]
        return pooled.reshape(s, b, -1), tokens.reshape(s, b, *tokens.shape[1:]), s

    def forward_fbank_features(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """dB features ``[B, T, n_mels]`` -> (pooled ``[B, D]``: the mean over chunks, tokens
        ``[B, S*N, D]``: each chunk's normed tokens in turn)."""
        pooled, tokens, s = self._chunk_tokens(feats)
        return pooled.mean(0), tokens.transpose(0, 1).flatten(1, 2)

    def forward_fbank_pooled(self, feats: torch.Tensor) -> torch.Tensor:
        return self._chunk_tokens(feats)[0].mean(0)

    def forward_head(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.head(pooled)

    @property
    def frame_hop(self) -> float:
        return self.patch_size * self.frontend.hop / self.sample_rate

    @property
    def _frame_chunk(self) -> int:
        return self.target_length // self.patch_size * self.patch_size

    def num_frames(self, num_samples: int) -> int:
        frames, chunk = self.frontend.num_frames(max(int(num_samples), self.patch_samples)), self._frame_chunk
        if self.pad_last or frames <= chunk:
            return frames // self.patch_size
        return frames // chunk * (chunk // self.patch_size)

    def frame_sequence(self, feats: torch.Tensor) -> torch.Tensor:
        """Frames ``[B, F, D]``: each chunk's patch columns (tokens averaged over frequency) in turn, cut
        to the columns that hold the input."""
        x, s = self._chunks(feats, self._frame_chunk)
        x = self.patch_embed(x)
        grid = tuple(x.shape[-2:])
        tokens = self.forward_tokens(x.flatten(2).transpose(1, 2), grid)[1]  # [S * B, f * t, D]
        frames = tokens.unflatten(1, grid).mean(1).unflatten(0, (s, feats.shape[0]))  # [S, B, t, D]
        return frames.transpose(0, 1).flatten(1, 2)[:, : feats.shape[1] // self.patch_size]

    def forward_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        """Logits from dB features; several chunks are combined by ``chunk_average``."""
        if self.frame_pooling is not None:
            return clip_logits(self.frames_from_features(feats)[1])
        pooled, _, s = self._chunk_tokens(feats)
        if s == 1 or self.chunk_average == "embedding":
            return self.head(pooled.mean(0))
        logits = self.head(pooled)  # [S, B, C]; logit(mean_s sigmoid(l_s)), computed without overflow:
        return torch.logsumexp(F.logsigmoid(logits), 0) - torch.logsumexp(F.logsigmoid(-logits), 0)

    def forward_features(self, wave: torch.Tensor, lengths: torch.Tensor | None = None):
        return self.forward_fbank_features(self.features(wave, lengths))

    def embed(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The pooled embedding ``[B, D]`` (mean over tokens, then over chunks); each clip at its own
        length."""
        if lengths is not None:
            return per_length(self.embed, wave, lengths)
        return self.forward_fbank_pooled(self.features(wave))

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Waveform ``[B, T]`` at 16 kHz (``lengths``: valid samples per clip) -> logits ``[B, C]``; each
        clip at its own length."""
        if self.frame_pooling is not None:
            return self.clip_from_frames(wave, lengths)
        if lengths is not None:
            return per_length(self.forward, wave, lengths)
        return self.forward_from_features(self.features(wave))

    def forward_patch_mix(
        self,
        feats: torch.Tensor,
        y: torch.Tensor,
        beta: float = 1.0,
        generator: torch.Generator | None = None,
        time_domain: bool = False,
    ):
        """Patch-Mix forward (as :meth:`sed.models.ast.ASTModel.forward_patch_mix`): features and labels
        ``[B]`` -> ``(logits, pooled, y_a, y_b, lam, index)``; patch tokens are mixed before the
        positional embeddings."""
        patches, y_a, y_b, lam, index = patch_mix(
            self.patchify(feats), y, beta, generator, time_domain=time_domain, grid=self.grid
        )
        pooled = self.forward_tokens(patches)[0]
        return self.head(pooled), pooled, y_a, y_b, lam, index


def adapt_time_pos_embed(pos: torch.Tensor, t: int) -> torch.Tensor:
    """The reference's ``change_pos_embedding`` for ``[1, D, 1, t0]`` time embeddings: keep the first
    ``t`` positions, or interpolate bilinearly (align_corners False) to ``t``."""
    if t <= pos.shape[-1]:
        return pos[..., :t]
    return F.interpolate(pos, size=(1, t), mode="bilinear", align_corners=False)


def adapt_freq_pos_embed(pos: torch.Tensor, f: int) -> torch.Tensor:
    """As :func:`adapt_time_pos_embed` for ``[1, D, f0, 1]`` frequency embeddings."""
    if f <= pos.shape[-2]:
        return pos[:, :, :f]
    return F.interpolate(pos, size=(f, 1), mode="bilinear", align_corners=False)


# ---------------------------------------------------------------------- registered sizes
def _build(size: str, num_classes: int, kwargs: dict) -> CEDModel:
    return CEDModel(num_classes=num_classes, **{**CED_SIZES[size], **kwargs})


@register_model
def ced_tiny(num_classes: int = 527, **kwargs) -> CEDModel:
    """CED-Tiny (192 wide, 12 layers, 3 heads; 5.5 M parameters, AudioSet mAP 48.1)."""
    return _build("ced_tiny", num_classes, kwargs)


@register_model
def ced_mini(num_classes: int = 527, **kwargs) -> CEDModel:
    """CED-Mini (256 wide, 12 layers, 4 heads; 9.6 M parameters, AudioSet mAP 49.0)."""
    return _build("ced_mini", num_classes, kwargs)


@register_model
def ced_small(num_classes: int = 527, **kwargs) -> CEDModel:
    """CED-Small (384 wide, 12 layers, 6 heads; 22 M parameters, AudioSet mAP 49.6)."""
    return _build("ced_small", num_classes, kwargs)


@register_model
def ced_base(num_classes: int = 527, **kwargs) -> CEDModel:
    """CED-Base (768 wide, 12 layers, 12 heads; 86 M parameters, AudioSet mAP 50.0)."""
    return _build("ced_base", num_classes, kwargs)


# ---------------------------------------------------------------------- the family and its public weights
def _weights(size: str, params: str, mean_ap: float, zenodo: str) -> Weights:
    name = size.replace("_", "-")
    return Weights(
        name,
        size,
        (f"hf://mispeech/{name}", zenodo),
        527,
        "audioset",
        True,
        16000,
        10.0,
        "dB mel (top_db 120), then init_bn (BatchNorm over the 64 bins)",
        "GPL-3.0 (RicherMans/CED repository)",
        f"AudioSet-2M mAP {mean_ap} ({params} parameters)",
        "Dinkel et al. 2023, CED, arXiv 2308.11957, Table 2",
        "https://github.com/RicherMans/CED",
    )


_ZENODO = "https://zenodo.org/record/8275347/files/"
WEIGHTS = (
    _weights("ced_tiny", "5.5 M", 48.1, _ZENODO + "audiotransformer_tiny_mAP_4814.pt"),
    _weights("ced_mini", "9.6 M", 49.0, _ZENODO + "audiotransformer_mini_mAP_4896.pt"),
    _weights(
        "ced_small",
        "22 M",
        49.6,
        "https://zenodo.org/record/8275319/files/audiotransformer_small_mAP_4958.pt",
    ),
    _weights("ced_base", "86 M", 50.0, _ZENODO + "audiotransformer_base_mAP_4999.pt"),
)

FAMILY = register_family(
    Family(
        "ced",
        tuple(CED_SIZES),
        "ced_tiny",
        "native",
        "CED (Dinkel et al. 2023): 64-bin dB mel, 16x16 patches, ViT with separate time/frequency positions",
        "sed.models.pretrained.ced:IMPORTER",
        WEIGHTS,
        test_kwargs={"input_tdim": 101, "depth": 2},
    )
)
