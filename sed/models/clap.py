"""CLAP's audio tower as a sed clip model (LAION-CLAP, Wu et al. 2023, arXiv 2211.06687).

The implementation is transformers' ``ClapAudioModelWithProjection`` (HTSAT, the Swin-style audio
transformer, and the projection into the space CLAP shares with text): sed does not re-implement it.
:class:`ClapAudio` puts its front end inside (:class:`~sed.models.clap_frontend.ClapMel`: 48 kHz,
repeat-padded 10-s clips, the Slaney mel of the unfused checkpoints or the HTK mel and four channels of the
fused ones) and a head after it:

- ``embed(wave)`` is the projected audio embedding ``[B, projection_dim]`` (``ClapModel.get_audio_features``
  before its L2 normalisation);
- ``head`` is a linear layer on it (``num_classes=0``: none, the model only embeds). Zero-shot classes
  named by text are not a trained head but text prototypes: :func:`sed.models.zeroshot.zero_shot_classifier`
  wraps this model in a :class:`~sed.models.prototype.PrototypeClassifier` whose prototypes are the text
  embeddings and whose cosine scale is the checkpoint's ``exp(logit_scale_a)``, which is exactly
  ``ClapModel``'s ``logits_per_audio``.

Length policy: fixed. Every clip is repeat-padded (or cut) to ``clip_seconds`` (10 s); a longer file is
scored on its centre or by windows. A fused checkpoint scores a clip of up to 10 s as LAION's own inference
does (``laion_clap``'s ``get_audio_embedding_from_data``, the code behind the published numbers): without
its fusion branch (``is_longer`` False), from the first of the four identical mel channels; its fusion of
random chunks of longer clips is not reproduced. ``fuse_short_clips=True`` runs the fusion branch on every
clip instead, which is what transformers' feature extractor gives a clip scored alone (it marks one clip of
every batch without long clips as long, at random) and so its ``zero-shot-audio-classification`` pipeline on
one file. The importer of Hugging Face directories is :mod:`sed.models.pretrained.clap`."""

from __future__ import annotations

import warnings

import torch
from torch import nn

from sed.models.base import DescribedModel, build_sized
from sed.models.clap_frontend import ClapMel
from sed.models.family import Family, Weights, register_family
from sed.models.registry import register_model

__all__ = ["CLAP_SIZES", "ClapAudio", "audio_config", "clap_htsat_base", "clap_htsat_tiny"]

#: HTSAT widths of the released sizes (transformers' ``ClapAudioConfig``; LAION's HTSAT-tiny and HTSAT-base)
CLAP_SIZES: dict[str, dict] = {
    "clap_htsat_tiny": {"depths": (2, 2, 6, 2), "num_heads": (4, 8, 16, 32), "patch_embed_dim": 96},
    "clap_htsat_base": {"depths": (2, 2, 12, 2), "num_heads": (4, 8, 16, 32), "patch_embed_dim": 128},
}


def audio_config(kwargs: dict):
    """transformers' ``ClapAudioConfig`` of :class:`ClapAudio`'s architecture kwargs."""
    from transformers import ClapAudioConfig

    depths = list(kwargs["depths"])
    return ClapAudioConfig(
        depths=depths,
        num_attention_heads=list(kwargs["num_heads"]),
        patch_embeds_hidden_size=kwargs["patch_embed_dim"],
        hidden_size=kwargs["patch_embed_dim"] * 2 ** (len(depths) - 1),
        projection_dim=kwargs["projection_dim"],
        window_size=kwargs["window_size"],
        spec_size=kwargs["spec_size"],
        num_mel_bins=kwargs["num_mel_bins"],
        patch_size=kwargs["patch_size"],
        patch_stride=list(kwargs["patch_stride"]),
        mlp_ratio=kwargs["mlp_ratio"],
        qkv_bias=kwargs["qkv_bias"],
        layer_norm_eps=kwargs["layer_norm_eps"],
        enable_fusion=bool(kwargs["fused"]),
        fusion_type=kwargs["fusion_type"] if kwargs["fused"] else None,
        aff_block_r=kwargs["aff_block_r"],
        projection_hidden_act=kwargs["projection_hidden_act"],
        hidden_act=kwargs["hidden_act"],
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        drop_path_rate=0.0,
        initializer_factor=kwargs.get("initializer_factor", 1.0),
    )


