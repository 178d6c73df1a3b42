"""EfficientAT MobileNets (Schmid, Koutini, Widmer, ICASSP 2023: "Efficient large-scale audio tagging via
transformer-to-CNN knowledge distillation"), the ``mn`` models of github.com/fschmid56/EfficientAT.

Waveform ``[B, T]`` at 32 kHz -> :class:`~sed.models.efficientat_frontend.EfficientATMel` ``[B, frames,
128]`` -> image ``[B, 1, 128, frames]`` (frequency is the height, as in the reference) -> ``stem``
(3x3 conv, stride 2, BN, Hardswish) -> ``blocks``: the 15 inverted residual blocks of MobileNetV3-Large
(1x1 expand, kxk depthwise, channel squeeze-and-excitation where the table says so, 1x1 project; BN
eps 1e-3, momentum 0.01, warm-started by :mod:`sed.models.norm`) with every width scaled by ``width_mult``
and rounded to a multiple of 8 ->
``last_conv`` (1x1 to 6x the last block's width, BN, Hardswish) -> global average pooling (the
embedding) -> ``head``: Linear -> Hardswish -> Dropout -> Linear (the reference's "mlp" head, the one
of the released AudioSet checkpoints). Scores are sigmoids (multi-label AudioSet).

Length policy (the reference's ``inference.py``): each clip runs at its own length (the pooling is
global); in a batch of clips of different lengths each length runs on its own
(:func:`~sed.models.base.per_length`), so a clip scores as it does alone. The reference's *training*
data sets zero-pad clips to 10 s; ``input_tdim`` (1000 frames = 10 s) is that clip length of training data.

Parameter names follow the reference with its ``features`` split: ``features.0`` is ``stem``,
``features.1..15`` are ``blocks.0..14``, ``features.16`` is ``last_conv``, ``classifier.2/5`` are
``head.0/3``, and a block's SE ``block.N.conc_se_layers.0.fc1`` is ``block.N.fc1``
(:mod:`sed.models.pretrained.efficientat` imports the release ``.pt`` files; the sizes' ``pretrained=``).
"""

from __future__ import annotations

import torch
from timm.layers import make_divisible
from torch import nn

from sed.models.base import FbankClassifier, build_sized
from sed.models.efficientat_frontend import EfficientATMel
from sed.models.family import Family, Weights, register_family
from sed.models.frames import FrameOutputs, time_halvings
from sed.models.norm import warm_start_batchnorm
from sed.models.registry import register_model

__all__ = [
    "EFFICIENTAT_SIZES",
    "EfficientATModel",
    "block_settings",
    "efficientat_mn04",
    "efficientat_mn05",
    "efficientat_mn10",
    "efficientat_mn20",
    "efficientat_mn30",
    "efficientat_mn40",
]

EFFICIENTAT_SIZES: dict[str, dict] = {
    "efficientat_mn04": {"width_mult": 0.4},
    "efficientat_mn05": {"width_mult": 0.5},
    "efficientat_mn10": {"width_mult": 1.0},
    "efficientat_mn20": {"width_mult": 2.0},
    "efficientat_mn30": {"width_mult": 3.0},
    "efficientat_mn40": {"width_mult": 4.0},
}

#: MobileNetV3-Large (Howard et al. 2019, Table 1) as the reference uses it: input width, kernel,
#: expanded width, output width, squeeze-and-excitation, Hardswish (else ReLU), stride (0: one of the
#: four ``strides``, 2 in the published models).
_TABLE = (
    (16, 3, 16, 16, False, False, 1),
    (16, 3, 64, 24, False, False, 0),
    (24, 3, 72, 24, False, False, 1),
    (24, 5, 72, 40, True, False, 0),
    (40, 5, 120, 40, True, False, 1),
    (40, 5, 120, 40, True, False, 1),
    (40, 3, 240, 80, False, True, 0),
    (80, 3, 200, 80, False, True, 1),
    (80, 3, 184, 80, False, True, 1),
    (80, 3, 184, 80, False, True, 1),
    (80, 3, 480, 112, True, True, 1),
    (112, 3, 672, 112, True, True, 1),
    (112, 5, 672, 160, True, True, 0),
    (160, 5, 960, 160, True, True, 1),
    (160, 5, 960, 160, True, True, 1),
)


