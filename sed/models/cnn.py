"""Compact CNN students: MobileNetV2/V3-style inverted residual blocks on the AST fbank.

Waveform ``[B, T]`` at 16 kHz -> :class:`~sed.audio.features.KaldiFbank` ``[B, frames, bins]``
(AST's features, by default 64 mel bins and AudioSet normalisation) -> image ``[B, 1, frames, bins]``
(time is the height, frequency the width) -> stem (3x3 conv, stride 2, BN, Hardswish) ->
``blocks``: stages of inverted residual blocks (1x1 expand, 3x3 depthwise, squeeze-and-excitation,
1x1 project, BN; identity shortcut when stride is 1 and the width is unchanged); the first block of
every stage but the first has stride 2 and the last stage ends with a 1x1 conv to ``embed_dim``
channels -> global average pooling over time and frequency -> ``head = Dropout + Linear`` -> logits.

The model has AST's interface (:class:`~sed.models.ast.ASTModel`): ``features``,
``forward_from_features``, ``forward_features``, ``embed``, ``forward``, ``labels``, ``blocks``,
``head``, ``reset_head``, ``sed_kwargs``, so training, checkpoints and inference treat both alike.
``forward_features`` returns the feature map ``[B, embed_dim, ~frames/32, ~bins/32]`` where AST returns
tokens. Unlike AST, ``forward_from_features`` takes any number of frames (the pooling is global);
the front end still pads or crops waves to ``input_tdim`` frames.

64 mel bins by default (as PANNs' CNNs): half AST's 128, which halves the compute of every layer.
Pass ``num_mel_bins=128`` (or AST's name, ``input_fdim``) for a student that sees a teacher's features.

Parameter counts with a 50-class head (ESC-50): ``cnn_tiny`` 0.30 M, ``cnn_small`` 0.98 M,
``cnn_base`` 3.04 M (a 527-class AudioSet head adds 0.18 / 0.24 / 0.37 M).
"""

from __future__ import annotations

import torch
from timm.layers import DropPath, SqueezeExcite, make_divisible
from torch import nn

from sed.audio.features import AUDIOSET_MEAN, AUDIOSET_STD, KaldiFbank
from sed.models.base import FbankClassifier, build_sized, resolve_tdim
from sed.models.family import Family, register_family
from sed.models.frames import FrameOutputs, time_halvings
from sed.models.registry import register_model

__all__ = ["CNN_SIZES", "CNNModel", "InvertedResidual", "cnn_base", "cnn_small", "cnn_tiny"]

#: architecture of the registered sizes: stem width, per-stage widths and block counts, expansion
#: ratio of the inverted residuals, width of the final 1x1 conv (the embedding).
CNN_SIZES: dict[str, dict] = {
    "cnn_tiny": {
        "stem_dim": 16,
        "widths": [16, 24, 48, 80, 112],
        "depths": [1, 2, 2, 2, 1],
        "expand_ratio": 3.0,
        "embed_dim": 384,
    },
    "cnn_small": {
        "stem_dim": 16,
        "widths": [16, 32, 48, 88, 136],
        "depths": [1, 2, 3, 3, 2],
        "expand_ratio": 4.0,
        "embed_dim": 512,
    },
    "cnn_base": {
        "stem_dim": 24,
        "widths": [24, 40, 80, 128, 200],
        "depths": [1, 2, 3, 4, 3],
        "expand_ratio": 4.0,
        "embed_dim": 768,
    },
}


def _conv_bn(
    cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: bool = True
) -> nn.Sequential:
    layers = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.Hardswish(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """1x1 expand -> 3x3 depthwise (``stride``) -> SE -> 1x1 project (BN, no activation), plus the
    input when the shapes match (MobileNetV2 with MobileNetV3's SE and Hardswish)."""

    def __init__(
        self,
        cin: int,
        cout: int,
        stride: int = 1,
        expand_ratio: float = 4.0,
        se_ratio: float = 0.25,
        drop_path: float = 0.0,
    ):
        super().__init__()
        hidden = make_divisible(cin * expand_ratio, 8)
        self.expand = _conv_bn(cin, hidden) if hidden != cin else nn.Identity()
        self.dw = _conv_bn(hidden, hidden, 3, stride, groups=hidden)
        self.se = (
            SqueezeExcite(hidden, rd_ratio=se_ratio, gate_layer="hard_sigmoid")
            if se_ratio > 0
            else nn.Identity()
        )
        self.project = _conv_bn(hidden, cout, act=False)
        self.has_skip = stride == 1 and cin == cout
        self.drop_path = DropPath(drop_path) if drop_path > 0 and self.has_skip else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.dw(self.expand(x))))
        return x + self.drop_path(y) if self.has_skip else y