class ClapAudio(DescribedModel, nn.Module):
    """CLAP's audio tower with its front end and a linear head; see the module docstring."""

    native_length = False

    def __init__(
        self,
        num_classes: int = 0,
        depths: tuple[int, ...] = (2, 2, 6, 2),
        num_heads: tuple[int, ...] = (4, 8, 16, 32),
        patch_embed_dim: int = 96,
        projection_dim: int = 512,
        window_size: int = 8,
        spec_size: int = 256,
        num_mel_bins: int = 64,
        patch_size: int = 4,
        patch_stride: tuple[int, int] = (4, 4),
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        layer_norm_eps: float = 1e-5,
        fused: bool = False,
        fuse_short_clips: bool = False,
        fusion_type: str = "aff_2d",
        aff_block_r: int = 4,
        projection_hidden_act: str = "relu",
        hidden_act: str = "gelu",
        initializer_factor: float = 1.0,
        sample_rate: int = 48000,
        clip_seconds: float = 10.0,
        n_fft: int = 1024,
        hop_length: int = 480,
        f_min: float = 50.0,
        f_max: float = 14000.0,
        labels: list[str] | None = None,
    ):
        super().__init__()
        from transformers import ClapAudioModelWithProjection

        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        if len(depths) != len(num_heads):
            raise ValueError(f"{len(depths)} stages (depths) but {len(num_heads)} head counts (num_heads)")
        if spec_size % num_mel_bins:
            raise ValueError(f"spec_size {spec_size} is not a multiple of num_mel_bins {num_mel_bins}")
        self.frontend = ClapMel(
            sample_rate, num_mel_bins, clip_seconds, n_fft, hop_length, f_min, f_max, fused
        )
        frames, longest = self.frontend.num_frames(), spec_size * (spec_size // num_mel_bins)
        if frames > longest:
            raise ValueError(
                f"a {clip_seconds}-s clip makes {frames} frames, more than HTSAT's {spec_size}x{spec_size} "
                f"spectrogram image holds ({longest})"
            )
        self.tower = ClapAudioModelWithProjection(audio_config(self._kwargs)).eval()
        self.num_classes, self.embed_dim, self.fused = int(num_classes), int(projection_dim), bool(fused)
        #: a fused model's fusion branch on clips of up to 10 s too (the module docstring)
        self.fuse_short_clips = self.fused and bool(fuse_short_clips)
        with warnings.catch_warnings():  # no head: a 0-output layer, whose init is a no-op that warns
            warnings.simplefilter("ignore", UserWarning)
            self.head = nn.Linear(self.embed_dim, self.num_classes)
        self.labels = labels

    @property
    def sample_rate(self) -> int:
        return self.frontend.sample_rate

    @property
    def clip_samples(self) -> int:
        return self.frontend.clip_samples

    @property
    def max_samples(self) -> int:
        return self.frontend.clip_samples

    @property
    def blocks(self) -> list[nn.Module]:
        """HTSAT's stages, then its final norm with the projection as one last block (what ``last_n``
        fine-tunes, :mod:`sed.tasks.transfer`)."""
        encoder = self.tower.audio_model.audio_encoder
        return [*encoder.layers, nn.ModuleList([encoder.norm, self.tower.audio_projection])]

    def reset_head(self) -> None:
        self.head.reset_parameters()

    def features(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Front end, always in float32: ``[B, T]`` -> ``[B, 1 or 4, frames, n_mels]`` dB."""
        with torch.autocast(device_type=wave.device.type, enabled=False):
            return self.frontend(wave.float(), lengths)

    def forward_fbank_pooled(self, feats: torch.Tensor) -> torch.Tensor:
        """Front-end output -> the projected audio embedding ``[B, projection_dim]``."""
        longer = None
        if self.fused:  # every clip is at most 10 s (repeat-padded or cut): long only with fuse_short_clips
            longer = torch.full(
                (feats.shape[0], 1), self.fuse_short_clips, dtype=torch.bool, device=feats.device
            )
        return self.tower(input_features=feats, is_longer=longer).audio_embeds

    def forward_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        """Logits from front-end output (a training task augments the features in between)."""
        return self.head(self.forward_fbank_pooled(feats))

    def embed(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The projected audio embedding ``[B, projection_dim]`` of waveforms ``[B, T]``."""
        return self.forward_fbank_pooled(self.features(wave, lengths))

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Waveform ``[B, T]`` -> logits ``[B, num_classes]`` of the linear head."""
        return self.head(self.embed(wave, lengths))


# ---------------------------------------------------------------------- registered sizes
@register_model
def clap_htsat_tiny(num_classes: int = 0, **kwargs) -> ClapAudio:
    """LAION-CLAP's HTSAT-tiny audio tower (96 wide, depths 2-2-6-2; 28 M parameters with the projection)."""
    return build_sized(ClapAudio, CLAP_SIZES, "clap_htsat_tiny", num_classes, kwargs)


@register_model
def clap_htsat_base(num_classes: int = 0, **kwargs) -> ClapAudio:
    """LAION-CLAP's HTSAT-base audio tower (128 wide, depths 2-2-12-2), of the larger_clap checkpoints."""
    return build_sized(ClapAudio, CLAP_SIZES, "clap_htsat_base", num_classes, kwargs)


# ---------------------------------------------------------------------- the family and its public weights
def _weights(name: str, arch: str, repo: str, metric: str, citation: str) -> Weights:
    return Weights(
        name,
        arch,
        (f"hf://{repo}",),
        None,
        None,
        False,
        48000,
        10.0,
        "dB mel (no normalisation); repeat-padded 10-s clips",
        "Apache-2.0 (Hugging Face model card)",
        metric,
        citation,
        f"https://huggingface.co/{repo}",
    )


_PAPER = "Wu et al. 2023, LAION-CLAP, arXiv 2211.06687"
#: the published ESC-50 zero-shot numbers are LAION-AI/CLAP's README's, of its .pt releases; which release
#: each Hugging Face repository was converted from is not stated: paired by architecture and description
_ESC50 = "ESC-50 zero-shot top-1 {} (LAION-AI/CLAP README, {}; release {}, paired by {})"
WEIGHTS = (
    _weights(
        "clap-htsat-unfused",
        "clap_htsat_tiny",
        "laion/clap-htsat-unfused",
        _ESC50.format("92.75 %", "fold 1", "630k-audioset-best", "architecture"),
        _PAPER,
    ),
    _weights(
        "clap-htsat-fused",
        "clap_htsat_tiny",
        "laion/clap-htsat-fused",
        _ESC50.format("90.50 %", "fold 1", "630k-audioset-fusion-best", "architecture"),
        _PAPER,
    ),
    _weights(
        "clap-larger-general",
        "clap_htsat_base",
        "laion/larger_clap_general",
        _ESC50.format("89.98 %", "protocol not stated", "music_speech_audioset_epoch_15", "description"),
        _PAPER,
    ),
)

FAMILY = register_family(
    Family(
        "clap",
        tuple(CLAP_SIZES),
        "clap_htsat_tiny",
        "fixed",
        "LAION-CLAP (Wu et al. 2023): HTSAT audio tower of transformers' ClapModel, 48 kHz repeat-padded "
        "10-s clips; zero-shot classes by text",
        "sed.models.pretrained.clap:IMPORTER",
        WEIGHTS,
        test_kwargs={
            "clip_seconds": 1.0,
            "sample_rate": 16000,
            "n_fft": 512,
            "hop_length": 160,
            "f_max": 8000.0,
            "num_mel_bins": 32,
            "spec_size": 128,
            "depths": (1, 1),
            "num_heads": (1, 2),
            "patch_embed_dim": 16,
            "projection_dim": 16,
            "initializer_factor": 20.0,  # random 16-d embeddings of noise clips far enough apart for a probe
        },
    )
)
