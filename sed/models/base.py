"""The model-family contract: what every registry model shares (its rebuild kwargs, recorded by
:class:`DescribedModel` from its constructor's call; its label names; its length policy) and the one test of
each kind: :func:`is_clip_model` (:class:`ClipModel`; :func:`is_trainable_clip_model` for a task's model)
and :func:`is_seld_model` (:class:`SeldModelProtocol`). Every "is this a clip / SELD model" check uses them.

Length policy (the family's docstring and README row state theirs): a *fixed-length* family (AST, the
CNN students) pads or cuts every clip to ``clip_samples``, as its reference's data loader does; a
*native-length* family (BEATs, CED, EfficientAT) runs each clip at its own length, as its reference's
inference does. ``max_samples`` is the longest input a model scores in one piece (``None``: any
length). In a batch of clips of different valid lengths, a native-length model runs each group of
equal length on its own (:func:`per_length`), so every clip gets exactly the result it gets alone.
"""

from __future__ import annotations

import functools
import inspect
import numbers
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import torch

from sed.audio.features import KaldiFbank


def length_groups(
    lengths: Sequence[int] | torch.Tensor | None, batch: int, samples: int
) -> list[tuple[int, list[int]]]:
    """``[(length, rows)]``: the rows of a batch of ``batch`` clips padded to ``samples``, grouped by
    valid length (``lengths`` None: all of them, full length), shortest first."""
    valid = [samples] * batch if lengths is None else [min(int(v), samples) for v in lengths]
    return [(n, [i for i, v in enumerate(valid) if v == n]) for n in sorted(set(valid))]


def pad_to(wave: torch.Tensor, samples: int) -> torch.Tensor:
    """``wave [..., T]`` zero-padded at the end to ``samples`` when shorter (the one patch a transformer
    needs); left as it is under ``torch.export``, whose graph declares that shortest input instead."""
    if torch.compiler.is_exporting() or wave.shape[-1] >= samples:
        return wave
    return torch.nn.functional.pad(wave, (0, samples - wave.shape[-1]))


def per_length(
    fn: Callable[[torch.Tensor], torch.Tensor], wave: torch.Tensor, lengths: torch.Tensor | None
) -> torch.Tensor:
    """``fn`` (a batch of clips of one length -> ``[B, ...]``) over a padded batch ``[B, (C,) T]`` whose
    clips have the valid ``lengths``: each group of equal length runs alone, cut to its length, and the
    rows come back in batch order. One group of full length is a single call."""
    if wave.dim() == 1:
        wave = wave.unsqueeze(0)
    groups = length_groups(lengths, wave.shape[0], wave.shape[-1])
    if len(groups) == 1:
        return fn(wave[..., : groups[0][0]])
    out = None
    for n, rows in groups:
        part = fn(wave[rows, ..., :n])
        if out is None:
            out = part.new_empty((wave.shape[0], *part.shape[1:]))
        out[rows] = part
    return out


