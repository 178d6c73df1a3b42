"""Any source -> a model and its description: sed checkpoints, and foreign formats through their importers.

A sed checkpoint (``.pt``, ``.safetensors``, a Lightning ``.ckpt`` written by sed training) is
read by :mod:`sed.checkpoint` and rebuilt through the registry; anything else (an original AST
``.pth``, a Hugging Face AST directory or hub id, a short name such as ``ast-audioset-0.4593``)
goes to the importers in :mod:`sed.models.pretrained`.

A verb opens its checkpoint with ``load_model(source, kind=...)``: a model of another kind (a SELD
model given to ``classify``, a clip classifier given to ``seld-infer``) is one CheckpointError naming
what the checkpoint is and the verb that takes it (:data:`KINDS`), before any audio is read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sed.checkpoint import check_description, describe
from sed.errors import CheckpointError, short
from sed.models.base import is_clip_model, is_seld_model
from sed.models.budget import check_weights, checked_build
from sed.models.pretrained.build import import_pretrained
from sed.models.pretrained.sources import resolve
from sed.models.registry import create_model, is_model

__all__ = ["KINDS", "build_from_description", "check_kind", "load_model", "model_kind"]

#: the kinds of model a verb opens: what one is called, and the verbs that take it
KINDS = {
    "clip": ("a clip classifier", "sedkit classify, embed, ensemble-eval, stream, enroll or export take it"),
    "seld": ("a SELD model", "sedkit seld-infer takes it"),
    "other": ("neither a clip classifier nor a SELD model", "no sedkit command takes it"),
}


def model_kind(model: nn.Module) -> str:
    """``"seld"`` for a SELD model (:func:`~sed.models.base.is_seld_model`), ``"clip"`` for a clip classifier
    (:func:`~sed.models.base.is_clip_model`), else ``"other"``."""
    return "seld" if is_seld_model(model) else "clip" if is_clip_model(model) else "other"


def check_kind(model: nn.Module, kind: str, path: str | os.PathLike | None = None) -> None:
    """A :class:`CheckpointError` naming what ``model`` is and the verbs that take it, unless it is a
    ``kind``."""
    if kind not in ("clip", "seld"):
        raise ValueError(f"kind must be 'clip' or 'seld', got {kind!r}")
    found = model_kind(model)
    if found != kind:
        name = getattr(model, "sed_config", {}).get("name") or type(model).__name__
        raise CheckpointError(
            path, f"{KINDS[found][0]} ({name}); {KINDS[found][1]}, this command takes {KINDS[kind][0]}"
        )


def build_from_description(
    desc: dict[str, Any], state: dict[str, torch.Tensor], path: str | os.PathLike | None = None
) -> nn.Module:
    """The registered model a checkpoint description names, with its weights, labels and score type.
    Whatever the description and weights hold, the result is a model that fits them or a
    :class:`CheckpointError` naming ``path`` (absurd sizes are refused before they are allocated)."""
    desc = check_description(desc, path)
    name, kwargs = desc["model_name"], desc["model_kwargs"]
    if not is_model(name):
        raise CheckpointError(path, f"unknown model {short(name)} (this sed version has no such model)")
    if "pretrained" in kwargs:  # it would read another file, or download one
        raise CheckpointError(path, "model_kwargs may not name pretrained weights")
    with checked_build(path, name, state):
        model = create_model(name, **kwargs)
        if desc.get("labels"):
            model.labels = list(desc["labels"])
    check_weights(model, state, path)
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            path,
            f"weights do not fit {name}: missing {result.missing_keys[:5]}, unexpected "
            f"{short(result.unexpected_keys[:5])}",
        )
    audio = {k: getattr(model, k, None) for k in ("sample_rate", "clip_samples")}
    for key, value in audio.items():
        if value is not None and desc.get(key) not in (None, value):
            raise CheckpointError(path, f"{key} {desc[key]} contradicts its {name} model's {value}")
    hop = model.frame_hop if getattr(model, "frame_pooling", None) is not None else None
    if desc.get("frame_hop") is not None and (hop is None or abs(desc["frame_hop"] - hop) > 1e-9):
        raise CheckpointError(
            path, f"frame_hop {desc['frame_hop']} s contradicts its {name} model's ({hop or 'no frames'})"
        )
    check_description(
        {**desc, **{k: v for k, v in audio.items() if v is not None}}, path
    )  # the model's are sane
    if "multi_label" in desc:
        model.multi_label = bool(desc["multi_label"])
    return model.eval()


def load_model(
    source: str | os.PathLike, kind: str | None = None, **overrides: Any
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a model and its description from a sed checkpoint (``.pt``, ``.safetensors``, a
    Lightning ``.ckpt`` written by sed training), or import a foreign one through the importer of
    its family (:mod:`sed.models.pretrained.sources`): an original AST ``.pth``, a Hugging Face AST
    directory or hub id, a BEATs/CED/EfficientAT release file, or a short name such as
    ``ast-audioset-0.4593``. ``overrides`` (e.g. ``num_classes``, ``input_tdim``) apply to
    foreign imports only. ``kind`` (``"clip"`` or ``"seld"``, :data:`KINDS`): the kind of model the
    caller takes; another is a one-line CheckpointError (:func:`check_kind`)."""
    contents = resolve(
        source
    )  # read once: a sed checkpoint is rebuilt, anything else goes to its family's importer
    if contents.sed is not None:
        model, desc = build_from_description(contents.sed, contents.state, Path(source)), contents.sed
    else:
        model = import_pretrained(contents, **overrides).eval()
        desc = check_description(describe(model, source=str(source)), source)
    if kind is not None:
        check_kind(model, kind, source)
    return model, desc
