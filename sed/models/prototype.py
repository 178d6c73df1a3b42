"""Prototype classifiers: classes enrolled from a few examples, on the embedding of any clip model.

A :class:`PrototypeClassifier` holds a *backbone* (any registered clip model with ``embed``,
``embed_dim`` and a waveform front end: the AST family, the CNN students, the TCNs) and one
*prototype* per class, ``prototypes [C, D]``: the mean of the class's support embeddings
(:func:`sed.inference.fewshot.enroll` computes them). Waveform ``[B, T]`` -> ``backbone.embed`` ->
``[B, D]`` -> :class:`PrototypeHead` -> logits ``[B, C]`` (``[B, C + 1]`` with an open set):

- ``metric="cosine"``: ``scale * cos(embedding, prototype)`` (``scale`` 10 by default, so that the
  softmax of logits in [-10, 10] gives usable scores; the decision is the nearest prototype by angle);
- ``metric="euclidean"``: ``-||embedding - prototype||^2`` (the prototypical-network logits).

``open_set=THRESH`` adds a last class (``unknown`` by default) whose logit is the threshold in the
metric's own terms: ``scale * THRESH`` for cosine (a file is unknown when its cosine similarity to
every prototype is below THRESH), ``-THRESH`` for Euclidean (unknown when its squared distance to
every prototype is above THRESH). A tie goes to the enrolled class.

The model is a registry model (``prototype_classifier``) like any other: ``num_classes`` is the
width of the logits (the enrolled classes, plus one with an open set), the backbone is described by
its own ``{"model_name", "model_kwargs"}`` inside the kwargs, and its weights are saved with the
prototypes (``backbone.*`` and ``head.prototypes``), so a checkpoint is self-contained and loads with
:func:`sed.models.loading.load_model`. ``sample_rate``, ``clip_samples``, ``frontend`` and
``channel_layout`` are the backbone's, so clip and window classification, ensembles and ONNX export
(``embed`` + ``head``) treat it as any clip classifier.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sed.models.base import DescribedModel, is_clip_model
from sed.models.family import Family, register_family
from sed.models.registry import create_model, register_model

__all__ = [
    "METRICS",
    "PrototypeClassifier",
    "PrototypeHead",
    "build_prototype_classifier",
    "is_prototype_model",
    "prototype_classifier",
    "prototype_logits",
]

METRICS = ("cosine", "euclidean")
NAME = "prototype_classifier"
#: the default backbone of ``create_model("prototype_classifier")`` (its kwargs come from the call)
DEFAULT_BACKBONE = "cnn_tiny"
DEFAULT_SCALE = 10.0


def prototype_logits(
    emb: torch.Tensor, prototypes: torch.Tensor, metric: str = "cosine", scale: float = DEFAULT_SCALE
) -> torch.Tensor:
    """Logits ``[B, C]`` of embeddings ``[B, D]`` against prototypes ``[C, D]``, in float32:
    ``scale * cos`` (cosine) or minus the squared distance (Euclidean)."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    emb, prototypes = emb.float(), prototypes.float()
    if metric == "cosine":
        return scale * (F.normalize(emb, dim=-1) @ F.normalize(prototypes, dim=-1).T)
    return -((emb[:, None, :] - prototypes[None, :, :]) ** 2).sum(-1)


class PrototypeHead(nn.Module):
    """Pooled embedding ``[B, D]`` -> logits ``[B, C (+1)]`` (see the module docstring)."""

    def __init__(
        self,
        num_prototypes: int,
        embed_dim: int,
        metric: str = "cosine",
        scale: float = DEFAULT_SCALE,
        open_set: float | None = None,
    ):
        super().__init__()
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
        if not 0 < scale < math.inf:
            raise ValueError(f"scale must be a positive number, got {scale}")
        if open_set is not None and not math.isfinite(open_set):
            raise ValueError(f"open_set must be a finite threshold, got {open_set}")
        self.metric, self.scale, self.open_set = metric, float(scale), open_set
        self.register_buffer("prototypes", torch.zeros(int(num_prototypes), int(embed_dim)))

    def threshold_logit(self) -> float | None:
        """The logit of the ``unknown`` class (None without an open set)."""
        if self.open_set is None:
            return None
        return self.scale * self.open_set if self.metric == "cosine" else -self.open_set

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        logits = prototype_logits(emb, self.prototypes, self.metric, self.scale)
        t = self.threshold_logit()
        if t is None:
            return logits
        return torch.cat([logits, torch.full_like(logits[:, :1], t)], dim=1)

    def extra_repr(self) -> str:
        c, d = self.prototypes.shape
        return f"prototypes={c}x{d}, metric={self.metric}, scale={self.scale}, open_set={self.open_set}"


def _backbone_spec(backbone, backbone_kwargs: dict) -> dict:
    """``{"model_name", "model_kwargs"}`` of the backbone, checked (a file may supply it)."""
    if backbone is None:
        backbone = {"model_name": DEFAULT_BACKBONE, "model_kwargs": {}}
    if (
        not isinstance(backbone, dict)
        or not isinstance(backbone.get("model_name"), str)
        or not isinstance(backbone.get("model_kwargs", {}), dict)
    ):
        raise ValueError("backbone must be a mapping {'model_name': str, 'model_kwargs': dict}")
    name, kwargs = backbone["model_name"], {**backbone.get("model_kwargs", {}), **backbone_kwargs}
    if name == NAME:
        raise ValueError("the backbone of a prototype classifier cannot be another prototype classifier")
    if "pretrained" in kwargs:  # it would read another file, or download one
        raise ValueError("backbone model_kwargs may not name pretrained weights")
    return {"model_name": name, "model_kwargs": kwargs}


