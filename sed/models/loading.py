"""Any source -> a model and its description: sed checkpoints, and foreign formats through their importers.

A sed checkpoint (``.pt``, ``.safetensors``, a Lightning ``.ckpt`` written by sed training) is
read by :mod:`sed.checkpoint` and rebuilt through the registry; anything else (an original AST
``.pth``, a Hugging Face AST directory or hub id, a short name such as ``ast-audioset-0.4593``)
goes to the importers in :mod:`sed.models.pretrained`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sed.checkpoint import describe, read_checkpoint
from sed.errors import CheckpointError
from sed.models.pretrained.ast import build_ast_from_pretrained
from sed.models.registry import create_model, is_model

__all__ = ["build_from_description", "load_model"]


def build_from_description(desc: dict[str, Any], state: dict[str, torch.Tensor], path: str | os.PathLike | None = None) -> nn.Module:
    """The registered model a checkpoint description names, with its weights, labels and score type."""
    missing = [k for k in ("model_name", "model_kwargs") if k not in desc]
    if missing:
        raise CheckpointError(path, f"checkpoint description lacks {', '.join(missing)}")
    if not is_model(desc["model_name"]):
        raise CheckpointError(path, f"unknown model {desc['model_name']!r} (this sed version has no such model)")
    model = create_model(desc["model_name"], **desc["model_kwargs"])
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            path, f"weights do not fit {desc['model_name']}: missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}"
        )
    if desc.get("labels"):
        model.labels = list(desc["labels"])
    if "multi_label" in desc:
        model.multi_label = bool(desc["multi_label"])
    return model.eval()


def load_model(source: str | os.PathLike, **overrides: Any) -> tuple[nn.Module, dict[str, Any]]:
    """Load a model and its description from a sed checkpoint (``.pt``, ``.safetensors``, a
    Lightning ``.ckpt`` written by sed training), or import a foreign one: an original AST
    ``.pth``, a Hugging Face AST directory or hub id, or a short name such as
    ``ast-audioset-0.4593``. ``overrides`` (e.g. ``num_classes``, ``input_tdim``) apply to
    foreign imports only."""
    p = Path(source)
    if p.is_file():
        desc, state = read_checkpoint(p)
        if desc is not None:
            model = build_from_description(desc, state, p)
            return model, desc
    model = build_ast_from_pretrained(str(source), **overrides)
    return model.eval(), describe(model, source=str(source))
