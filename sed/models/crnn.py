"""The DCASE 2024 Task 4 baseline CRNN (DESED_task ``desed_task/nnet/CRNN.py``, ``CNN.py``, ``RNN.py`` and the
recipe ``recipes/dcase2024_task4_baseline``, config ``confs/pretrained.yaml``) as a frame (detection) model.

Waveform ``[B, T]`` at 16 kHz -> :class:`~sed.models.crnn_frontend.CRNNMel` (log-mel, per-clip min-max to
[-1, 1]) ``[B, frames, 128]`` -> ``blocks``: 7 conv blocks (3x3 conv, stride 1, padding 1 -> BatchNorm (eps
1e-3) -> the reference's gated unit ``linear(x) * sigmoid(x)`` over channels -> dropout -> average pooling
(time, frequency) of (2, 2), (2, 2), then (1, 2) five times), 16, 32, 64, 128, 128, 128, 128 channels: time
pooled by 4 (one output frame per 4 x 256 samples: ``frame_hop`` = 0.064 s), frequency 128 -> 1 (where
frequency is left, channels x bins are flattened as the reference does) -> optional frame embeddings
(below) -> dropout -> ``rnn``: a 2-layer bidirectional GRU, 192 hidden per direction (the recipe's
``rnn_layers: 1`` is not an argument of the reference's CRNN, whose default of 2 layers is what runs) ->
dropout -> ``head`` (:class:`CRNNHead`): per-frame ``sigmoid(dense(x))`` and attention pooling to clip
probabilities. ``dropout`` (0.2 in the recipe) is both the conv blocks' dropout and the one around the GRU.

Frame embeddings (the baseline's ``use_embeddings`` with ``aggregation_type: pool1d``): a frozen sed BEATs
model (``embeddings="beats_iter3"``, weights from ``embeddings_pretrained``, e.g. the baseline's
``BEATs_iter3_plus_AS2M.pt``; kept in eval mode, run without autograd) gives its encoder tokens ``[B, N,
768]`` in their time-major order, exactly what the reference's ``BEATsModel`` saves as ``frame`` embeddings;
they are average-pooled over the token axis to the CNN's frames (``adaptive_avg_pool1d``, as the
reference), concatenated to the CNN output and projected back to 128 channels (``project``, the reference's
``cat_tf``). ``embedding_dim`` without ``embeddings`` takes precomputed embeddings ``[B, D, N]`` instead
(the baseline's hdf5 files): pass them to :meth:`CRNNModel.frames_from_features`.

Attention pooling: the reference takes its softmax over the *classes* of each frame (``nn.Softmax(dim=-1)``
on ``[B, frames, classes]``), not over time; ``attention_over_classes=False`` (default) is the attention
pooling of :mod:`sed.models.frames` (softmax over time, per class), ``True`` the reference's, which its
released weights were trained with (the importer sets it). Both clamp the weights to [1e-7, 1] and give
``sum_t p_t w_t / sum_t w_t``. In training the reference also masks random runs of GRU input frames
(``dropstep`` 0.3 of the frames at most, runs up to ``dropstep_len`` 16, torchaudio's TimeMasking; the
CNN output and the embeddings each get their own mask) and uses BatchNorm momentum 0.99 in PyTorch's sense
(running statistics of about the last batch, a Keras value carried over): ``bn_momentum`` defaults to the
0.01 intended; pass 0.99 to reproduce.

Length policy: native, each clip at its own length (the reference pads DESED clips to 10 s in its data
loader; a clip of 10 s gives 156 frames). A batch of clips of different valid lengths runs each length
apart, so every clip gets what it gets alone (the GRU is bidirectional).
"""

from __future__ import annotations

import math

import torch
import torchaudio
from torch import nn
from torch.nn import functional as F

from sed.models.base import DescribedModel, length_groups
from sed.models.crnn_frontend import CRNNMel
from sed.models.family import Family, register_family
from sed.models.frames import FrameHead, clip_logits, frame_mask
from sed.models.registry import create_model, register_model

__all__ = ["CRNN_SIZES", "CRNNHead", "CRNNModel", "DCASE2024_LABELS", "GatedUnit", "crnn_dcase2024"]

#: the baseline's 27 classes in its encoder's order: DESED's 10, then MAESTRO real's 17
DCASE2024_LABELS = (
    "Alarm_bell_ringing,Blender,Cat,Dishes,Dog,Electric_shaver_toothbrush,Frying,Running_water,Speech,"
    "Vacuum_cleaner,cutlery and dishes,furniture dragging,people talking,children voices,coffee machine,"
    "footsteps,large_vehicle,car,brakes_squeaking,cash register beeping,announcement,shopping cart,"
    "metro leaving,metro approaching,door opens/closes,wind_blowing,birds_singing"
).split(",")

