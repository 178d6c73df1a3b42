"""Model registry in the timm style.

A model family registers factory functions ``fn(num_classes=..., **kwargs) -> nn.Module`` with
:func:`register_model`; :func:`create_model` builds one by name and records on it
``model.sed_config = {"name": name, "kwargs": {...}}``: everything needed to rebuild the same
architecture (then load a ``state_dict``), JSON-serialisable, ``num_classes`` included.

``create_model(name, pretrained=source)`` builds from a foreign or sed source through the importer of
the size's family (:mod:`sed.models.family`: each family's model file declares its sizes, importer and
public weights); ``pretrained=True`` takes the first declared weights that build that size.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from sed.models.base import DescribedModel
from sed.models.family import default_weights, families, family_of_model, importer_of

__all__ = ["create_model", "is_model", "list_models", "model_entry", "register_model"]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    factory: Callable[..., nn.Module]


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(fn: Callable[..., nn.Module] | None = None, *, name: str | None = None):
    """Register a factory under its function name (or ``name``); usable bare (``@register_model``)."""

    def deco(f: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or f.__name__
        if key in _REGISTRY and _REGISTRY[key].factory is not f:
            raise ValueError(f"model {key!r} is already registered")
        _REGISTRY[key] = ModelEntry(key, f)
        return f

    return deco(fn) if fn is not None else deco


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted registered names, optionally filtered by a shell-style ``pattern`` (``"ast_*"``)."""
    names = sorted(_REGISTRY)
    return [n for n in names if fnmatch.fnmatchcase(n, pattern)] if pattern else names


def is_model(name: str) -> bool:
    return name in _REGISTRY


def model_entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return _REGISTRY[name]


def _rebuild_kwargs(model: nn.Module, num_classes: int | None, kwargs: dict) -> dict:
    """All kwargs that rebuild ``model``: the model's own (``sed_kwargs()``) when it has them."""
    if isinstance(model, DescribedModel):
        out = dict(model.sed_kwargs())
    else:
        out = dict(kwargs)
        n = num_classes if num_classes is not None else getattr(model, "num_classes", None)
        if n is not None:
            out["num_classes"] = int(n)
    try:
        json.dumps(out)
    except TypeError as err:
        raise TypeError(
            f"model kwargs must be JSON-serialisable to be saved in a checkpoint: {err}"
        ) from None
    return out


def create_model(name: str, num_classes: int | None = None, pretrained=None, **kwargs) -> nn.Module:
    """Build the registered model ``name``.

    ``num_classes=None`` keeps the factory's default (or, with ``pretrained``, the source's head).
    ``pretrained`` is a source the family's importer reads (a file, a directory, a hub id, a short
    name, an in-memory state dict) or ``True`` for the size's default weights.
    """
    entry = model_entry(name)
    if pretrained is True:
        weights = default_weights(name)
        if weights is None:
            raise ValueError(f"model {name!r} has no default pretrained weights; pass a source")
        pretrained = weights.name
    if pretrained is None or pretrained is False:
        ckw = dict(kwargs)
        if num_classes is not None:
            ckw["num_classes"] = num_classes
        model = entry.factory(**ckw)
    else:
        fam = family_of_model(name)
        importer = importer_of(fam) if fam else None
        if importer is None:
            takes = ", ".join(f.name for f in families() if f.importer)
            raise ValueError(
                f"model {name!r} does not support pretrained weights (the families that do: {takes})"
            )
        model = importer.build(pretrained, num_classes=num_classes, factory=entry.factory, **kwargs)
    model.sed_config = {"name": name, "kwargs": _rebuild_kwargs(model, num_classes, kwargs)}
    return model