class PrototypeClassifier(DescribedModel, nn.Module):
    """A backbone plus class prototypes; see the module docstring."""

    def __init__(
        self,
        num_classes: int = 1,
        backbone: dict | None = None,
        metric: str = "cosine",
        scale: float = DEFAULT_SCALE,
        open_set: float | None = None,
        unknown_label: str = "unknown",
        labels: list[str] | None = None,
        **backbone_kwargs,
    ):
        super().__init__()
        spec = _backbone_spec(backbone, backbone_kwargs)
        open_set = None if open_set is None else float(open_set)
        num_prototypes = int(num_classes) - (open_set is not None)
        if num_prototypes < 1:
            raise ValueError(f"num_classes {num_classes} leaves no enrolled class (open_set adds 'unknown')")
        self.backbone = create_model(spec["model_name"], **spec["model_kwargs"])
        if not is_clip_model(self.backbone):
            raise ValueError(
                f"{spec['model_name']} is not a clip model with a waveform front end (its backbone)"
            )
        spec = {"model_name": spec["model_name"], "model_kwargs": dict(self.backbone.sed_config["kwargs"])}
        self.head = PrototypeHead(num_prototypes, self.backbone.embed_dim, metric, scale, open_set)
        self.num_classes, self.embed_dim = int(num_classes), int(self.backbone.embed_dim)
        self.multi_label = False
        self.record_kwargs(backbone=spec)  # the backbone's own full kwargs (backbone_kwargs folded in)
        self.labels = labels

    # ------------------------------------------------------------------ what the backbone gives
    @property
    def frontend(self) -> nn.Module:
        return self.backbone.frontend

    @property
    def sample_rate(self) -> int:
        return self.backbone.sample_rate

    @property
    def clip_samples(self) -> int | None:
        return getattr(self.backbone, "clip_samples", None)

    @property
    def max_samples(self) -> int | None:
        """The backbone's longest input in one piece (its length policy)."""
        return getattr(self.backbone, "max_samples", self.clip_samples)

    @property
    def channel_layout(self) -> str:
        return getattr(self.backbone, "channel_layout", "mono")

    @property
    def metric(self) -> str:
        return self.head.metric

    @property
    def open_set(self) -> float | None:
        return self.head.open_set

    @property
    def prototypes(self) -> torch.Tensor:
        return self.head.prototypes

    @property
    def class_names(self) -> list[str] | None:
        """The enrolled classes' labels (without ``unknown``)."""
        return None if self.labels is None else self.labels[: self.prototypes.shape[0]]

    # ------------------------------------------------------------------ forward
    def embed(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The backbone's pooled embedding ``[B, D]``."""
        return self.backbone.embed(wave, lengths)

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Waveform ``[B, T]`` at ``sample_rate`` -> logits ``[B, num_classes]``."""
        return self.head(self.embed(wave, lengths))


@register_model(name=NAME)
def prototype_classifier(num_classes: int = 1, **kwargs) -> PrototypeClassifier:
    """Class prototypes on a backbone's embedding (``backbone={"model_name", "model_kwargs"}``, default
    ``cnn_tiny``; other kwargs not of the prototype head go to the default backbone)."""
    return PrototypeClassifier(num_classes=num_classes, **kwargs)


def is_prototype_model(model: nn.Module) -> bool:
    return isinstance(model, PrototypeClassifier)


def build_prototype_classifier(
    backbone: nn.Module,
    prototypes: torch.Tensor,
    labels: list[str],
    metric: str = "cosine",
    scale: float = DEFAULT_SCALE,
    open_set: float | None = None,
    unknown_label: str = "unknown",
) -> PrototypeClassifier:
    """A registry-built prototype classifier over a copy of ``backbone`` (a model built by
    ``create_model``/``load_model``) with ``prototypes [C, D]`` and the C class ``labels``
    (``unknown_label`` is appended with an open set)."""
    cfg = getattr(backbone, "sed_config", None)
    if not cfg:
        raise ValueError(f"{type(backbone).__name__} was not built by sed.models.create_model")
    prototypes = torch.as_tensor(prototypes).detach().float().cpu()
    if prototypes.dim() != 2 or prototypes.shape[0] != len(labels):
        raise ValueError(f"prototypes {tuple(prototypes.shape)} do not match {len(labels)} labels")
    if unknown_label in labels and open_set is not None:
        raise ValueError(f"{unknown_label!r} is the open-set answer; it cannot be an enrolled class")
    names = list(labels) + ([unknown_label] if open_set is not None else [])
    model = create_model(
        NAME,
        num_classes=len(names),
        backbone={"model_name": cfg["name"], "model_kwargs": cfg["kwargs"]},
        metric=metric,
        scale=scale,
        open_set=open_set,
        unknown_label=unknown_label,
        labels=names,
    )
    model.backbone.load_state_dict(backbone.state_dict())
    if prototypes.shape[1] != model.embed_dim:
        raise ValueError(
            f"prototypes are {prototypes.shape[1]}-d, the backbone's embedding {model.embed_dim}-d"
        )
    model.head.prototypes.copy_(prototypes)
    return model.eval()


FAMILY = register_family(
    Family(
        "prototype",
        ("prototype_classifier",),
        "prototype_classifier",
        "backbone",
        "few-shot class prototypes on any clip model's embedding (sedkit enroll); the backbone's length "
        "policy",
        test_kwargs={"backbone": {"model_name": DEFAULT_BACKBONE, "model_kwargs": {"clip_seconds": 1.0}}},
    )
)