CRNN_SIZES: dict[str, dict] = {
    "crnn_dcase2024": {
        "filters": [16, 32, 64, 128, 128, 128, 128],
        "pooling": [[2, 2], [2, 2], [1, 2], [1, 2], [1, 2], [1, 2], [1, 2]],
        "rnn_hidden": 192,
        "rnn_layers": 2,
    },
}


class GatedUnit(nn.Module):
    """The reference's ``GLU``: ``linear(x) * sigmoid(x)`` with the linear layer over channels."""

    def __init__(self, channels: int):
        super().__init__()
        self.linear = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2) * torch.sigmoid(x)


def _conv_block(cin, cout, kernel, pool, dropout, bn_eps, bn_momentum) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, 1, kernel // 2),
        nn.BatchNorm2d(cout, eps=bn_eps, momentum=bn_momentum),
        GatedUnit(cout),
        nn.Dropout(dropout),
        nn.AvgPool2d(tuple(pool)),
    )


class CRNNHead(FrameHead):
    """:class:`~sed.models.frames.FrameHead` with the reference's attention over classes as an option.

    ``frames(x, mask)`` gives (frame probabilities, clip probabilities); calling the head gives the clip
    logits, as the head of every clip family does (a task that trains only the head calls it on the GRU
    output :meth:`CRNNModel.forward_fbank_pooled` returns)."""

    def __init__(self, dim: int, num_classes: int, pooling: str = "attention", over_classes: bool = False):
        super().__init__(dim, num_classes, pooling)
        self.over_classes = bool(over_classes and pooling == "attention")

    def frames(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.over_classes:
            return FrameHead.forward(self, x, mask)
        probs = torch.sigmoid(self.dense(x))
        w = torch.softmax(self.attention(x), dim=-1).clamp(1e-7, 1.0)
        if mask is not None:
            w = w * mask[..., None].to(w.dtype)
        return probs, (probs * w).sum(1) / w.sum(1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return clip_logits(self.frames(x, mask)[1])


class CRNNModel(DescribedModel, nn.Module):
    """The DCASE 2024 baseline CRNN with its front end; see the module docstring."""

    native_length = True

    def __init__(
        self,
        num_classes: int = 27,
        filters: list[int] | tuple[int, ...] = (16, 32, 64, 128, 128, 128, 128),
        pooling: list | tuple = ((2, 2), (2, 2), (1, 2), (1, 2), (1, 2), (1, 2), (1, 2)),
        kernel_size: int = 3,
        rnn_hidden: int = 192,
        rnn_layers: int = 2,
        dropout: float = 0.2,
        n_mels: int = 128,
        n_fft: int = 2048,
        hop_length: int = 256,
        f_min: float = 0.0,
        f_max: float | None = 8000.0,
        sample_rate: int = 16000,
        clip_seconds: float = 10.0,
        frame_pooling: str = "attention",
        attention_over_classes: bool = False,
        bn_momentum: float = 0.01,
        bn_eps: float = 1e-3,
        dropstep: float = 0.3,
        dropstep_len: int = 16,
        embeddings: str | None = None,
        embeddings_kwargs: dict | None = None,
        embeddings_pretrained: str | None = None,
        embedding_dim: int | None = None,
        labels: list[str] | None = None,
    ):
        super().__init__()
        filters, pooling = [int(f) for f in filters], [[int(p) for p in pool] for pool in pooling]
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if not filters or len(filters) != len(pooling) or any(len(p) != 2 for p in pooling):
            raise ValueError(f"filters {filters} and (time, frequency) pooling {pooling} must pair up")
        if frame_pooling is None:
            raise ValueError("the CRNN is a frame model: frame_pooling must be one of the poolings, not None")
        self.num_classes, self.frame_pooling, self.clip_seconds = (
            int(num_classes),
            frame_pooling,
            clip_seconds,
        )
        self.time_pool = math.prod(p[0] for p in pooling)
        out_freq = int(n_mels)
        for p in pooling:
            out_freq //= p[1]
        if out_freq < 1:
            raise ValueError(f"{n_mels} mel bins are pooled away by the frequency pooling {pooling}")
        self.frontend = CRNNMel(sample_rate, n_mels, n_fft, hop_length, f_min, f_max, self.time_pool)
        self.beats = None
        if embeddings is not None:
            self.beats = create_model(
                embeddings, pretrained=embeddings_pretrained, **(embeddings_kwargs or {})
            )
            self.beats.eval().requires_grad_(False)
            if embedding_dim not in (None, self.beats.embed_dim):
                raise ValueError(
                    f"embedding_dim={embedding_dim} contradicts {embeddings}'s {self.beats.embed_dim}"
                )
            embedding_dim = self.beats.embed_dim
        self.record_kwargs(embeddings_pretrained=None, embedding_dim=embedding_dim)  # weights: the state dict
        self.embedding_dim = embedding_dim
        self.blocks = nn.ModuleList(
            _conv_block(cin, cout, int(kernel_size), pool, dropout, bn_eps, bn_momentum)
            for cin, cout, pool in zip([1, *filters[:-1]], filters, pooling)
        )
        width = filters[-1] * out_freq
        self.project = nn.Linear(width + embedding_dim, width) if embedding_dim else None
        self.dropout = nn.Dropout(dropout)
        self.dropstep, self.dropstep_len = float(dropstep), int(dropstep_len)
        self.rnn = nn.GRU(width, rnn_hidden, num_layers=rnn_layers, bidirectional=True, batch_first=True)
        self.embed_dim = 2 * int(rnn_hidden)
        self.head = CRNNHead(self.embed_dim, self.num_classes, frame_pooling, attention_over_classes)
        self.labels = labels

    # ------------------------------------------------------------------ description
    @property
    def sample_rate(self) -> int:
        return self.frontend.sample_rate

    @property
    def frame_hop(self) -> float:
        """Seconds between output frames (0.064 s: 4 x 256 samples at 16 kHz)."""
        return self.time_pool * self.frontend.hop / self.sample_rate

    @property
    def clip_samples(self) -> int:
        """The clip length of training data (``clip_seconds``, 10 s in DESED)."""
        return round(self.clip_seconds * self.sample_rate)

    @property
    def max_samples(self) -> int | None:
        """The longest input scored in one piece: any length, or the embedding model's limit."""
        return None if self.beats is None else self.beats.max_samples

    def num_frames(self, num_samples: int) -> int:
        return self.frontend.num_frames(num_samples) // self.time_pool

    def train(self, mode: bool = True):
        super().train(mode)
        if self.beats is not None:
            self.beats.eval()  # frozen: no dropout, no statistics updates
        return self

    # ------------------------------------------------------------------ forward pieces
    def features(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Front end in float32: ``[B, T]`` -> ``[B, frames, mels]``; with ``lengths`` each clip is scaled
        over its own frames and the frames after them are -1 (the scaled minimum)."""
        if wave.dim() == 1:
            wave = wave.unsqueeze(0)
        with torch.autocast(device_type=wave.device.type, enabled=False):
            groups = length_groups(lengths, wave.shape[0], wave.shape[-1])
            if len(groups) == 1:
                return self.frontend(wave[:, : groups[0][0]])
            out = wave.new_full(
                (wave.shape[0], self.frontend.num_frames(wave.shape[-1]), self.frontend.n_mels), -1.0
            )
            for n, rows in groups:
                part = self.frontend(wave[rows, :n])
                out[rows, : part.shape[1]] = part
            return out

    def frame_embeddings(self, wave: torch.Tensor) -> torch.Tensor | None:
        """The frozen BEATs tokens of clips of one length ``[B, D, N]`` (time-major tokens, as the
        reference's ``frame`` embeddings), or None without an embedding model."""
        if self.beats is None:
            return None
        with torch.no_grad():
            return self.beats.forward_fbank_features(self.beats.features(wave))[1].transpose(1, 2)

    def forward_fbank_pooled(
        self, feats: torch.Tensor, embeddings: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Features ``[B, frames, mels]`` (+ embeddings ``[B, D, N]``) -> the GRU output ``[B, F, 2 *
        rnn_hidden]``: what :class:`CRNNHead` maps to frames and, called, to clip logits."""
        if feats.dim() != 3 or feats.shape[-1] != self.frontend.n_mels:
            raise ValueError(
                f"CRNN expects features [B, frames, {self.frontend.n_mels}], got {tuple(feats.shape)}"
            )
        x = feats.unsqueeze(1)
        for block in self.blocks:
            x = block(x)
        b, c, f, q = x.shape
        x = x.permute(0, 2, 1, 3).reshape(b, f, c * q)
        if self.embedding_dim:
            if embeddings is None:
                raise ValueError("this CRNN takes frame embeddings [B, D, N] (embedding_dim without a model)")
            emb = F.adaptive_avg_pool1d(embeddings.to(x.dtype), f).transpose(1, 2)
            x = self.project(self.dropout(torch.cat((self._dropstep(x), self._dropstep(emb)), -1)))
        elif self.training and self.dropstep > 0:
            x = self.dropout(self._dropstep(x))
        return self.dropout(self.rnn(x)[0])

    def _dropstep(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.dropstep > 0):
            return x
        mask = torchaudio.transforms.TimeMasking(self.dropstep_len, True, self.dropstep)
        return mask(x.transpose(1, 2)).transpose(1, 2)

    def frames_from_features(
        self,
        feats: torch.Tensor,
        valid: torch.Tensor | None = None,
        embeddings: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (what a task augments) -> (frame probabilities ``[B, F, C]``, clip probabilities
        ``[B, C]`` over the ``valid`` frames per row, None: all), as every frame family; ``embeddings``
        ``[B, D, N]``: precomputed frame embeddings (a model with ``embedding_dim`` and no BEATs)."""
        x = self.forward_fbank_pooled(feats, embeddings)
        return self.head.frames(x, frame_mask(x.shape[1], valid, x.device))

    def forward_from_features(
        self, feats: torch.Tensor, embeddings: torch.Tensor | None = None
    ) -> torch.Tensor:
        return clip_logits(self.frames_from_features(feats, embeddings=embeddings)[1])

    def forward_frames(
        self, wave: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Waveforms ``[B, T]`` -> (frame probabilities ``[B, F, C]``, clip probabilities ``[B, C]``); clips
        of different ``lengths`` run apart, their frames after their own are zero."""
        if wave.dim() == 1:
            wave = wave.unsqueeze(0)
        groups = length_groups(lengths, wave.shape[0], wave.shape[-1])
        if len(groups) == 1:
            part = wave[:, : groups[0][0]]
            return self.frames_from_features(self.features(part), embeddings=self.frame_embeddings(part))
        probs = wave.new_zeros((wave.shape[0], self.num_frames(wave.shape[-1]), self.num_classes))
        clip = wave.new_zeros((wave.shape[0], self.num_classes))
        for n, rows in groups:
            part = wave[rows, :n]
            p, c = self.frames_from_features(self.features(part), embeddings=self.frame_embeddings(part))
            probs[rows, : p.shape[1]], clip[rows] = p, c
        return probs, clip

    def embed(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The pooled embedding ``[B, 2 * rnn_hidden]``: the GRU output averaged over each clip's frames."""
        if wave.dim() == 1:
            wave = wave.unsqueeze(0)
        out = wave.new_zeros((wave.shape[0], self.embed_dim))
        for n, rows in length_groups(lengths, wave.shape[0], wave.shape[-1]):
            part = wave[rows, :n]
            out[rows] = self.forward_fbank_pooled(self.features(part), self.frame_embeddings(part)).mean(1)
        return out

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Waveform ``[B, T]`` -> clip logits ``[B, C]`` (the logits of the pooled clip probabilities)."""
        return clip_logits(self.forward_frames(wave, lengths)[1])


# ---------------------------------------------------------------------- registered size and family
@register_model
def crnn_dcase2024(num_classes: int = 27, **kwargs) -> CRNNModel:
    """The DCASE 2024 Task 4 baseline CRNN (1.67 M parameters with 27 classes; 1.79 M with the
    768-d BEATs projection and 27 classes, BEATs itself not counted)."""
    return CRNNModel(num_classes=num_classes, **{**CRNN_SIZES["crnn_dcase2024"], **kwargs})


FAMILY = register_family(
    Family(
        "crnn",
        tuple(CRNN_SIZES),
        "crnn_dcase2024",
        "native",
        "the DCASE 2024 Task 4 baseline CRNN: per-clip min-max log-mel, 7 gated conv blocks, BiGRU, "
        "attention pooling to clip scores; optional frozen BEATs frame embeddings",
        "sed.models.pretrained.crnn:IMPORTER",
        test_kwargs={
            "filters": [4, 8, 8],
            "pooling": [[2, 4], [2, 4], [1, 2]],
            "n_mels": 32,
            "n_fft": 512,
            "rnn_hidden": 8,
            "rnn_layers": 1,
            "clip_seconds": 1.0,
        },
    )
)