class CNNModel(FrameOutputs, FbankClassifier, nn.Module):
    """A compact CNN classifier with its own front end; see the module docstring.

    ``depth`` keeps only the first ``depth`` stages of ``widths``/``depths`` (a shallower net);
    ``clip_seconds`` sets ``input_tdim`` to the frames of that many seconds (default 5 s = 498 frames).
    ``bn_momentum`` is PyTorch's BatchNorm default; in very short runs (a few steps per epoch) the
    running statistics need ~20-30 steps before eval-mode scores mean anything, and 0.3 shortens that.
    ``frame_pooling`` (:mod:`sed.models.frames`): a frame model whose frames are the time steps of the map
    before global pooling averaged over frequency: one per ``2**stages`` fbank frames (0.32 s).
    """

    fixed_frames = True

    def __init__(
        self,
        num_classes: int = 527,
        stem_dim: int = 16,
        widths: list[int] | tuple[int, ...] = (16, 32, 48, 88, 136),
        depths: list[int] | tuple[int, ...] = (1, 2, 3, 3, 2),
        expand_ratio: float = 4.0,
        se_ratio: float = 0.25,
        embed_dim: int = 512,
        depth: int | None = None,
        num_mel_bins: int = 64,
        input_tdim: int | None = None,
        clip_seconds: float | None = None,
        sample_rate: int = 16000,
        mean: float = AUDIOSET_MEAN,
        std: float = AUDIOSET_STD,
        drop_rate: float = 0.2,
        drop_path_rate: float = 0.0,
        bn_momentum: float = 0.1,
        labels: list[str] | None = None,
        frame_pooling: str | None = None,
    ):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        widths, depths = [int(w) for w in widths], [int(d) for d in depths]
        if len(widths) != len(depths) or not widths or min(depths) < 1:
            raise ValueError(
                f"widths {widths} and depths {depths} must be equally long, non-empty, depths >= 1"
            )
        if depth is not None:
            if not 1 <= depth <= len(widths):
                raise ValueError(f"depth must be 1..{len(widths)} stages, got {depth}")
            widths, depths = widths[:depth], depths[:depth]
        input_tdim = resolve_tdim(input_tdim, clip_seconds, sample_rate, num_mel_bins)
        self.record_kwargs(input_tdim=input_tdim, clip_seconds=None, widths=widths, depths=depths, depth=None)
        self.num_classes, self.embed_dim = int(num_classes), int(embed_dim)
        self.input_tdim, self.input_fdim = input_tdim, int(num_mel_bins)
        self.frontend = KaldiFbank(sample_rate, num_mel_bins, input_tdim, mean, std)
        self.stem = _conv_bn(1, stem_dim, 3, 2)
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()  # also on the meta device
        stages, cin, k = [], stem_dim, 0
        for i, (width, n) in enumerate(zip(widths, depths)):
            stage = []
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                stage.append(InvertedResidual(cin, width, stride, expand_ratio, se_ratio, dpr[k]))
                cin, k = width, k + 1
            stages.append(nn.Sequential(*stage))
        stages[-1].append(_conv_bn(cin, embed_dim))  # the last stage ends at the embedding width
        self.blocks = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.Dropout(drop_rate), nn.Linear(embed_dim, num_classes))
        self._init_weights(bn_momentum)
        self.time_strides = len(widths)  # the stem's and the first block's of each later stage
        self.init_frames(embed_dim, frame_pooling)
        self.labels = labels

    # ------------------------------------------------------------------ init and description
    def _init_weights(self, bn_momentum: float) -> None:
        """He init on fan-in (a depthwise conv's fan-in is its 9 taps), so every BN sees inputs of
        about unit variance from the first step: the running statistics start near their target.
        Residual branches end in a zero-scaled BN, so every block starts as the identity."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
                m.momentum = bn_momentum
        for m in self.modules():
            if isinstance(m, InvertedResidual) and m.has_skip:
                nn.init.zeros_(m.project[1].weight)
        self.reset_head()

    def reset_head(self) -> None:
        """A fresh classifier (``head[1]``), e.g. before fine-tuning to new classes."""
        nn.init.normal_(self.head[1].weight, std=0.01)
        nn.init.zeros_(self.head[1].bias)

    # ------------------------------------------------------------------ forward pieces

    def forward_fbank_features(self, fbank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features ``[B, frames, bins]`` -> (pooled ``[B, embed_dim]``, map
        ``[B, embed_dim, frames', bins']``)."""
        if fbank.dim() != 3 or fbank.shape[-1] != self.input_fdim:
            raise ValueError(f"CNN expects features [B, frames, {self.input_fdim}], got {tuple(fbank.shape)}")
        fmap = self.blocks(self.stem(fbank.unsqueeze(1)))
        return fmap.mean(dim=(2, 3)), fmap

    def forward_head(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.head(pooled)

    @property
    def frame_hop(self) -> float:
        return self.frontend.hop * 2**self.time_strides / self.sample_rate

    def num_frames(self, num_samples: int) -> int:
        return time_halvings(self.input_tdim, self.time_strides)  # fixed length: padded or cut

    def frame_sequence(self, fbank: torch.Tensor) -> torch.Tensor:
        """Frames ``[B, F, embed_dim]``: the map before global pooling averaged over frequency."""
        return self.forward_fbank_features(fbank)[1].mean(3).transpose(1, 2)

    def forward_fbank(self, fbank: torch.Tensor) -> torch.Tensor:
        return self.forward_from_features(fbank)


# ---------------------------------------------------------------------- registered sizes
@register_model
def cnn_tiny(num_classes: int = 527, **kwargs) -> CNNModel:
    """~0.3 M parameters (50 classes): 5 stages 16-112 wide, 8 blocks, 384-d embedding."""
    return build_sized(CNNModel, CNN_SIZES, "cnn_tiny", num_classes, kwargs)


@register_model
def cnn_small(num_classes: int = 527, **kwargs) -> CNNModel:
    """~1 M parameters (50 classes): 5 stages 16-136 wide, 11 blocks, 512-d embedding."""
    return build_sized(CNNModel, CNN_SIZES, "cnn_small", num_classes, kwargs)


@register_model
def cnn_base(num_classes: int = 527, **kwargs) -> CNNModel:
    """~3 M parameters (50 classes): 5 stages 24-200 wide, 13 blocks, 768-d embedding."""
    return build_sized(CNNModel, CNN_SIZES, "cnn_base", num_classes, kwargs)


FAMILY = register_family(
    Family(
        "cnn",
        tuple(CNN_SIZES),
        "cnn_tiny",
        "fixed",
        "compact CNN students: inverted residual blocks on the AST fbank (64 bins); trained here, no public "
        "weights",
        test_kwargs={"clip_seconds": 1.0},
    )
)