def _width(channels: float, width_mult: float) -> int:
    return make_divisible(channels * width_mult, 8)


def block_settings(width_mult: float, strides=(2, 2, 2, 2)) -> list[tuple]:
    """The 15 blocks at ``width_mult``: ``(cin, kernel, expanded, cout, se, hardswish, stride)``."""
    it = iter(strides)
    return [
        (_width(ci, width_mult), k, _width(ce, width_mult), _width(co, width_mult), se, hs, s or next(it))
        for ci, k, ce, co, se, hs, s in _TABLE
    ]


def conv_bn_act(
    cin: int,
    cout: int,
    kernel: int = 1,
    stride: int = 1,
    groups: int = 1,
    act=nn.Hardswish,
    eps: float = 1e-3,
    momentum: float = 0.01,
) -> nn.Sequential:
    """Conv (no bias, 'same' padding) -> BN -> activation: torchvision's ConvNormActivation layout."""
    layers = [
        nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout, eps=eps, momentum=momentum),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class ChannelSE(nn.Module):
    """Squeeze-and-excitation over channels: mean over (freq, time) -> fc1 -> ReLU -> fc2 -> sigmoid gate."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        squeeze = make_divisible(channels // reduction, 8)
        self.fc1, self.fc2 = nn.Linear(channels, squeeze), nn.Linear(squeeze, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean(dim=(2, 3))))))
        return x * scale[:, :, None, None]


class InvertedResidual(nn.Module):
    """1x1 expand (when wider) -> kxk depthwise (stride) -> SE -> 1x1 project, plus the input when the
    stride is 1 and the width unchanged; modules in ``block`` as in the reference."""

    def __init__(
        self,
        cin: int,
        kernel: int,
        expanded: int,
        cout: int,
        se: bool,
        hardswish: bool,
        stride: int,
        se_reduction: int = 4,
        eps: float = 1e-3,
        momentum: float = 0.01,
    ):
        super().__init__()
        act = nn.Hardswish if hardswish else nn.ReLU
        layers = (
            [conv_bn_act(cin, expanded, 1, act=act, eps=eps, momentum=momentum)] if expanded != cin else []
        )
        layers.append(conv_bn_act(expanded, expanded, kernel, stride, expanded, act, eps, momentum))
        if se:
            layers.append(ChannelSE(expanded, se_reduction))
        layers.append(conv_bn_act(expanded, cout, 1, act=None, eps=eps, momentum=momentum))
        self.block = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return y + x if self.use_res_connect else y


class EfficientATModel(FrameOutputs, FbankClassifier, nn.Module):
    """An EfficientAT MobileNet with its own 32 kHz front end; see the module docstring (length policy:
    native).

    ``strides``: the strides of the four downsampling blocks (the reference's ``strides``);
    ``hop_size`` / ``num_mel_bins`` / ``win_length``: the front end (the reference's variants
    ``mn10_as_hop_*``, ``mn10_as_mels_*``); ``dropout`` before the last Linear. ``bn_momentum``: the
    reference's 0.01 suits fine-tuning released weights; a short run from fresh weights needs more
    (0.3: the SYNTH recipes), since its running statistics lag behind weights that change fast.
    ``frame_pooling`` (:mod:`sed.models.frames`): a frame model whose frames are the time steps of the map
    before global pooling (``last_conv``) averaged over frequency: one per 2**5 = 32 mel frames (0.32 s).
    """

    def __init__(
        self,
        num_classes: int = 527,
        width_mult: float = 1.0,
        strides: list[int] | tuple[int, ...] = (2, 2, 2, 2),
        se_reduction: int = 4,
        dropout: float = 0.2,
        num_mel_bins: int = 128,
        input_tdim: int = 1000,
        sample_rate: int = 32000,
        win_length: int = 800,
        hop_size: int = 320,
        n_fft: int = 1024,
        fmin: float = 0.0,
        fmax: float | None = None,
        bn_momentum: float = 0.01,
        labels: list[str] | None = None,
        frame_pooling: str | None = None,
    ):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if int(input_tdim) < 1:
            raise ValueError(f"input_tdim must be >= 1 frame, got {input_tdim}")
        strides = [int(s) for s in strides]
        if len(strides) != 4 or not all(s in (1, 2) for s in strides):
            raise ValueError(f"strides must be four values of 1 or 2, got {strides}")
        self.frontend = EfficientATMel(
            sample_rate, num_mel_bins, None, win_length, hop_size, n_fft, fmin, fmax
        )
        settings = block_settings(width_mult, strides)
        bn = {"momentum": float(bn_momentum)}
        self.stem = conv_bn_act(1, settings[0][0], 3, 2, **bn)
        self.blocks = nn.Sequential(
            *(InvertedResidual(*s, se_reduction=se_reduction, **bn) for s in settings)
        )
        last = settings[-1][3]
        self.num_classes, self.embed_dim = int(num_classes), 6 * last
        self.input_tdim, self.input_fdim = int(input_tdim), int(num_mel_bins)
        self.last_conv = conv_bn_act(last, self.embed_dim, 1, **bn)
        hidden = _width(1280, width_mult)
        self.head = nn.Sequential(
            nn.Linear(self.embed_dim, hidden),
            nn.Hardswish(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
        self._init_weights()
        self.time_strides = 1 + sum(1 for block in settings if block[6] == 2)  # the stem's and the blocks'
        self.init_frames(self.embed_dim, frame_pooling)
        warm_start_batchnorm(self)  # fresh weights: eval statistics from the first steps (sed.models.norm)
        self.labels = labels

    def _init_weights(self) -> None:
        """The reference's init: Kaiming (fan-out) convs, unit BN, N(0, 0.01) linears, zero biases."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def reset_head(self) -> None:
        """A fresh last Linear (``head[3]``): like the reference, fine-tuning to new classes keeps the
        pretrained hidden layer ``head[0]``."""
        nn.init.normal_(self.head[3].weight, 0, 0.01)
        nn.init.zeros_(self.head[3].bias)

    native_length = True

    @property
    def clip_samples(self) -> int:
        """Samples that fill exactly ``input_tdim`` frames: the clip length of training data."""
        return self.input_tdim * self.frontend.hop

    def forward_fbank_features(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features ``[B, frames, bins]`` (any number of frames) -> (pooled ``[B, embed_dim]``,
        feature map ``[B, embed_dim, bins / 32, frames / 32]``)."""
        if feats.dim() != 3 or feats.shape[-1] != self.input_fdim:
            raise ValueError(
                f"EfficientAT expects features [B, frames, {self.input_fdim}], got {tuple(feats.shape)}"
            )
        fmap = self.last_conv(self.blocks(self.stem(feats.transpose(1, 2).unsqueeze(1))))
        return fmap.mean(dim=(2, 3)), fmap

    def forward_head(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.head(pooled)

    @property
    def frame_hop(self) -> float:
        return self.frontend.hop * 2**self.time_strides / self.sample_rate

    def num_frames(self, num_samples: int) -> int:
        return time_halvings(self.frontend.num_frames(max(int(num_samples), 1)), self.time_strides)

    def frame_sequence(self, feats: torch.Tensor) -> torch.Tensor:
        """Frames ``[B, F, embed_dim]``: the map before global pooling averaged over frequency."""
        return self.forward_fbank_features(feats)[1].mean(2).transpose(1, 2)

    def forward_fbank(self, feats: torch.Tensor) -> torch.Tensor:
        return self.forward_from_features(feats)


# ---------------------------------------------------------------------- registered sizes
@register_model
def efficientat_mn04(num_classes: int = 527, **kwargs) -> EfficientATModel:
    """EfficientAT mn04 (width 0.4; 0.98 M parameters with the AudioSet head; mAP 0.432)."""
    return build_sized(EfficientATModel, EFFICIENTAT_SIZES, "efficientat_mn04", num_classes, kwargs)


@register_model
def efficientat_mn05(num_classes: int = 527, **kwargs) -> EfficientATModel:
    """EfficientAT mn05 (width 0.5; mAP 0.443)."""
    return build_sized(EfficientATModel, EFFICIENTAT_SIZES, "efficientat_mn05", num_classes, kwargs)


@register_model
def efficientat_mn10(num_classes: int = 527, **kwargs) -> EfficientATModel:
    """EfficientAT mn10 (width 1.0, MobileNetV3-Large; 4.9 M parameters; mAP 0.471)."""
    return build_sized(EfficientATModel, EFFICIENTAT_SIZES, "efficientat_mn10", num_classes, kwargs)


@register_model
def efficientat_mn20(num_classes: int = 527, **kwargs) -> EfficientATModel:
    """EfficientAT mn20 (width 2.0; mAP 0.478)."""
    return build_sized(EfficientATModel, EFFICIENTAT_SIZES, "efficientat_mn20", num_classes, kwargs)


@register_model
def efficientat_mn30(num_classes: int = 527, **kwargs) -> EfficientATModel:
    """EfficientAT mn30 (width 3.0; mAP 0.482)."""
    return build_sized(EfficientATModel, EFFICIENTAT_SIZES, "efficientat_mn30", num_classes, kwargs)


@register_model
def efficientat_mn40(num_classes: int = 527, **kwargs) -> EfficientATModel:
    """EfficientAT mn40 (width 4.0; 68 M parameters; mAP 0.484)."""
    return build_sized(EfficientATModel, EFFICIENTAT_SIZES, "efficientat_mn40", num_classes, kwargs)


# ---------------------------------------------------------------------- the family and its public weights
_RELEASE = "https://github.com/fschmid56/EfficientAT/releases/download/v0.0.1/"


def _weights(size: str, filename: str) -> Weights:
    mean_ap = int(filename.rsplit("_", 1)[-1].removesuffix(".pt")) / 1000  # the mAP in the release file name
    return Weights(
        f"efficientat-{size.split('_')[1]}-as",
        size,
        (_RELEASE + filename,),
        527,
        "audioset",
        True,
        32000,
        10.0,
        "log(mel + 1e-5), then (x + 4.5) / 5",
        "MIT (fschmid56/EfficientAT)",
        f"AudioSet mAP {mean_ap:.3f} (single model, the release file's name)",
        "Schmid, Koutini, Widmer 2023, ICASSP, arXiv 2211.04772",
        "https://github.com/fschmid56/EfficientAT",
    )


WEIGHTS = tuple(
    _weights(size, f)
    for size, f in (
        ("efficientat_mn04", "mn04_as_mAP_432.pt"),
        ("efficientat_mn05", "mn05_as_mAP_443.pt"),
        ("efficientat_mn10", "mn10_as_mAP_471.pt"),
        ("efficientat_mn20", "mn20_as_mAP_478.pt"),
        ("efficientat_mn30", "mn30_as_mAP_482.pt"),
        ("efficientat_mn40", "mn40_as_mAP_484.pt"),
    )
)

FAMILY = register_family(
    Family(
        "efficientat",
        tuple(EFFICIENTAT_SIZES),
        "efficientat_mn04",
        "native",
        "EfficientAT MobileNetV3 (Schmid et al. 2023): 32 kHz log-mel, inverted residual blocks, global "
        "pooling",
        "sed.models.pretrained.efficientat:IMPORTER",
        WEIGHTS,
        test_kwargs={"input_tdim": 100},
    )
)