@runtime_checkable
class ClipModel(Protocol):
    """A clip classifier: mono waveforms ``[B, T]`` at ``sample_rate`` -> logits ``[B, num_classes]``, with
    the pooled embedding (``embed``) that ``head`` maps to logits, and its front end. What inference,
    few-shot enrolment and export take (:func:`is_clip_model`)."""

    num_classes: int
    embed_dim: int
    labels: list[str] | None

    @property
    def sample_rate(self) -> int: ...

    @property
    def clip_samples(self) -> int | None: ...

    @property
    def frontend(self) -> torch.nn.Module: ...

    @property
    def head(self) -> torch.nn.Module: ...

    def embed(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor: ...

    def sed_kwargs(self) -> dict: ...


@runtime_checkable
class TrainableClipModel(ClipModel, Protocol):
    """A clip model a training task drives: its front end (``features``) and the network after it
    (``forward_from_features``) apart, so a task augments features in between."""

    def features(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor: ...

    def forward_from_features(self, feats: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class SeldModelProtocol(Protocol):
    """A SELD model: waveforms ``[B, channels, T]`` in ``channel_layout`` -> multi-ACCDOA frames at the
    label rate; ``features`` (unstandardised, what a feature cache stores), ``standardizer`` and
    ``forward_features`` (cached or augmented features -> frames) apart (:func:`is_seld_model`)."""

    num_classes: int
    channel_layout: str
    label_frame_samples: int
    standardizer: torch.nn.Module

    @property
    def sample_rate(self) -> int: ...

    @property
    def output_dim(self) -> int: ...

    def num_label_frames(self, num_samples: int) -> int: ...

    def features(self, audio: torch.Tensor) -> torch.Tensor: ...

    def forward_features(self, feats: torch.Tensor) -> torch.Tensor: ...

    def sed_kwargs(self) -> dict: ...


def is_seld_model(model) -> bool:
    """Whether ``model`` is a SELD model (:class:`SeldModelProtocol`)."""
    return isinstance(model, SeldModelProtocol)


def is_clip_model(model) -> bool:
    """Whether ``model`` is a mono clip classifier (:class:`ClipModel`, not a SELD model)."""
    return (
        isinstance(model, ClipModel)
        and not is_seld_model(model)
        and getattr(model, "channel_layout", "mono") == "mono"
    )


def is_trainable_clip_model(model) -> bool:
    """Whether ``model`` is a clip model a training task can drive (:class:`TrainableClipModel`)."""
    return is_clip_model(model) and isinstance(model, TrainableClipModel)


def _plain(value):
    """``value`` as JSON keeps it: tuples become lists, numpy/torch scalars Python numbers."""
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, bool | str) or value is None:
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return value


def _recording(init: Callable) -> Callable:
    """``init`` that first records its call's arguments (defaults applied) in ``self._kwargs``.

    The outermost ``__init__`` of a model records first; a base class's ``__init__`` reached through
    ``super().__init__(**kwargs)`` adds its own arguments (those the subclass passed on, and its
    defaults) under them. A ``**kwargs`` parameter is recorded by the ``__init__`` it reaches, not where
    it is collected."""
    sig = inspect.signature(init)

    @functools.wraps(init)
    def wrapped(self, *args, **kwargs):
        bound = sig.bind(self, *args, **kwargs)
        bound.apply_defaults()
        named = [
            p.name
            for p in list(sig.parameters.values())[1:]
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        mine = {k: _plain(bound.arguments[k]) for k in named}
        record = self.__dict__.get("_kwargs")
        if record is None:
            self.__dict__["_kwargs"] = mine
        else:
            for k, v in mine.items():
                record.setdefault(k, v)
        init(self, *args, **kwargs)

    return wrapped


class DescribedModel:
    """Mixin for ``nn.Module`` models built by ``create_model``: the family contract's description part.

    Every subclass's ``__init__`` records its call's arguments (defaults applied) in ``self._kwargs``
    (:func:`_recording`, installed by ``__init_subclass__``): no family writes its rebuild kwargs by hand.
    A family whose constructor resolves an argument into a derived value (``clip_seconds`` into
    ``input_tdim``, a default ``t_pool_size`` into the one built) records it with :meth:`record_kwargs`,
    so a checkpoint states what was built. ``sed_kwargs()`` rebuilds the model; its label names live in
    ``self._labels``, and setting ``labels`` keeps the registry's ``sed_config`` (what checkpoints
    store) in step.
    """

    _kwargs: dict
    _labels: list[str] | None = None
    num_classes: int

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _recording(cls.__dict__["__init__"])

    def record_kwargs(self, **values) -> None:
        """The hook for derived values: record ``values`` over the call's arguments (what a rebuild
        passes)."""
        self._kwargs.update({k: _plain(v) for k, v in values.items()})

    def sed_kwargs(self) -> dict:
        """Constructor kwargs that rebuild this model (JSON-serialisable)."""
        out = dict(self._kwargs)
        out["labels"] = None if self._labels is None else list(self._labels)
        return out

    @property
    def labels(self) -> list[str] | None:
        return self._labels

    @labels.setter
    def labels(self, value) -> None:
        if value is not None:
            value = [str(v) for v in value]
            if len(value) != self.num_classes:
                raise ValueError(f"{len(value)} labels for a {self.num_classes}-class head")
        self._labels = value
        cfg = getattr(self, "sed_config", None)
        if isinstance(cfg, dict) and isinstance(cfg.get("kwargs"), dict):
            cfg["kwargs"]["labels"] = None if value is None else list(value)


class FbankClassifier(DescribedModel):
    """Mixin for classifiers that hold a :class:`~sed.audio.features.KaldiFbank` front end
    (``self.frontend``) producing ``input_tdim`` frames: 16 kHz mono waveforms in."""

    input_tdim: int
    #: whether clips run at their own length (the family's reference inference) instead of ``clip_samples``
    native_length: bool = False

    @property
    def sample_rate(self) -> int:
        return self.frontend.sample_rate

    @property
    def clip_samples(self) -> int:
        """Waveform samples that fill exactly ``input_tdim`` frames (the clip length of training data)."""
        return (self.input_tdim - 1) * self.frontend.hop + self.frontend.win

    @property
    def max_samples(self) -> int | None:
        """The longest input scored in one piece: ``clip_samples`` for a fixed-length model, else None."""
        return None if self.native_length else self.clip_samples

    def features(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Front end, always in float32 (also under autocast): ``[B, T]`` -> ``[B, input_tdim, bins]``."""
        with torch.autocast(device_type=wave.device.type, enabled=False):
            return self.frontend(wave.float(), lengths)

    def forward_fbank_pooled(self, fbank: torch.Tensor) -> torch.Tensor:
        """``forward_fbank_features(fbank)[0]``; a model may skip work the pooled embedding does not need."""
        return self.forward_fbank_features(fbank)[0]

    def forward_from_features(self, fbank: torch.Tensor) -> torch.Tensor:
        """Logits from front-end output (the shared hook: the training task augments features between
        ``features`` and this)."""
        return self.head(self.forward_fbank_pooled(fbank))

    def forward_features(self, wave: torch.Tensor, lengths: torch.Tensor | None = None):
        """Waveform ``[B, T]`` -> (pooled ``[B, D]``, the model's token sequence or feature map)."""
        return self.forward_fbank_features(self.features(wave, lengths))

    def embed(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The pooled embedding ``[B, D]`` used for linear probing."""
        if self.native_length and lengths is not None:
            return per_length(self.embed, wave, lengths)
        return self.forward_fbank_pooled(self.features(wave, lengths))

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Waveform ``[B, T]`` at ``sample_rate`` (``lengths``: valid samples per clip) -> logits
        ``[B, C]``."""
        return self.head(self.embed(wave, lengths))


def resolve_tdim(
    input_tdim: int | None, clip_seconds: float | None, sample_rate: int, num_mel_bins: int
) -> int:
    """Frames of the front end output: ``input_tdim``, else the frames in ``clip_seconds``; 5 s
    (498 frames at any rate) when neither is given."""
    if clip_seconds is not None or input_tdim is None:
        seconds = 5.0 if clip_seconds is None else float(clip_seconds)
        frames = KaldiFbank(sample_rate, num_mel_bins, None).num_frames(round(seconds * sample_rate))
        if frames < 1:
            raise ValueError(f"clip_seconds={clip_seconds} is shorter than one 25 ms frame")
        if input_tdim is not None and int(input_tdim) != frames:
            raise ValueError(
                f"clip_seconds={clip_seconds} gives {frames} frames, contradicting input_tdim={input_tdim}"
            )
        return frames
    if int(input_tdim) < 1:
        raise ValueError(f"input_tdim must be >= 1 frame, got {input_tdim}")
    return int(input_tdim)


def build_sized(cls: type, sizes: dict[str, dict], size: str, num_classes: int, kwargs: dict):
    """``cls`` with the architecture of a registered ``size`` and ``kwargs`` over it; ``input_fdim``
    (AST's name for the mel bins) is taken for ``num_mel_bins``."""
    kwargs = dict(kwargs)
    if "input_fdim" in kwargs:
        fdim = kwargs.pop("input_fdim")
        if kwargs.setdefault("num_mel_bins", fdim) != fdim:
            raise ValueError(f"input_fdim={fdim} contradicts num_mel_bins={kwargs['num_mel_bins']}")
    return cls(num_classes=num_classes, **{**sizes[size], **kwargs})
